"""The strict delimited reader on small hand-made files: every malformation is a DataError at file:line."""

from __future__ import annotations

import re
import zipfile

import pytest

from recsys.data.delimited import Column, read_delimited
from recsys.data.schema import MAX_TIMESTAMP, DataError
from recsys.data.sources import open_source

NAMES = ["user_id", "item_id", "rating", "timestamp"]
COLUMNS = {"user_id": Column(pattern="[0-9]+"), "item_id": Column(pattern="[0-9]+"),
           "rating": Column("float", 1, 5, step=1), "timestamp": Column("int", 1, MAX_TIMESTAMP)}
GOOD = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n"


def _read(tmp_path, text: str | bytes, name="ratings.tsv", **kw):
    (tmp_path / name).write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    src = open_source(tmp_path)
    kw.setdefault("encoding", "utf-8")
    return read_delimited(src.read_bytes(name), src.label(name), kw.pop("sep", "\t"), kw.pop("names", NAMES),
                          kw.pop("columns", COLUMNS), **kw)


@pytest.mark.parametrize("line3,error", [
    ("1\t2\tinf\t881250949", "column 'rating' has invalid value 'inf'"),
    ("1\t2\t-7\t881250949", "column 'rating' has invalid value '-7'"),
    ("1\t2\t1e30\t881250949", "column 'rating' has invalid value '1e30'"),
    ("1\t2\tNaN\t881250949", "column 'rating' has invalid value 'NaN'"),
    ("1\t2\t1e400\t881250949", "column 'rating' has invalid value '1e400'"),  # parses to inf
    ("1\t2\t3.5\t881250949", r"column 'rating' has invalid value '3\.5': expected a finite number in \[1, 5\] in steps of 1"),
    ("1\t2\t 3\t881250949", "column 'rating' has invalid value ' 3'"),
    ("1\t2\t3\t9223372036854775808", "column 'timestamp' has invalid value '9223372036854775808'"),  # would wrap to INT64_MIN
    ("1\t2\t3\t0", "column 'timestamp' has invalid value '0'"),
    ("1\t2\t3\t-881250949", "column 'timestamp' has invalid value '-881250949'"),
    ("1\t2\t3\t4102444801", "column 'timestamp' has invalid value '4102444801'"),  # after 2100-01-01
    ("1\t2\t3\t881250949000", "column 'timestamp' has invalid value '881250949000'"),  # milliseconds
    ("1\t2\t3\t881250949.0", "column 'timestamp' has invalid value '881250949.0'"),
    ("1\t2\t3\t1_000", "column 'timestamp' has invalid value '1_000'"),
    ("1\t2\t3\t0x1f", "column 'timestamp' has invalid value '0x1f'"),
    ("1\t2\t3\t\u0661\u0662\u0663", "column 'timestamp' has invalid value '١٢٣'"),  # Arabic-Indic digits
    ("1\t\uff12\t3\t881250949", "column 'item_id' has invalid value '２'"),  # fullwidth digit
    ("1\t2\t3", r"expected 4 fields separated by '\\t', got 3"),
    ("1\t2\t3\t881250949\t7", r"expected 4 fields separated by '\\t', got 5"),
    ("   ", r"expected 4 fields separated by '\\t', got 1"),
    ("1\t\t3\t881250949", "column 'item_id' has invalid value ''"),
])
def test_bad_line_is_named(tmp_path, line3, error):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "ratings.tsv")) + ":3: " + error):
        _read(tmp_path, GOOD + line3 + "\n" + GOOD)


def test_good_file_types_and_blank_lines(tmp_path):
    df = _read(tmp_path, GOOD.replace("\n", "\r\n") + "\n" + GOOD)  # CRLF and an empty line are fine
    assert len(df) == 4 and df["rating"].dtype == "float64" and df["timestamp"].dtype == "int64"
    assert df["user_id"].tolist() == ["196", "186", "196", "186"]
    # line numbers count the empty lines: the bad row is physical line 6
    with pytest.raises(DataError, match=r"ratings\.tsv:6: column 'rating'"):
        _read(tmp_path, GOOD + "\n\n\n1\t2\t9\t881250949\n")
    with pytest.raises(DataError, match=r"ratings\.tsv:5: expected 4 fields"):
        _read(tmp_path, GOOD + "\n\n1\t2\n" + GOOD)
    big = GOOD * 50_000 + "\n" + "1\t2\n"  # large enough for Arrow's threaded parser, which knows no row numbers
    with pytest.raises(DataError, match=r"ratings\.tsv:100002: expected 4 fields"):
        _read(tmp_path, big)


