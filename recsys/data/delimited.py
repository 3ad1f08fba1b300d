"""Strict reading of delimited text files (MovieLens ``u.data``, ``ratings.dat``, ``movies.csv``, ...).

``read_delimited(data, label, sep, names, columns)`` parses with Arrow's CSV reader
(C++, multi-threaded) and checks every row against a ``Column`` per field:

- exact field counts: a short row or an extra field is an error (pandas pads short
  rows and silently turns an extra leading field into the index; Arrow does not);
- the text encoding (``UnicodeDecodeError`` -> ``DataError`` at the line);
- numbers in strict ASCII notation (``int``: ``-?[0-9]+``; ``float``: decimal or
  exponent), so ``1_000``, ``0x1f``, `` 3``, ``inf``, ``nan`` and non-ASCII digits
  (which Python's ``int()``/``float()`` accept) are errors; then finiteness, the
  inclusive range ``lo``..``hi``, a ``step`` (rating scales) and ``choices``;
- text fields against a full-match ``pattern``; ``unique`` columns (ids of an item
  or user table) may not repeat a value.

Every failure is a ``DataError`` naming ``<file>:<line>`` (1-based physical line,
counting the header and empty lines), the column and the offending value. Empty lines
are skipped; a line of only spaces is a malformed row. Checks are vectorised
(Arrow compute, RE2 regexes: linear time); only the error path re-scans lines.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.data.schema import DataError

_INT = r"-?[0-9]{1,18}"  # at most 18 digits: every accepted value fits int64 without wrapping
_FLOAT = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?"


@dataclass(frozen=True)
class Column:
    """What one field may hold (see module docstring); the default is any text.

    kind: ``str`` (kept as text), ``int`` (int64) or ``float`` (float64).
    lo, hi: inclusive bounds of a number. step: a float must be a multiple of it.
    choices: allowed values (numbers or strings). pattern: full-match RE2 pattern of a ``str``.
    unique: no value may occur on two rows.
    """

    kind: str = "str"
    lo: float | None = None
    hi: float | None = None
    step: float | None = None
    choices: tuple | None = None
    pattern: str | None = None
    unique: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("str", "int", "float"):
            raise ValueError(f"Column kind must be str, int or float, got {self.kind!r}")

    def describe(self) -> str:
        parts = {"int": ["an integer"], "float": ["a finite number"], "str": ["text"]}[self.kind]
        if self.pattern is not None:
            parts.append(f"matching {self.pattern!r}")
        if self.lo is not None or self.hi is not None:
            parts.append(f"in [{self.lo}, {self.hi}]")
        if self.step is not None:
            parts.append(f"in steps of {self.step}")
        if self.choices is not None:
            parts.append(f"one of {list(self.choices)}")
        return " ".join(parts)


def line_number(data: bytes, row: int, skip_header: int = 0) -> int:
    """Physical 1-based line of data row ``row`` (0-based, empty lines not counted) in ``data``.

    Lines end at ``\\n``, ``\\r\\n`` or ``\\r``, as in Arrow's CSV reader. Error path only: O(n).
    """
    seen = -1
    for i, line in enumerate(data.splitlines()):
        if i < skip_header or not line:
            continue
        seen += 1
        if seen == row:
            return i + 1
    return skip_header + row + 1


def _decode(data: bytes, label: str, encoding: str) -> bytes:
    """``data`` as UTF-8 (what Arrow reads); an undecodable byte -> ``DataError`` at its line."""
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{label}:{line}: not valid {encoding} text ({e.reason} at byte {e.start})") from None
    return data if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else text.encode("utf-8")


def _parse(body: bytes, label: str, sep: str, names: list[str], quoting: bool, offset: int, threads: bool, shown_sep: str):
    import pyarrow as pa
    import pyarrow.csv as csv

    bad: list = []

    def on_invalid(row) -> str:
        bad.append(row)
        return "error"

    try:
        return csv.read_csv(
            io.BytesIO(body),
            read_options=csv.ReadOptions(column_names=names, use_threads=threads),
            parse_options=csv.ParseOptions(delimiter=sep, quote_char='"' if quoting else False, escape_char=False,
                                           newlines_in_values=False, ignore_empty_lines=True, invalid_row_handler=on_invalid),
            convert_options=csv.ConvertOptions(column_types={n: pa.string() for n in names}, strings_can_be_null=False,
                                               quoted_strings_can_be_null=False),
        )
    except pa.ArrowInvalid as e:
        if bad and bad[0].number is None and threads:  # threaded parsing does not know row numbers
            return _parse(body, label, sep, names, quoting, offset, False, shown_sep)
        if bad:
            row = bad[0]
            line = line_number(body, row.number - 1) + offset
            text = row.text[:120].replace(sep, shown_sep)
            raise DataError(f"{label}:{line}: expected {row.expected_columns} fields separated by {shown_sep!r}, "
                            f"got {row.actual_columns}: {text!r}") from None
        if "Empty CSV" in str(e):
            raise DataError(f"{label}: no data rows") from None
        raise DataError(f"{label}: cannot be parsed as {len(names)} {shown_sep!r}-separated fields ({e})") from None


def _check(arr, col: Column):
    """(bad mask (N,) bool, values as numpy or None for text) of one string column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    pattern = {"int": _INT, "float": _FLOAT}.get(col.kind, col.pattern)
    ok = np.ones(len(arr), dtype=bool)
    if pattern is not None:
        ok = pc.match_substring_regex(arr, f"^(?:{pattern})$").to_numpy(zero_copy_only=False)
    if col.kind == "str":
        if col.choices is not None:
            ok &= pc.is_in(arr, value_set=pa.array([str(c) for c in col.choices])).to_numpy(zero_copy_only=False)
        return ~ok, None
    safe = pc.if_else(pa.array(ok), arr, "0")  # cast only what passed the notation check
    vals = pc.cast(safe, pa.int64() if col.kind == "int" else pa.float64()).to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):
        ok &= np.isfinite(vals) if col.kind == "float" else True
        if col.lo is not None:
            ok &= vals >= col.lo
        if col.hi is not None:
            ok &= vals <= col.hi
        if col.step is not None:
            q = vals / col.step
            ok &= q == np.round(q)
        if col.choices is not None:
            ok &= np.isin(vals, np.asarray(col.choices, dtype=vals.dtype))
    return ~ok, vals


