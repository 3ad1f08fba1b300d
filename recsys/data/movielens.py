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
"""

from __future__ import annotations

import importlib.util
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.canonical import build_dataset
from recsys.data.schema import DataError, Dataset
from recsys.data.sources import RawSource, fetch_archive, open_source, read_delimited

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
# "Title (1995)", optionally followed by GroupLens' "(V)" marker for direct-to-video releases.
_TITLE_YEAR = re.compile(r"^(.*?)\s*\((\d{4})\)(?:\s*\(V\))?\s*$")
_NO_GENRE = {"unknown", "(no genres listed)", ""}


def split_title(title: str) -> tuple[str, int]:
    """"Toy Story (1995)" -> ("Toy Story", 1995); "X (1995) (V)" -> ("X", 1995); no year -> (title, -1)."""
    m = _TITLE_YEAR.match(title)
    if m:
        return m.group(1), int(m.group(2))
    return title.strip(), -1


def _genres(names) -> list[str]:
    """Drop "no genre" markers; keep the file's order."""
    return [g for g in names if g not in _NO_GENRE]


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


def _ml100k_grouplens(src: RawSource):
    inter = read_delimited(src.read_bytes("u.data"), src.label("u.data"), "\t", ["user_id", "item_id", "rating", "timestamp"],
                           numeric={"rating": float, "timestamp": int})
    names = ["item_id", "raw_title", "release", "video_release", "url", *ML100K_GENRES]
    raw = read_delimited(src.read_bytes("u.item"), src.label("u.item"), "|", names, numeric={g: int for g in ML100K_GENRES})
    flags = raw[list(ML100K_GENRES)].to_numpy()
    titles, years = [], []
    for t, rel in zip(raw["raw_title"], raw["release"]):
        title, year = split_title(t)
        if year < 0 and re.search(r"\d{4}$", rel):  # fall back to the release date "01-Jan-1995"
            year = int(rel[-4:])
        titles.append(title)
        years.append(year)
    items = pd.DataFrame({
        "item_id": raw["item_id"], "title": titles, "year": years,
        "categories": [_genres([g for g, f in zip(ML100K_GENRES, row) if f]) for row in flags],
    })
    users = read_delimited(src.read_bytes("u.user"), src.label("u.user"), "|", ["user_id", "age", "gender", "occupation", "zip"],
                           numeric={"age": int})
    return inter, items, users


def _atomic(src: RawSource, name: str, expected: list[str], numeric: dict) -> pd.DataFrame:
    """Read a RecBole atomic file, checking its typed header (``user_id:token`` ...)."""
    data = src.read_bytes(name)
    header = data.split(b"\n", 1)[0].decode("utf-8").rstrip("\r").split("\t")
    cols = [h.split(":")[0] for h in header]
    if cols[: len(expected)] != expected:
        raise DataError(f"{src.label(name)}:1: header columns {cols}, expected {expected}")
    df = read_delimited(data, src.label(name), "\t", cols, numeric=numeric, skip_header=1, encoding="utf-8")
    return df[expected]


def _ml100k_recbole(src: RawSource):
    inter = _atomic(src, "ml-100k.inter", ["user_id", "item_id", "rating", "timestamp"], {"rating": float, "timestamp": float})
    raw = _atomic(src, "ml-100k.item", ["item_id", "movie_title", "release_year", "class"], {})
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
        "item_id": raw["item_id"], "title": titles, "year": years,
        # token_seq of genre names separated by spaces (no genre name contains a space).
        "categories": [_genres(sorted(c.split(), key=ML100K_GENRES.index)) for c in raw["class"]],
    })
    users = _atomic(src, "ml-100k.user", ["user_id", "age", "gender", "occupation", "zip_code"], {"age": int})
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
                           numeric={"rating": float, "timestamp": int})
    raw = read_delimited(src.read_bytes("movies.dat"), src.label("movies.dat"), "::", ["item_id", "raw_title", "genres"])
    users = read_delimited(src.read_bytes("users.dat"), src.label("users.dat"), "::", ["user_id", "gender", "age", "occupation", "zip"],
                           numeric={"age": int, "occupation": int})
    bad = ~users["occupation"].between(0, len(ML1M_OCCUPATIONS) - 1)
    if bad.any():
        raise DataError(f"{src.label('users.dat')}:{int(np.argmax(bad.to_numpy())) + 1}: occupation code outside 0..20")
    users["occupation"] = [ML1M_OCCUPATIONS[c] for c in users["occupation"]]
    return build_dataset(_interactions(inter), _movies(raw), users, name="ml1m", source=f"grouplens:{src.path}")


def _movies(raw: pd.DataFrame) -> pd.DataFrame:
    split = [split_title(t) for t in raw["raw_title"]]
    return pd.DataFrame({
        "item_id": raw["item_id"].astype(str), "title": [s[0] for s in split], "year": [s[1] for s in split],
        "categories": [_genres(g.split("|")) for g in raw["genres"]],
    })


def read_ml20m(path: str | Path | None = None, cache_dir: str | Path = "data/raw") -> Dataset:
    """MovieLens-20M (138,493 users, 26,744 rated movies, 20,000,263 ratings; no demographics)."""
    src = _archive("ml-20m", path, cache_dir)
    inter = read_delimited(src.read_bytes("ratings.csv"), src.label("ratings.csv"), ",", ["user_id", "item_id", "rating", "timestamp"],
                           numeric={"rating": float, "timestamp": int}, skip_header=1, encoding="utf-8")
    # movies.csv quotes titles that contain commas, so it needs a quoting-aware parser.
    label = src.label("movies.csv")
    try:
        raw = pd.read_csv(io.BytesIO(src.read_bytes("movies.csv")), dtype=str, keep_default_na=False)
    except pd.errors.ParserError as e:
        raise DataError(f"{label}: {e}") from e
    if list(raw.columns) != ["movieId", "title", "genres"]:
        raise DataError(f"{label}:1: header {list(raw.columns)}, expected ['movieId', 'title', 'genres']")
    raw = raw.rename(columns={"movieId": "item_id", "title": "raw_title"})
    users = pd.DataFrame({"user_id": inter["user_id"].unique()})
    return build_dataset(_interactions(inter), _movies(raw), users, name="ml20m", source=f"grouplens:{src.path}")
