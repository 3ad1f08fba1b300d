"""MovieLens readers (GroupLens, https://grouplens.org/datasets/movielens/).

Each reader returns the canonical ``Dataset`` (``recsys.data.canonical``):

- ``read_ml100k``: MovieLens-100K from the GroupLens layout (``u.data`` TSV
  ``user item rating ts``; ``u.item`` pipe-separated latin-1 with release date
  and 19 genre flags; ``u.user`` pipe ``age gender occupation zip``) in a
  directory or zip, or offline from RecBole's atomic files
  (``ml-100k.inter/.item/.user``, tab-separated, typed headers such as
  ``user_id:token``) shipped in the ``recbole`` wheel. Both give identical tables.
- ``read_ml1m``: ``ratings.dat``/``movies.dat``/``users.dat`` (``::``-separated).
- ``read_ml20m``: ``ratings.csv``/``movies.csv`` (no user file: demographics unknown).

ML-1M/20M archives are downloaded with an md5 check when absent, or read from
``path``. The GroupLens licence forbids redistribution: data never goes in git.

Canonical titles drop the trailing ``" (year)"`` (the year is its own column);
the genre "unknown" is dropped (it means "no genre").

Every field is checked (``recsys.data.delimited``): ids are ASCII digits and unique
in the item and user files; ratings are finite and on the dataset's scale (1..5
whole stars for 100K/1M, 0.5..5 half stars for 20M); timestamps are integers in
(0, ``MAX_TIMESTAMP``]; ages, genders, genre flags and occupation codes take their
documented values; years are -1 (unknown) or in ``YEAR_RANGE``. Any violation is a
``DataError`` naming the file and line.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.canonical import build_dataset
from recsys.data.delimited import Column, line_number, read_delimited
from recsys.data.schema import MAX_TIMESTAMP, DataError, Dataset
from recsys.data.sources import RawSource, fetch_archive, open_source

BASE_URL = "https://files.grouplens.org/datasets/movielens"
# md5 values published by GroupLens beside each archive (<name>.zip.md5).
ARCHIVES = {
    "ml-100k": "0e33842e24a9c977be4e0107933c0723",
    "ml-1m": "c4d9eecfca2ab87c1945afe126590906",
    "ml-20m": "cd245b17a1ae2cc31bb14903e1204af3",
}
# The 19 genre flags of u.item, in file order (from u.genre).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
# users.dat occupation codes of MovieLens-1M (README).
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer", "programmer",
    "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
    "unemployed", "writer",
)
# users.dat age group codes of MovieLens-1M (README): under 18, 18-24, ..., 56+.
ML1M_AGES = (1, 18, 25, 35, 45, 50, 56)
_NO_GENRE = {"unknown", "(no genres listed)", ""}
# Plausible release years (cinema starts in the 1880s); -1 means unknown.
YEAR_RANGE = (1870, 2100)

# Field checks shared by the readers (see recsys.data.delimited.Column).
_ID = Column(pattern=r"[0-9]{1,18}")
_UNIQUE_ID = Column(pattern=r"[0-9]{1,18}", unique=True)
_STARS = Column("float", 1, 5, step=1)  # ML-100K / ML-1M: whole stars
_HALF_STARS = Column("float", 0.5, 5, step=0.5)  # ML-20M: half stars
_TIMESTAMP = Column("int", 1, MAX_TIMESTAMP)
_TEXT = Column(pattern=r".*\S.*")  # non-blank
_GENDER = Column(choices=("M", "F"))
_AGE = Column("int", 1, 120)
_RATINGS = {"user_id": _ID, "item_id": _ID, "rating": _STARS, "timestamp": _TIMESTAMP}


def split_title(title: str) -> tuple[str, int]:
    """"Toy Story (1995)" -> ("Toy Story", 1995); "X (1995) (V)" -> ("X", 1995); no year -> (title, -1).

    The year is four ASCII digits in parentheses at the end, optionally followed by GroupLens'
    "(V)" marker for direct-to-video releases. Suffix checks, not a regex: a lazy ``(.*?)\\s*``
    pattern is quadratic in a run of spaces, and ``\\d`` would accept non-ASCII digits.
    """
    head = title.rstrip()
    if head.endswith("(V)"):
        head = head[:-3].rstrip()
    year = head[-5:-1]
    if len(head) >= 6 and head[-6] == "(" and head[-1] == ")" and year.isascii() and year.isdigit():
        return head[:-6].rstrip(), int(year)
    return title.strip(), -1


def _genres(names) -> list[str]:
    """Drop "no genre" markers; keep the file's order."""
    return [g for g in names if g not in _NO_GENRE]


def _checked_years(years: list[int], data: bytes, label: str, skip_header: int = 0) -> list[int]:
    """``years`` unchanged if each is -1 or in ``YEAR_RANGE``; else ``DataError`` at the item's line."""
    y = np.asarray(years, dtype=np.int64)
    bad = (y != -1) & ((y < YEAR_RANGE[0]) | (y > YEAR_RANGE[1]))
    if bad.any():
        r = int(np.argmax(bad))
        raise DataError(f"{label}:{line_number(data, r, skip_header)}: year {y[r]} outside {list(YEAR_RANGE)} (-1: unknown)")
    return years


