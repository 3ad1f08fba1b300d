"""Where raw files come from: a directory, a zip archive, or a checksummed download.

``open_source(path)`` gives a ``RawSource`` that reads members by name from
either a directory (files directly inside it or in one sub-directory, as
archives unpack) or a zip. ``fetch_archive`` downloads an official archive
with urllib and verifies its md5 before anything reads it; offline it raises
a ``DataError`` that says where to put the file by hand. Parsing the bytes read
from a source is ``recsys.data.delimited.read_delimited``'s job.
"""

from __future__ import annotations

import hashlib
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

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
        try:
            with zipfile.ZipFile(self.path) as zf:
                return self._zip_name(zf, name) is not None
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"{self.path}: cannot read the archive ({type(e).__name__}: {e})") from e

    def read_bytes(self, name: str) -> bytes:
        """The member's bytes; a missing, unreadable or corrupt member -> ``DataError`` naming it."""
        if self.path.is_dir():
            f = self._dir_file(name)
            if f is None:
                raise DataError(f"{self.path / name}: file not found")
            try:
                return f.read_bytes()
            except OSError as e:
                raise DataError(f"{f}: cannot read ({e})") from e
        try:
            with zipfile.ZipFile(self.path) as zf:
                n = self._zip_name(zf, name)
                if n is None:
                    raise DataError(f"{self.path}!{name}: file not found in archive")
                return zf.read(n)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:  # truncated or corrupt archive, bad CRC
            raise DataError(f"{self.path}!{name}: cannot read from the archive ({type(e).__name__}: {e})") from e


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