def test_every_row_has_extra_fields(tmp_path):
    """pandas would silently turn the extra leading field into the index."""
    with pytest.raises(DataError, match=r"ratings\.tsv:1: expected 4 fields .* got 5"):
        _read(tmp_path, "0\t196\t242\t3\t881250949\n1\t186\t302\t3\t891717742\n")


def test_encoding_errors_name_the_line(tmp_path):
    data = GOOD.encode() + b"7\t8\t\xff\t881250949\n"
    with pytest.raises(DataError, match=r"ratings\.tsv:3: not valid utf-8 text"):
        _read(tmp_path, data)
    assert len(_read(tmp_path, GOOD.encode() + "9\t8\t3\t881250949\n".encode(), encoding="latin-1")) == 3


def test_unique_ids_and_choices(tmp_path):
    cols = {"item_id": Column(pattern="[0-9]+", unique=True), "flag": Column("int", choices=(0, 1)),
            "gender": Column(choices=("M", "F"))}
    names = ["item_id", "flag", "gender"]
    assert _read(tmp_path, "1|0|M\n2|1|F\n", names=names, sep="|", columns=cols)["flag"].tolist() == [0, 1]
    with pytest.raises(DataError, match=r"items\.txt:3: column 'item_id' repeats the value '1' of line 1; ids must be unique"):
        _read(tmp_path, "1|0|M\n2|1|F\n1|1|F\n", name="items.txt", names=names, sep="|", columns=cols)
    with pytest.raises(DataError, match=r"items\.txt:2: column 'flag' has invalid value '2': expected an integer one of \[0, 1\]"):
        _read(tmp_path, "1|0|M\n2|2|F\n", name="items.txt", names=names, sep="|", columns=cols)
    with pytest.raises(DataError, match=r"items\.txt:1: column 'gender' has invalid value 'X'"):
        _read(tmp_path, "1|0|X\n", name="items.txt", names=names, sep="|", columns=cols)


def test_the_first_bad_line_is_reported(tmp_path):
    with pytest.raises(DataError, match=r"ratings\.tsv:2: column 'timestamp'"):
        _read(tmp_path, "1\t2\t3\t881250949\n1\t2\t3\tx\n1\t2\tx\t881250949\n")


def test_header_multichar_separator_and_quotes(tmp_path):
    with pytest.raises(DataError, match=r"r\.csv:1: header \['user', 'item', 'rating', 'ts'\], expected"):
        _read(tmp_path, "user,item,rating,ts\n1,2,3,881250949\n", name="r.csv", sep=",", header=["userId", "movieId", "rating", "timestamp"])
    with pytest.raises(DataError, match=r"r\.dat:2: expected 4 fields separated by '::', got 3: '1::2::3'"):
        _read(tmp_path, "1::2::3::881250949\n1::2::3\n", name="r.dat", sep="::")
    with pytest.raises(DataError, match=r"r\.dat: contains tab characters"):
        _read(tmp_path, "1::2::3::8812\t50949\n", name="r.dat", sep="::")
    cols = {"id": Column(pattern="[0-9]+", unique=True)}
    df = _read(tmp_path, 'id,title\n1,"A, The"\n2,"say ""hi"""\n', name="m.csv", sep=",", names=["id", "title"], columns=cols,
               header=["id", "title"], quoting=True)
    assert df["title"].tolist() == ["A, The", 'say "hi"']
    with pytest.raises(DataError, match=r"m\.csv:3: expected 2 fields separated by ',', got 3"):
        _read(tmp_path, 'id,title\n1,"A, The"\n2,B,C\n', name="m.csv", sep=",", names=["id", "title"], columns=cols,
              header=["id", "title"], quoting=True)


def test_empty_file(tmp_path):
    for text in ("", "\n\n"):
        with pytest.raises(DataError, match=r"ratings\.tsv: no data rows"):
            _read(tmp_path, text)


def test_corrupt_zip_member_is_a_data_error(tmp_path):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ml/u.data", GOOD * 200)
    raw = bytearray(path.read_bytes())
    raw[60] ^= 0xFF  # inside the compressed data: a CRC or inflate error when read
    path.write_bytes(bytes(raw))
    src = open_source(path)
    with pytest.raises(DataError, match=r"a\.zip!u\.data: cannot read from the archive"):
        src.read_bytes("u.data")
