"""Safe loading and provenance of artifacts (checkpoints, indexes, rankers, prepared datasets).

Two rules every loader in the package follows:

1. ``torch.load`` always runs with ``weights_only=True`` and an explicit allow-list of the
   project's own classes (:data:`SAFE_GLOBALS`); a pickle that names anything else is refused.
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

log = logging.getLogger(__name__)

HASH_CHARS = 12
PROVENANCE_FILE = "provenance.json"


class ProvenanceError(RuntimeError):
    """Two artifacts that do not belong together (or one whose record is missing)."""


def _safe_globals() -> list:
    """The project's own classes that may appear in a checkpoint (imported lazily: no cycles)."""
    from recsys.data.schema import DatasetMeta

    return [DatasetMeta]


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
    with torch.serialization.safe_globals(_safe_globals()):
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # torch raises UnpicklingError (or RuntimeError wrapping it)
            if "weights_only" in str(e) or "Unpickl" in type(e).__name__:
                raise ProvenanceError(
                    f"{path} holds objects outside the allow-list, so it was not loaded ({str(e).splitlines()[0]}). "
                    "If you produced it yourself with an older version, re-create it; to load it anyway pass "
                    "the command's trust flag (it unpickles arbitrary code)") from e
            raise


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
    """The fingerprint of a prepared dataset: recorded in ``meta.json`` by ``prepare``, else computed.

    It covers the tables and splits as written (file bytes), so two prepares that differ in
    any row or in the split rule have different fingerprints.
    """
    d = Path(dataset_dir)
    meta = d / "meta.json"
    if meta.is_file():
        fp = json.loads(meta.read_text()).get("extra", {}).get("fingerprint")
        if fp:
            return fp
    return compute_dataset_fingerprint(d)


def compute_dataset_fingerprint(dataset_dir: str | Path) -> str:
    d = Path(dataset_dir)
    files = sorted(p for p in d.rglob("*.parquet")) + sorted(d.glob("*.npy"))
    if not files:
        raise FileNotFoundError(f"{d}: no prepared tables to fingerprint (run `python -m recsys.data.prepare`)")
    return hash_of({str(p.relative_to(d)): file_hash(p) for p in files})


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
