"""Build a prepared dataset directory: read -> filter -> re-index -> split -> write.

    python -m recsys.data.prepare data=ml100k            # configs/prepare.yaml
    python -m recsys.data.prepare data=synthetic data.force=true

``prepare`` writes ``<data_dir>/<name>/`` (layout in ``recsys/data/schema.py``)
and returns that directory. ``meta.json`` records the prepare configuration
(``meta.extra["prepare"]``) and the dataset fingerprint (``extra["fingerprint"]``,
over the files as written): a second call with the same configuration returns at
once, a different one redoes the work.

Nothing already prepared is lost: the new dataset is built in a temporary directory
beside the target (``.<name>.tmp-*``) and swapped in by renames only once complete,
so a failure (a mistyped ``data.reader.path``, a kill) leaves the old one as it was.
A lock file (``.<name>.lock``, ``fcntl``) serialises concurrent prepares of one
dataset: the second waits, then finds it up to date.

``reader`` and ``split`` are callables (Hydra ``_partial_: true`` nodes), so
no data is read before the cache is checked.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Callable

import pandas as pd

from recsys.data import splits as S
from recsys.data.canonical import reindex
from recsys.data.io import TEXT_EMB_FILE, save_dataset, save_split
from recsys.data.schema import DataError, Dataset, DatasetMeta, Split
from recsys.utils.artifacts import fingerprint_record, replace_dir, temp_dir_beside

log = logging.getLogger(__name__)


def describe(obj) -> object:
    """A JSON-able description of a config value; partials become ``{"_target_": ..., **kwargs}``."""
    if isinstance(obj, functools.partial):
        return {"_target_": f"{obj.func.__module__}.{obj.func.__qualname__}", **{k: describe(v) for k, v in sorted(obj.keywords.items())}}
    if callable(obj) and hasattr(obj, "__qualname__"):
        return {"_target_": f"{obj.__module__}.{obj.__qualname__}"}
    try:  # OmegaConf containers from Hydra
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, (DictConfig, ListConfig)):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, dict):
        return {k: describe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [describe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _is_cached(out: Path, key: dict) -> bool:
    meta_path = out / "meta.json"
    if not meta_path.exists():
        return False
    try:
        recorded = json.loads(meta_path.read_text()).get("extra", {}).get("prepare")
    except json.JSONDecodeError:
        return False
    return recorded == key


def _check_replaceable(out: Path) -> None:
    """Refuse to replace a dataset that ``prepare`` cannot rebuild (a feedback refresh of another one)."""
    meta_path = out / "meta.json"
    if not meta_path.exists():
        return
    try:
        extra = json.loads(meta_path.read_text()).get("extra", {})
    except json.JSONDecodeError:
        return
    if "refresh" in extra:
        raise DataError(f"{out} holds a refreshed dataset (recsys.serve.refresh, from {extra['refresh'].get('from')}), "
                        "which prepare cannot rebuild from its reader; it was left as it was (data.force=true replaces it)")


def filter_dataset(ds: Dataset, min_rating: float | None, kcore: int) -> Dataset:
    """Implicit threshold, then iterative k-core, then contiguous re-indexing."""
    inter = ds.interactions
    if min_rating is not None:
        inter = S.implicit(inter, min_rating)
    inter = S.kcore(inter, kcore)
    if len(inter) == 0:
        raise DataError(f"dataset {ds.meta.name!r}: no interactions left after min_rating={min_rating}, kcore={kcore}")
    ds.meta.implicit_threshold = min_rating
    return reindex(Dataset(inter, ds.items, ds.users, ds.meta))


def prepare(
    name: str,
    reader: Callable[[], Dataset],
    split: Callable[[pd.DataFrame], Split],
    data_dir: str | Path = "data",
    min_rating: float | None = 0.0,
    kcore: int = 5,
    text_embeddings: bool = False,
    text_batch_size: int = 256,
    force: bool = False,
) -> Path:
    """Prepare dataset ``name`` into ``<data_dir>/<name>/`` and return that directory.

    Args:
        reader: zero-argument callable returning the raw canonical ``Dataset``.
        split: callable mapping the filtered interactions to a ``Split``.
        min_rating: keep interactions with value >= this (``None``: keep all).
        kcore: minimum interactions per user and per item (1 disables).
        text_embeddings: also write ``item_text_emb.npy`` (all-MiniLM-L6-v2).
        force: redo even when ``meta.json`` records the same configuration.
    """
    if isinstance(kcore, bool) or not isinstance(kcore, int) or kcore < 1:
        raise DataError(f"kcore={kcore!r}: expected a whole number >= 1 (1 keeps every user and item)")
    if min_rating is not None and (isinstance(min_rating, bool) or not isinstance(min_rating, (int, float))):
        raise DataError(f"min_rating={min_rating!r}: expected a number or null (keep every interaction)")
    out = Path(data_dir).expanduser() / name
    if out.is_symlink():  # build beside the real directory, so the swap is a rename on one filesystem
        out = out.resolve()
    key = {
        "name": name, "reader": describe(reader), "split": describe(split),
        "min_rating": min_rating, "kcore": kcore, "text_embeddings": bool(text_embeddings),
    }
    if not force and _is_cached(out, key):
        log.info("prepare: %s is up to date (same config), skipping", out)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with _locked(out):
        _recover(out)
        if not force and _is_cached(out, key):
            log.info("prepare: %s was prepared meanwhile by another process (same config)", out)
            return out
        if not force:
            _check_replaceable(out)
        t0 = time.perf_counter()
        tmp = temp_dir_beside(out)
        try:
            meta = _build(tmp, name, key, reader, split, min_rating, kcore, text_embeddings, text_batch_size)
            replace_dir(tmp, out)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if out.exists():
                note = f"prepare: {out} was left as it was"
                e.add_note(note)  # in the traceback; Hydra's one-line error drops notes, hence the log line too
                log.error("prepare of %s failed (%s: %s); %s", out, type(e).__name__, e, note[9:])
            raise
    log.info("prepare: wrote %s in %.1f s (%d users, %d items, %d interactions)", out, time.perf_counter() - t0,
             meta.n_users, meta.n_items, meta.n_interactions)
    return out


def _build(tmp: Path, name, key, reader, split, min_rating, kcore, text_embeddings, text_batch_size) -> DatasetMeta:
    """Read, filter, split and write the whole dataset into ``tmp``; ``meta.json`` (with the fingerprint) last."""
    ds = filter_dataset(reader(), min_rating, kcore)
    ds.meta.name = name
    sp = split(ds.interactions)
    S.check_split(sp)
    save_dataset(ds, tmp, write_meta=False)
    save_split(sp, tmp)
    if text_embeddings:
        import numpy as np

        from recsys.data.text_embed import embed_texts_cached

        emb = embed_texts_cached(ds.items["text"].tolist(), batch_size=text_batch_size, progress=True)
        np.save(tmp / TEXT_EMB_FILE, emb)
    meta = ds.meta
    meta.extra = {
        **meta.extra, "prepare": key, "split": sp.name,
        "split_sizes": {p: int(len(sp.part(p))) for p in ("train", "valid", "test")},
        "sparsity": 1.0 - meta.n_interactions / (meta.n_users * meta.n_items),
        **fingerprint_record(tmp),  # over the files as written; renames keep their sizes and mtimes
    }
    meta.save(tmp / "meta.json")
    return meta


@contextlib.contextmanager
def _locked(out: Path):
    """Exclusive lock on ``<data_dir>/.<name>.lock`` for the duration of a prepare (waits for another holder)."""
    import fcntl

    with open(out.parent / f".{out.name}.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("prepare: another process is preparing %s; waiting for it", out)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _recover(out: Path) -> None:
    """Under the lock: clear what a killed prepare left (a half-built tmp dir; an old dir mid-swap)."""
    for old in sorted(out.parent.glob(f".{out.name}.old-*")):
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:  # killed between the two renames of replace_dir: the old dataset comes back
            log.warning("prepare: restoring %s from %s (a prepare was killed while swapping)", out, old)
            old.rename(out)
    for tmp in out.parent.glob(f".{out.name}.tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)


CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def prepare_from_config(data: str, data_dir, overrides=()) -> Path:
    """Compose ``configs/prepare.yaml`` with ``data=<data>`` and prepare it into ``data_dir``.

    Exactly what ``python -m recsys.data.prepare data=<data>`` and ``recsys.train`` do, so the
    result carries the same cache key and training runs reuse it instead of preparing again.
    For scripts and tests that need a prepared dataset without a Hydra run.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("prepare", overrides=[f"data={data}", *overrides])
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.data_dir = str(data_dir)
    return Path(instantiate(cfg.data))


def main() -> None:
    """Hydra entry point: ``python -m recsys.data.prepare data=<name>``."""
    import hydra
    from hydra.utils import instantiate

    @hydra.main(version_base="1.3", config_path="../../configs", config_name="prepare")
    def _main(cfg) -> None:
        from recsys.utils.cli import user_errors

        with user_errors("recsys.data.prepare"):
            out = instantiate(cfg.data)
        meta = DatasetMeta.load(Path(out) / "meta.json")
        print(f"{out}: {meta.n_users} users, {meta.n_items} items, {meta.n_interactions} interactions, "
              f"sparsity {meta.extra['sparsity']:.4f}, split {meta.extra['split']} {meta.extra['split_sizes']}")

    _main()


if __name__ == "__main__":
    from recsys.utils.cli import doc_on_help

    doc_on_help(__doc__)
    main()