def recbole_ml100k_dir() -> Path:
    """The ML-100K atomic files shipped in the ``recbole`` wheel (found via ``find_spec``)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.origin:
        raise DataError("recbole is not installed: `pip install --no-deps recbole==1.2.1`, or pass path=<ml-100k dir or zip>")
    d = Path(spec.origin).parent / "dataset_example" / "ml-100k"
    if not (d / "ml-100k.inter").exists():
        raise DataError(f"{d}: recbole's ml-100k example files are missing")
    return d


# --------------------------------------------------------------------------- ML-100K

_U_ITEM = {"item_id": _UNIQUE_ID, "raw_title": _TEXT, "release": Column(pattern=r"(?:[0-9]{2}-[A-Za-z]{3}-[0-9]{4})?"),
           **{g: Column("int", choices=(0, 1)) for g in ML100K_GENRES}}
_USERS_100K = {"user_id": _UNIQUE_ID, "age": _AGE, "gender": _GENDER, "occupation": _TEXT}
# RecBole's class field: known genre names separated by single spaces (none contains a space).
_GENRE_SEQ = "(?:{g})(?: (?:{g}))*".format(g="|".join(re.escape(g) for g in ML100K_GENRES))


def _ml100k_grouplens(src: RawSource):
    inter = read_delimited(src.read_bytes("u.data"), src.label("u.data"), "\t", ["user_id", "item_id", "rating", "timestamp"],
                           _RATINGS)
    names = ["item_id", "raw_title", "release", "video_release", "url", *ML100K_GENRES]
    data = src.read_bytes("u.item")  # latin-1, like every GroupLens ML-100K file
    raw = read_delimited(data, src.label("u.item"), "|", names, _U_ITEM)
    flags = raw[list(ML100K_GENRES)].to_numpy()
    titles, years = [], []
    for t, rel in zip(raw["raw_title"], raw["release"]):
        title, year = split_title(t)
        if year < 0 and rel:  # fall back to the release date "01-Jan-1995" (format checked above)
            year = int(rel[-4:])
        titles.append(title)
        years.append(year)
    items = pd.DataFrame({
        "item_id": raw["item_id"], "title": titles, "year": _checked_years(years, data, src.label("u.item")),
        "categories": [_genres([g for g, f in zip(ML100K_GENRES, row) if f]) for row in flags],
    })
    users = read_delimited(src.read_bytes("u.user"), src.label("u.user"), "|", ["user_id", "age", "gender", "occupation", "zip"],
                           _USERS_100K)
    return inter, items, users


def _atomic(src: RawSource, name: str, expected: list[str], columns: dict) -> tuple[pd.DataFrame, bytes]:
    """Read a RecBole atomic file, checking its typed header (``user_id:token`` ...); -> (table, bytes)."""
    data = src.read_bytes(name)
    try:
        header = data.split(b"\n", 1)[0].decode("utf-8").rstrip("\r").split("\t")
    except UnicodeDecodeError as e:
        raise DataError(f"{src.label(name)}:1: header is not valid utf-8 ({e.reason})") from None
    cols = [h.split(":")[0] for h in header]
    if cols[: len(expected)] != expected:
        raise DataError(f"{src.label(name)}:1: header columns {cols}, expected {expected}")
    df = read_delimited(data, src.label(name), "\t", cols, columns, skip_header=1, encoding="utf-8")
    return df[expected], data


def _ml100k_recbole(src: RawSource):
    inter, _ = _atomic(src, "ml-100k.inter", ["user_id", "item_id", "rating", "timestamp"], _RATINGS)
    item_cols = {"item_id": _UNIQUE_ID, "movie_title": _TEXT, "release_year": Column(pattern=r"[0-9]{4}|-1|V|unkonwn"),
                 "class": Column(pattern=f"(?:{_GENRE_SEQ})?")}
    raw, data = _atomic(src, "ml-100k.item", ["item_id", "movie_title", "release_year", "class"], item_cols)
    titles, years = [], []
    for title, year in zip(raw["movie_title"], raw["release_year"]):
        if title == "unkonwn":  # RecBole's spelling of GroupLens' item 267 "unknown" (no year)
            title, year = "unknown", "-1"
        if not year.isdigit() and year != "-1":
            # RecBole parsed GroupLens' "X (1995) (V)" as title "X (1995)", year "V": recover the year.
            title, year = split_title(title)
        titles.append(title)
        years.append(int(year))
    items = pd.DataFrame({
        "item_id": raw["item_id"], "title": titles, "year": _checked_years(years, data, src.label("ml-100k.item"), 1),
        # token_seq of genre names separated by spaces (no genre name contains a space).
        "categories": [_genres(sorted(c.split(), key=ML100K_GENRES.index)) for c in raw["class"]],
    })
    users, _ = _atomic(src, "ml-100k.user", ["user_id", "age", "gender", "occupation", "zip_code"],
                       {**_USERS_100K, "zip_code": Column()})
    return inter, items, users.rename(columns={"zip_code": "zip"})


def read_ml100k(path: str | Path | None = None, download: bool = False, cache_dir: str | Path = "data/raw") -> Dataset:
    """MovieLens-100K as a canonical ``Dataset``.

    ``path``: a directory or zip in GroupLens layout (``u.data``...) or RecBole
    layout (``ml-100k.inter``...). Without ``path``: the official archive in
    ``cache_dir`` (downloaded first) if ``download``, else RecBole's offline copy.
    """
    if path is None:
        path = fetch_archive(f"{BASE_URL}/ml-100k.zip", ARCHIVES["ml-100k"], Path(cache_dir) / "ml-100k.zip") if download else recbole_ml100k_dir()
    src = open_source(path)
    if src.has("u.data"):
        inter, items, users, layout = *_ml100k_grouplens(src), "grouplens"
    elif src.has("ml-100k.inter"):
        inter, items, users, layout = *_ml100k_recbole(src), "recbole"
    else:
        raise DataError(f"{src.path}: neither u.data (GroupLens layout) nor ml-100k.inter (RecBole layout) found")
    return build_dataset(_interactions(inter), items, users, name="ml100k", source=f"{layout}:{src.path}")


def _interactions(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": df["user_id"].astype(str), "item_id": df["item_id"].astype(str),
        "timestamp": df["timestamp"].astype(np.int64), "value": df["rating"].astype(np.float32),
    })


# --------------------------------------------------------------------------- ML-1M / ML-20M

_MOVIES = {"item_id": _UNIQUE_ID, "raw_title": _TEXT, "genres": Column()}


def _archive(name: str, path, cache_dir) -> RawSource:
    if path is None:
        path = fetch_archive(f"{BASE_URL}/{name}.zip", ARCHIVES[name], Path(cache_dir) / f"{name}.zip")
    return open_source(path)


def read_ml1m(path: str | Path | None = None, cache_dir: str | Path = "data/raw") -> Dataset:
    """MovieLens-1M (6,040 users, 3,706 rated movies, 1,000,209 ratings).

    ``users.dat`` stores an age *group* code (1, 18, 25, ...), kept as ``age``: the
    canonical age buckets use the same edges, so the bucket is exact.
    """
    src = _archive("ml-1m", path, cache_dir)
    inter = read_delimited(src.read_bytes("ratings.dat"), src.label("ratings.dat"), "::", ["user_id", "item_id", "rating", "timestamp"],
                           _RATINGS)
    data = src.read_bytes("movies.dat")
    raw = read_delimited(data, src.label("movies.dat"), "::", ["item_id", "raw_title", "genres"], _MOVIES)
    users = read_delimited(src.read_bytes("users.dat"), src.label("users.dat"), "::", ["user_id", "gender", "age", "occupation", "zip"],
                           {"user_id": _UNIQUE_ID, "gender": _GENDER, "age": Column("int", choices=ML1M_AGES),
                            "occupation": Column("int", 0, len(ML1M_OCCUPATIONS) - 1)})
    users["occupation"] = [ML1M_OCCUPATIONS[c] for c in users["occupation"]]
    return build_dataset(_interactions(inter), _movies(raw, data, src.label("movies.dat")), users, name="ml1m", source=f"grouplens:{src.path}")


def _movies(raw: pd.DataFrame, data: bytes, label: str, skip_header: int = 0) -> pd.DataFrame:
    split = [split_title(t) for t in raw["raw_title"]]
    return pd.DataFrame({
        "item_id": raw["item_id"].astype(str), "title": [s[0] for s in split],
        "year": _checked_years([s[1] for s in split], data, label, skip_header),
        "categories": [_genres(g.split("|")) for g in raw["genres"]],
    })


def read_ml20m(path: str | Path | None = None, cache_dir: str | Path = "data/raw") -> Dataset:
    """MovieLens-20M (138,493 users, 26,744 rated movies, 20,000,263 ratings; no demographics)."""
    src = _archive("ml-20m", path, cache_dir)
    inter = read_delimited(src.read_bytes("ratings.csv"), src.label("ratings.csv"), ",", ["user_id", "item_id", "rating", "timestamp"],
                           {**_RATINGS, "rating": _HALF_STARS}, header=["userId", "movieId", "rating", "timestamp"], encoding="utf-8")
    # movies.csv quotes titles that contain commas.
    data = src.read_bytes("movies.csv")
    raw = read_delimited(data, src.label("movies.csv"), ",", ["item_id", "raw_title", "genres"], _MOVIES,
                         header=["movieId", "title", "genres"], encoding="utf-8", quoting=True)
    users = pd.DataFrame({"user_id": inter["user_id"].unique()})
    return build_dataset(_interactions(inter), _movies(raw, data, src.label("movies.csv"), 1), users, name="ml20m", source=f"grouplens:{src.path}")