def read_delimited(
    data: bytes,
    label: str,
    sep: str,
    names: list[str],
    columns: dict[str, Column] | None = None,
    header: list[str] | None = None,
    skip_header: int = 0,
    encoding: str = "latin-1",
    quoting: bool = False,
) -> pd.DataFrame:
    """Parse delimited ``data`` and check every field (see module docstring).

    Args:
        data: the file's bytes; label: where they came from, for messages (``dir/u.data``).
        sep: field separator; a multi-character one (MovieLens-1M's ``::``) is rewritten
            to a tab first (a file that already contains tabs is refused).
        names: the field names, in file order; columns: a ``Column`` per name (missing: any text).
        header: if given, the first line must hold exactly these names (then it is skipped).
        skip_header: lines to skip unchecked (a caller that checked a typed header itself).
        encoding: the file's text encoding (MovieLens-100K/1M: latin-1; ML-20M, RecBole: utf-8).
        quoting: fields may be ``"quoted"`` (ML-20M's ``movies.csv`` quotes titles with commas).

    Returns: one row per non-empty data line; ``int`` columns int64, ``float`` float64, text str.
    """
    columns = columns or {}
    unknown = sorted(set(columns) - set(names))
    if unknown:
        raise ValueError(f"columns {unknown} are not among the field names {names}")
    utf8 = _decode(data, label, encoding)
    lines_skipped = 1 if header is not None else skip_header
    if header is not None:
        first = utf8.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8").split(sep)
        if first != list(header):
            raise DataError(f"{label}:1: header {first}, expected {list(header)}")
    body, pos = utf8, 0
    for _ in range(lines_skipped):
        nl = body.find(b"\n", pos)
        pos = len(body) if nl < 0 else nl + 1
    body = body[pos:]
    shown_sep = sep
    if len(sep) > 1:
        if b"\t" in body:
            raise DataError(f"{label}: contains tab characters; cannot parse {sep!r}-separated data safely")
        body, sep = body.replace(sep.encode(), b"\t"), "\t"
    table = _parse(body, label, sep, names, quoting, lines_skipped, True, shown_sep)
    if table.num_rows == 0:
        raise DataError(f"{label}: no data rows")
    out, first_bad = {}, None  # first_bad: (row, name, Column) of the earliest bad row
    for name in names:
        col = columns.get(name, Column())
        bad, vals = _check(table[name], col)
        text = None
        if col.unique:
            text = table[name].to_pandas()
            key = pd.Series(vals) if vals is not None else text
            bad |= key.duplicated().to_numpy()
        if bad.any():
            r = int(np.argmax(bad))
            if first_bad is None or r < first_bad[0]:
                first_bad = (r, name, col)
        out[name] = vals if vals is not None else (text if text is not None else table[name].to_pandas())
    if first_bad is not None:
        r, name, col = first_bad
        value = table[name][r].as_py()
        line = line_number(body, r) + lines_skipped
        if col.unique and not _check(table[name].slice(r, 1), col)[0].any():
            first = line_number(body, int(np.argmax(out[name] == out[name][r]))) + lines_skipped
            raise DataError(f"{label}:{line}: column {name!r} repeats the value {value[:80]!r} of line {first}; ids must be unique")
        raise DataError(f"{label}:{line}: column {name!r} has invalid value {value[:80]!r}: expected {col.describe()}")
    return pd.DataFrame(out)
