"""Safe loading and provenance of artifacts (checkpoints, indexes, rankers, prepared datasets).

Two rules every loader in the package follows:

1. ``torch.load`` always runs with ``weights_only=True`` and an explicit allow-list of the
   project's own classes (:func:`allow_listed`); a pickle that names anything else is refused.
   Lightning's own loading (``trainer.fit(ckpt_path=...)``) runs inside :func:`allow_listed` too.
   ``trusted=True`` is an opt-in for a foreign checkpoint, per command, and it warns.
2. An artifact records what produced it, as a :class:`Provenance` (the producing config's hash,
   the dataset fingerprint, the parent artifact's file hash), and the loader checks that record
   against what it is paired with (:func:`check_match`), naming the command that rebuilds it.

Hashes are short hex strings (12 characters of SHA-256): enough to tell runs apart in a
directory name, and stable across processes and machines (canonical JSON, sorted keys).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from recsys.core.errors import UserError

log = logging.getLogger(__name__)

HASH_CHARS = 12
PROVENANCE_FILE = "provenance.json"
# the key under which every training checkpoint carries its Provenance (recsys.utils.run_dir.ProvenanceCallback)
CHECKPOINT_KEY = "recsys_provenance"


class ProvenanceError(UserError, RuntimeError):
    """Two artifacts that do not belong together (or one whose record is missing)."""


def _safe_globals() -> list:
    """The project's own classes that may appear in a checkpoint (imported lazily: no cycles)."""
    from recsys.data.schema import DatasetMeta

    return [DatasetMeta]


def allow_listed():
    """Context manager: ``weights_only`` unpickling may build the project's allow-listed classes."""
    import torch

    return torch.serialization.safe_globals(_safe_globals())


def load_torch(path: str | Path, map_location="cpu", trusted: bool = False):
    """``torch.load`` with ``weights_only=True`` and the project's allow-list.

    ``trusted=True`` unpickles anything: only for a checkpoint you produced with an older
    version of the code or got from someone you trust; it logs a warning every time.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    if trusted:
        log.warning("loading %s with full unpickling (trusted=true): only do this for files you trust", path)
        return torch.load(path, map_location=map_location, weights_only=False)
    with allow_listed():
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:
            raise refused(path, e) from e


def refused(path, e: Exception) -> Exception:
    """The error for a file that ``weights_only`` loading refused (``e`` itself for any other failure)."""
    if "weights_only" in str(e) or "Unpickl" in type(e).__name__:  # UnpicklingError, or RuntimeError wrapping it
        return ProvenanceError(
            f"{path} holds objects outside the allow-list, so it was not loaded ({str(e).splitlines()[0]}). "
            "If you produced it yourself with an older version, re-create it; to load it anyway add "
            "`trusted=true` to the command (it unpickles arbitrary code: only for files you trust)")
    return e


def _plain(obj):
    """OmegaConf containers and paths -> JSON-able plain values."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, (DictConfig, ListConfig)):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def canonical_json(obj) -> str:
    return json.dumps(_plain(obj), sort_keys=True, separators=(",", ":"), default=str)


def hash_of(obj) -> str:
    """Short SHA-256 of a config (mapping, OmegaConf node, list, scalar) in canonical JSON."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:HASH_CHARS]


def file_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    """Short SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:HASH_CHARS]


def dataset_fingerprint(dataset_dir: str | Path) -> str:
    """The fingerprint of a prepared dataset: a hash of its tables, splits and arrays as written.

    ``prepare`` records it in ``meta.json`` (``extra["fingerprint"]``, see :func:`fingerprint_record`)
    with each file's size and mtime; the recorded value is used only while those still match,
    so a directory whose tables were rewritten afterwards (a copied ``meta.json``, a refresh)
    is hashed again rather than trusted.
    """
    d = Path(dataset_dir)
    meta = d / "meta.json"
    if meta.is_file():
        extra = json.loads(meta.read_text()).get("extra", {})
        fp, stats = extra.get("fingerprint"), extra.get("fingerprint_files")
        if fp and stats == _file_stats(d):
            return fp
    return compute_dataset_fingerprint(d)


