"""MovieLens readers: both ML-100K layouts agree; ML-1M/20M formats; malformed input."""

from __future__ import annotations

import re
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.data.movielens import ML100K_GENRES, read_ml100k, read_ml1m, read_ml20m, recbole_ml100k_dir, split_title
from recsys.data.schema import DataError


def _write_grouplens_from_recbole(dest: Path) -> Path:
    """Rebuild the GroupLens files (u.data, u.item, u.user) from RecBole's atomic rows."""
    src = recbole_ml100k_dir()
    dest.mkdir(parents=True, exist_ok=True)
    inter = (src / "ml-100k.inter").read_text().splitlines()[1:]
    (dest / "u.data").write_text("".join(
        "\t".join([u, i, str(int(float(r))), str(int(float(t)))]) + "\n" for u, i, r, t in (l.split("\t") for l in inter)))
    lines = []
    for row in (src / "ml-100k.item").read_text().splitlines()[1:]:
        iid, title, year, genres = row.split("\t")
        flags = ["1" if g in genres.split() else "0" for g in ML100K_GENRES]
        if title == "unkonwn":  # GroupLens: title "unknown", empty release date
            head, date = "unknown", ""
        else:  # RecBole's year "V" stands for GroupLens' "(V)" marker after "Title (1995)"
            head, date = f"{title} ({year})", f"01-Jan-{year if year.isdigit() else split_title(title)[1]}"
        lines.append("|".join([iid, head, date, "", "http://us.imdb.com/", *flags]))
    (dest / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    users = (src / "ml-100k.user").read_text().splitlines()[1:]
    (dest / "u.user").write_text("".join("|".join(l.split("\t")) + "\n" for l in users))
    return dest


@pytest.fixture(scope="module")
def grouplens_dir(tmp_path_factory):
    return _write_grouplens_from_recbole(tmp_path_factory.mktemp("gl") / "ml-100k")


def _assert_same(a, b):
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    pd.testing.assert_frame_equal(a.users, b.users)
    pd.testing.assert_frame_equal(a.items.drop(columns="categories"), b.items.drop(columns="categories"))
    assert a.items["categories"].tolist() == b.items["categories"].tolist()
    assert a.meta.vocabularies == b.meta.vocabularies


def test_recbole_and_grouplens_layouts_are_identical(grouplens_dir, tmp_path):
    rb = read_ml100k()
    gl = read_ml100k(grouplens_dir)
    assert rb.meta.source.startswith("recbole:") and gl.meta.source.startswith("grouplens:")
    _assert_same(rb, gl)
    # ... and from a zip archive with the official ml-100k/ prefix.
    zpath = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in grouplens_dir.iterdir():
            zf.write(f, f"ml-100k/{f.name}")
    _assert_same(rb, read_ml100k(zpath))


def test_ml100k_canonical_content():
    ds = read_ml100k()
    m = ds.meta
    assert (m.n_users, m.n_items, m.n_interactions) == (943, 1682, 100_000)
    toy = ds.items.iloc[0]
    assert (toy.item_id, toy.title, toy.year) == ("1", "Toy Story", 1995)
    assert toy.categories == ["Animation", "Children's", "Comedy"]
    assert toy.text == "Toy Story (1995). Genres: Animation, Children's, Comedy."
    assert toy.age_rating == 0 and toy.available
    unknown = ds.items[ds.items.item_id == "267"].iloc[0]  # RecBole's "unkonwn" row
    assert (unknown.title, unknown.year, unknown.categories, unknown.year_bucket) == ("unknown", -1, [], "unknown")
    horror = ds.items[ds.items.categories.map(lambda c: "Horror" in c)]
    assert (horror.age_rating == 18).all()
    u1 = ds.users.iloc[0]
    assert (u1.user_id, u1.age, u1.gender, u1.occupation, u1.zip, u1.age_bucket) == ("1", 24, "M", "technician", "85711", "18-24")
    assert m.vocabularies["age_bucket"][0] == "<18" and "unknown" not in m.vocabularies["categories"]
    assert len(m.vocabularies["categories"]) == 18 and m.vocabularies["year_bucket"][-1] == "unknown"
    assert sorted(ds.interactions.value.unique().tolist()) == [1, 2, 3, 4, 5]


def test_split_title():
    assert split_title("Toy Story (1995)") == ("Toy Story", 1995)
    assert split_title("City of Lost Children, The (Cité des enfants perdus, La) (1995) ") == (
        "City of Lost Children, The (Cité des enfants perdus, La)", 1995)
    assert split_title("Land Before Time III: The Time of the Great Giving (1995) (V)") == (
        "Land Before Time III: The Time of the Great Giving", 1995)
    assert split_title("unknown") == ("unknown", -1)
    assert split_title("Toy Story (\u0661\u0669\u0669\u0665)") == ("Toy Story (١٩٩٥)", -1)  # Arabic-Indic digits: no year
    t0 = time.perf_counter()
    assert split_title(" " * 200_000 + "x") == ("x", -1)  # the old lazy regex took minutes on this
    assert time.perf_counter() - t0 < 0.5


def test_malformed_u_data_row_names_file_and_line(grouplens_dir, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in grouplens_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    lines = (bad / "u.data").read_text().splitlines()
    lines[4] = "196\t242\tthree\t881250949"
    (bad / "u.data").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"u\.data:5: column 'rating' has invalid value 'three'"):
        read_ml100k(bad)
    lines[4] = "196\t242\t3"
    (bad / "u.data").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"u\.data:5: expected 4 fields"):
        read_ml100k(bad)


