"""Where raw files come from: a directory, a zip archive, or a checksummed download.

``open_source(path)`` gives a ``RawSource`` that reads members by name from
either a directory (files directly inside it or in one sub-directory, as
archives unpack) or a zip. ``fetch_archive`` downloads an official archive
with urllib and verifies its md5 before anything reads it; offline it raises
a ``DataError`` that says where to put the file by hand.

``read_delimited`` parses a delimited text file fast (pandas C engine) and,
only when that fails or yields bad values, re-scans the lines in Python to
report the first malformed one as ``<file>:<line>``.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.schema import DataError


@dataclass
class RawSource:
    """A directory or zip archive holding a dataset's raw files."""

    path: Path

    def _zip_name(self, zf: zipfile.ZipFile, name: str) -> str | None:
        for n in zf.namelist():
            if n == name or n.endswith("/" + name):
                return n
        return None

    def _dir_file(self, name: str) -> Path | None:
        direct = self.path / name
        if direct.exists():
            return direct
        nested = sorted(self.path.glob(f"*/{name}"))
        return nested[0] if nested else None

    def label(self, name: str) -> str:
        """Human-readable location of a member, for error messages."""
        if self.path.is_dir():
            f = self._dir_file(name)
            return str(f) if f else str(self.path / name)
        return f"{self.path}!{name}"

    def has(self, name: str) -> bool:
        if self.path.is_dir():
            return self._dir_file(name) is not None
        with zipfile.ZipFile(self.path) as zf:
            return self._zip_name(zf, name) is not None

    def read_bytes(self, name: str) -> bytes:
        if self.path.is_dir():
            f = self._dir_file(name)
            if f is None:
                raise DataError(f"{self.path / name}: file not found")
            return f.read_bytes()
        with zipfile.ZipFile(self.path) as zf:
            n = self._zip_name(zf, name)
            if n is None:
                raise DataError(f"{self.path}!{name}: file not found in archive")
            return zf.read(n)


def open_source(path: str | Path) -> RawSource:
    """A ``RawSource`` over a directory or a ``.zip``; ``DataError`` if neither exists."""
    p = Path(path).expanduser()
    if p.is_dir() or (p.is_file() and zipfile.is_zipfile(p)):
        return RawSource(p)
    if p.exists():
        raise DataError(f"{p}: not a directory or a zip archive")
    raise DataError(f"{p}: not found")


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_archive(url: str, md5: str, dest: str | Path, timeout: float = 30.0) -> Path:
    """Return ``dest`` (an archive), downloading ``url`` first if it is absent.

    The md5 is the one GroupLens publishes beside each archive (``<zip>.md5``); a
    mismatch deletes the download and raises, so a truncated file is never used.
    """
    import urllib.error
    import urllib.request

    from tqdm import tqdm

    dest = Path(dest)
    if dest.exists():
        if md5sum(dest) != md5:
            raise DataError(f"{dest}: md5 {md5sum(dest)} does not match the published {md5}; delete it and retry")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}") as bar:
                for chunk in iter(lambda: r.read(1 << 20), b""):
                    f.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        tmp.unlink(missing_ok=True)
        raise DataError(
            f"{dest}: archive not present and download of {url} failed ({e}). Offline? Download it on a "
            f"connected machine and place it at {dest} (md5 {md5}), or pass path=<dir or zip>."
        ) from e
    got = md5sum(tmp)
    if got != md5:
        tmp.unlink(missing_ok=True)
        raise DataError(f"{url}: downloaded md5 {got} != published {md5}; the file was removed")
    tmp.replace(dest)
    return dest


def _scan_bad_line(text: str, label: str, sep: str, names, converters, skip: int) -> None:
    """Find the first line that does not split into ``len(names)`` valid fields and raise."""
    for lineno, line in enumerate(text.splitlines(), start=1):
        if lineno <= skip or not line.strip():
            continue
        fields = line.split(sep)
        if len(fields) != len(names):
            raise DataError(f"{label}:{lineno}: expected {len(names)} fields separated by {sep!r}, got {len(fields)}: {line[:120]!r}")
        for name, value in zip(names, fields):
            conv = converters.get(name)
            if conv is not None:
                try:
                    conv(value)
                except ValueError:
                    raise DataError(f"{label}:{lineno}: column {name!r} has invalid value {value!r}") from None


def read_delimited(
    data: bytes,
    label: str,
    sep: str,
    names: list[str],
    numeric: dict[str, type] | None = None,
    skip_header: int = 0,
    encoding: str = "latin-1",
) -> pd.DataFrame:
    """Parse delimited ``data`` into string/numeric columns; malformed rows -> ``DataError`` at ``label:line``.

    ``numeric`` maps column -> ``int``/``float``; other columns stay strings.
    Multi-character separators (MovieLens-1M's ``::``) are rewritten to a tab
    first so the fast C parser can run (no MovieLens field contains a tab).
    """
    numeric = numeric or {}
    text = data.decode(encoding)
    if len(sep) > 1:
        if "\t" in text:
            raise DataError(f"{label}: contains tab characters; cannot parse {sep!r}-separated data safely")
        text, sep = text.replace(sep, "\t"), "\t"
    try:
        df = pd.read_csv(
            io.StringIO(text), sep=sep, header=None, names=names, skiprows=skip_header, dtype=str,
            keep_default_na=False, quoting=3, engine="c", skip_blank_lines=True,
        )
        ok = True
        for col, typ in numeric.items():
            vals = pd.to_numeric(df[col], errors="coerce")
            if vals.isna().any() or (typ is int and not np.all(np.mod(vals.to_numpy(), 1) == 0)):
                ok = False
                break
            df[col] = vals.astype(np.int64 if typ is int else np.float64)
        # pandas pads short rows with NaN instead of failing: treat any gap as malformed.
        ok = ok and not df.isna().to_numpy().any()
    except (pd.errors.ParserError, ValueError):
        ok = False
    if not ok or len(df.columns) != len(names):
        _scan_bad_line(text, label, sep, names, {c: (int if t is int else float) for c, t in numeric.items()}, skip_header)
        raise DataError(f"{label}: could not be parsed as {len(names)} {sep!r}-separated columns")
    return df