def _fingerprinted_files(d: Path) -> list[Path]:
    return sorted(d.rglob("*.parquet")) + sorted(d.glob("*.npy"))


def _file_stats(d: Path) -> dict:
    return {str(p.relative_to(d)): [p.stat().st_size, p.stat().st_mtime_ns] for p in _fingerprinted_files(d)}


def compute_dataset_fingerprint(dataset_dir: str | Path) -> str:
    d = Path(dataset_dir)
    files = _fingerprinted_files(d)
    if not files:
        raise FileNotFoundError(f"{d}: no prepared tables to fingerprint (run `python -m recsys.data.prepare`)")
    return hash_of({str(p.relative_to(d)): file_hash(p) for p in files})


def fingerprint_record(dataset_dir: str | Path) -> dict:
    """``{"fingerprint": ..., "fingerprint_files": {file: [size, mtime_ns]}}`` for ``meta.extra``."""
    d = Path(dataset_dir)
    return {"fingerprint": compute_dataset_fingerprint(d), "fingerprint_files": _file_stats(d)}


@dataclass
class Provenance:
    """What produced an artifact.

    kind: ``checkpoint``, ``index``, ``ranker``, ``item_embeddings``...
    config_hash: hash of the producing command's identity config.
    dataset_fingerprint: :func:`dataset_fingerprint` of the data it was built from.
    parent: the file it was derived from (an index's checkpoint), and ``parent_hash`` its :func:`file_hash`.
    """

    kind: str
    config_hash: str
    dataset_fingerprint: str
    parent: str | None = None
    parent_hash: str | None = None
    created: float = field(default_factory=time.time)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "Provenance":
        known = {k: d[k] for k in ("kind", "config_hash", "dataset_fingerprint", "parent", "parent_hash",
                                   "created", "extra") if k in d}
        return cls(**known)


def temp_dir_beside(out: str | Path) -> Path:
    """A fresh ``.<name>.tmp-*`` directory next to ``out`` (same filesystem, so :func:`replace_dir` is a rename),
    with the permissions a plain ``mkdir`` would give (``mkdtemp`` makes it private)."""
    import os
    import tempfile

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    return tmp


def replace_dir(tmp: str | Path, out: str | Path) -> None:
    """Swap the complete directory ``tmp`` in as ``out`` by renames (same filesystem); the old ``out`` is removed last.

    Between the two renames ``out`` is absent for an instant; a process killed there leaves
    ``.<name>.old-<pid>`` beside it (``recsys.data.prepare`` restores such a leftover).
    """
    import os
    import shutil

    tmp, out = Path(tmp), Path(out)
    if not out.exists():
        tmp.rename(out)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def write_provenance(directory: str | Path, prov: Provenance) -> Path:
    path = Path(directory) / PROVENANCE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(prov.to_dict(), indent=2, sort_keys=True))
    tmp.replace(path)
    return path


def read_provenance(directory: str | Path, rebuild: str = "") -> Provenance:
    path = Path(directory) / PROVENANCE_FILE
    if not path.is_file():
        raise ProvenanceError(f"{path}: no provenance record, so it cannot be checked against its inputs"
                              + (f"; rebuild it with `{rebuild}`" if rebuild else ""))
    return Provenance.from_dict(json.loads(path.read_text()))


def check_match(what: str, expected: str | None, found: str | None, rebuild: str) -> None:
    """Raise a :class:`ProvenanceError` when a recorded hash differs from the one it is paired with."""
    if expected is None or found is None or expected == found:
        return
    raise ProvenanceError(f"{what} do not match ({found} recorded, {expected} here); rebuild with `{rebuild}`")