def test_missing_file_and_unknown_layout(grouplens_dir, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("u.data", "u.item"):
        (partial / name).write_bytes((grouplens_dir / name).read_bytes())
    with pytest.raises(DataError, match=r"u\.user: file not found"):
        read_ml100k(partial)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither u.data"):
        read_ml100k(tmp_path / "empty")
    with pytest.raises(DataError, match="not found"):
        read_ml100k(tmp_path / "nowhere")


def test_recbole_header_is_checked(tmp_path):
    src = recbole_ml100k_dir()
    for f in src.glob("ml-100k.*"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    text = (tmp_path / "ml-100k.inter").read_text().replace("rating:float", "score:float", 1)
    (tmp_path / "ml-100k.inter").write_text(text)
    with pytest.raises(DataError, match=r"ml-100k\.inter:1: header columns"):
        read_ml100k(tmp_path)


def _zip(path: Path, files: dict[str, str], encoding="latin-1") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text.encode(encoding))
    return path


ML1M = {
    "ml-1m/ratings.dat": "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n2::3408::1::978299000\n",
    "ml-1m/movies.dat": "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
                        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n3408::Erin Brockovich (2000)::Drama\n",
    "ml-1m/users.dat": "1::F::1::10::48067\n2::M::56::16::70072\n",
}


def test_ml1m_reader(tmp_path):
    ds = read_ml1m(_zip(tmp_path / "ml-1m.zip", ML1M))
    assert (ds.meta.n_users, ds.meta.n_items, ds.meta.n_interactions) == (2, 3, 4)
    assert ds.items.title.tolist() == ["James and the Giant Peach", "One Flew Over the Cuckoo's Nest", "Erin Brockovich"]
    assert ds.items.year.tolist() == [1996, 1975, 2000]
    assert ds.items.categories.iloc[0] == ["Animation", "Children's", "Musical"]
    assert ds.users.occupation.tolist() == ["K-12 student", "self-employed"]
    assert ds.users.age_bucket.tolist() == ["<18", "56+"]  # users.dat age codes 1 and 56
    bad = dict(ML1M, **{"ml-1m/ratings.dat": ML1M["ml-1m/ratings.dat"] + "3::1193\n"})
    with pytest.raises(DataError, match=r"ratings\.dat:5: expected 4 fields"):
        read_ml1m(_zip(tmp_path / "bad.zip", bad))
    orphan = dict(ML1M, **{"ml-1m/ratings.dat": ML1M["ml-1m/ratings.dat"] + "2::9999::4::978299001\n"})
    with pytest.raises(DataError, match=r"orphan\.zip: 1 interactions refer to items missing from the item table, e.g. \['9999'\]"):
        read_ml1m(_zip(tmp_path / "orphan.zip", orphan))


def test_ml20m_reader(tmp_path):
    files = {
        "ml-20m/ratings.csv": "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,3.5,1112484676\n7,2,4.0,1094785740\n",
        "ml-20m/movies.csv": 'movieId,title,genres\n2,Jumanji (1995),Adventure|Children|Fantasy\n'
                             '29,"City of Lost Children, The (Cité des enfants perdus, La) (1995)",(no genres listed)\n',
    }
    ds = read_ml20m(_zip(tmp_path / "ml-20m.zip", files, "utf-8"))
    assert (ds.meta.n_users, ds.meta.n_items) == (2, 2)
    assert ds.items.title.tolist() == ["Jumanji", "City of Lost Children, The (Cité des enfants perdus, La)"]
    assert ds.items.categories.tolist() == [["Adventure", "Children", "Fantasy"], []]
    assert ds.items.age_rating.tolist() == [0, 13]
    assert ds.users.gender.tolist() == ["unknown", "unknown"] and ds.users.age.tolist() == [-1, -1]
    assert np.allclose(ds.interactions.value, [3.5, 3.5, 4.0])


def test_archive_download_checks_md5_and_fails_clearly_offline(tmp_path):
    import hashlib

    from recsys.data.sources import fetch_archive

    archive = _zip(tmp_path / "src.zip", ML1M)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    got = fetch_archive(archive.as_uri(), md5, tmp_path / "cache" / "ml-1m.zip")  # file:// exercises the real download path
    assert got.read_bytes() == archive.read_bytes()
    assert read_ml1m(got).meta.n_interactions == 4
    with pytest.raises(DataError, match="downloaded md5"):
        fetch_archive(archive.as_uri(), "0" * 32, tmp_path / "cache2" / "ml-1m.zip")
    assert not (tmp_path / "cache2" / "ml-1m.zip").exists()
    with pytest.raises(DataError, match=r"place it at .*ml-1m\.zip"):
        fetch_archive("http://127.0.0.1:9/ml-1m.zip", md5, tmp_path / "offline" / "ml-1m.zip", timeout=2)
    (tmp_path / "corrupt.zip").write_bytes(b"not the archive")
    with pytest.raises(DataError, match="does not match the published"):
        fetch_archive(archive.as_uri(), md5, tmp_path / "corrupt.zip")


# --------------------------------------------------------------------------- malformed files: DataError at file:line


def _copy_with(src_dir: Path, dest: Path, name: str, lineno: int, line: bytes | str, encoding="latin-1") -> Path:
    """A copy of ``src_dir`` whose file ``name`` has line ``lineno`` (1-based) replaced by ``line``."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in src_dir.iterdir():
        if f.is_file():
            (dest / f.name).write_bytes(f.read_bytes())
    lines = (dest / name).read_bytes().split(b"\n")
    lines[lineno - 1] = line if isinstance(line, bytes) else line.encode(encoding)
    (dest / name).write_bytes(b"\n".join(lines))
    return dest


@pytest.mark.parametrize("name,lineno,line,error", [
    ("u.data", 5, "196\t242\tinf\t881250949", "column 'rating' has invalid value 'inf'"),
    ("u.data", 5, "196\t242\t-7\t881250949", "column 'rating' has invalid value '-7'"),
    ("u.data", 5, "196\t242\t1e30\t881250949", "column 'rating' has invalid value '1e30'"),
    ("u.data", 5, "196\t242\tnan\t881250949", "column 'rating' has invalid value 'nan'"),
    ("u.data", 5, "196\t242\t3\t9223372036854775808", "column 'timestamp' has invalid value '9223372036854775808'"),
    ("u.data", 5, "196\t242\t3\t-1", "column 'timestamp' has invalid value '-1'"),
    ("u.data", 5, "196\t242\t3\t881250949\t1", "expected 4 fields"),
    ("u.item", 10, "1|Copy of Toy Story (1995)|01-Jan-1995||http://x/|" + "|".join(["0"] * 19),
     "column 'item_id' repeats the value '1' of line 1; ids must be unique"),
    ("u.item", 10, "10|Richard III (1995)|01-Jan-1995||http://x/|" + "|".join(["2"] + ["0"] * 18), "column 'unknown' has invalid value '2'"),
    ("u.item", 10, "10|Richard III (1995)|01-Jan-1995||http://x/|" + "|".join(["0"] * 18), "expected 24 fields"),
    ("u.item", 10, "10|Richard III (0042)|||http://x/|" + "|".join(["0"] * 19), r"year 42 outside \[1870, 2100\]"),
    ("u.item", 10, "10|Richard III (1995)|1995-01-01||http://x/|" + "|".join(["0"] * 19), "column 'release' has invalid value '1995-01-01'"),
    ("u.user", 7, "1|57|M|administrator|91344", "column 'user_id' repeats the value '1' of line 1"),
    ("u.user", 7, "7|-3|M|administrator|91344", "column 'age' has invalid value '-3'"),
    ("u.user", 7, "7|57|X|administrator|91344", "column 'gender' has invalid value 'X'"),
])
def test_grouplens_ml100k_bad_values(grouplens_dir, tmp_path, name, lineno, line, error):
    bad = _copy_with(grouplens_dir, tmp_path / "bad", name, lineno, line)
    with pytest.raises(DataError, match=re.escape(str(bad / name)) + f":{lineno}: {error}"):
        read_ml100k(bad)


def test_grouplens_u_item_is_latin1(grouplens_dir):
    items = read_ml100k(grouplens_dir).items
    assert items.loc[items.item_id == "543", "title"].item() == "Misérables, Les"  # é is one latin-1 byte in u.item
    assert (grouplens_dir / "u.item").read_bytes().count("é".encode("latin-1")) > 0


@pytest.mark.parametrize("name,lineno,line,error", [
    ("ml-100k.inter", 3, "186\t302\t6\t891717742", "column 'rating' has invalid value '6'"),
    ("ml-100k.inter", 3, "186\t302\t3", "expected 4 fields"),
    ("ml-100k.inter", 3, "186\t\u0663\u0660\u0662\t3\t891717742", "column 'item_id' has invalid value '٣٠٢'"),  # Arabic-Indic
    ("ml-100k.inter", 3, "186\t302\t3\t\u0668\u0669\u0661\u0667\u0661\u0667\u0667\u0664\u0662", "column 'timestamp' has invalid value"),
    ("ml-100k.item", 7, b"6\tShanghai Triad \xff\t1995\tDrama", "not valid utf-8 text"),
    ("ml-100k.item", 7, "6\tShanghai Triad\t1995\tDrama Cyberpunk", "column 'class' has invalid value 'Drama Cyberpunk'"),
    ("ml-100k.item", 7, "5\tShanghai Triad\t1995\tDrama", "column 'item_id' repeats the value '5' of line 6"),
    ("ml-100k.item", 7, "6\tShanghai Triad\t95\tDrama", "column 'release_year' has invalid value '95'"),
    ("ml-100k.user", 3, "1\t53\tF\tother\t94043", "column 'user_id' repeats the value '1' of line 2"),
])
def test_recbole_ml100k_bad_values(tmp_path, name, lineno, line, error):
    bad = _copy_with(recbole_ml100k_dir(), tmp_path / "bad", name, lineno, line, encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(str(bad / name)) + f":{lineno}: {error}"):
        read_ml100k(bad)


@pytest.mark.parametrize("name,lineno,line,error", [
    ("ratings.dat", 2, "1::661::0::978302109", "column 'rating' has invalid value '0'"),
    ("ratings.dat", 2, "1::661::3::18446744073709551616", "column 'timestamp' has invalid value"),
    ("movies.dat", 3, "661::Erin Brockovich (2000)::Drama", "column 'item_id' repeats the value '661' of line 1"),
    ("users.dat", 2, "2::M::56::21::70072", "column 'occupation' has invalid value '21'"),
    ("users.dat", 2, "2::M::17::16::70072", "column 'age' has invalid value '17'"),
    ("users.dat", 2, "1::M::56::16::70072", "column 'user_id' repeats the value '1' of line 1"),
])
def test_ml1m_bad_values(tmp_path, name, lineno, line, error):
    files = dict(ML1M)
    key = f"ml-1m/{name}"
    lines = files[key].split("\n")
    lines[lineno - 1] = line
    files[key] = "\n".join(lines)
    path = _zip(tmp_path / "ml-1m.zip", files)
    with pytest.raises(DataError, match=re.escape(f"{path}!{name}:{lineno}: {error}")):
        read_ml1m(path)


ML20M = {
    "ml-20m/ratings.csv": "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,3.5,1112484676\n7,2,4.0,1094785740\n",
    "ml-20m/movies.csv": 'movieId,title,genres\n2,Jumanji (1995),Adventure|Children|Fantasy\n29,"City of Lost Children, The (1995)",Drama\n',
}


@pytest.mark.parametrize("name,lineno,line,error", [
    ("ratings.csv", 3, "1,29,3.25,1112484676", "column 'rating' has invalid value '3.25'"),
    ("ratings.csv", 3, "1,29,0.0,1112484676", "column 'rating' has invalid value '0.0'"),
    ("ratings.csv", 3, "1,29,Infinity,1112484676", "column 'rating' has invalid value 'Infinity'"),
    ("ratings.csv", 1, "user,movie,rating,timestamp", "header ['user', 'movie', 'rating', 'timestamp']"),
    ("movies.csv", 3, "2,Jumanji again (1995),Adventure", "column 'item_id' repeats the value '2' of line 2"),
    ("movies.csv", 3, '29,"City of Lost Children, The (1995)"', "expected 3 fields separated by ',', got 2"),
])
def test_ml20m_bad_values(tmp_path, name, lineno, line, error):
    files = dict(ML20M)
    key = f"ml-20m/{name}"
    lines = files[key].split("\n")
    lines[lineno - 1] = line
    files[key] = "\n".join(lines)
    path = _zip(tmp_path / "ml-20m.zip", files, "utf-8")
    with pytest.raises(DataError, match=re.escape(f"{path}!{name}:{lineno}: {error}")):
        read_ml20m(path)


def test_ml20m_encoding_error_names_the_line(tmp_path):
    path = tmp_path / "ml-20m.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ml-20m/ratings.csv", ML20M["ml-20m/ratings.csv"])
        zf.writestr("ml-20m/movies.csv", ML20M["ml-20m/movies.csv"].encode().replace(b"Jumanji", b"Jum\xe9anji"))  # latin-1 byte
    with pytest.raises(DataError, match=re.escape(f"{path}!movies.csv:2: not valid utf-8 text")):
        read_ml20m(path)
