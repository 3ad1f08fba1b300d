"""A training run's directory: layout, start / resume / reuse, its stable name, checkpoint paths.

Layout, under ``outputs/<task>/`` (``docs/architecture.md``, "Artifacts"):

    <run_name>-<hash>/              one directory per identity (recsys.utils.run_identity)
      provenance.json               kind "run": config_hash, dataset_fingerprint; extra: status
                                    (running | complete), name, identity, dataset_dir, command,
                                    best_checkpoint, best_epoch, metrics, wandb_dir
      .hydra/                       Hydra's record of the latest launch; .hydra/created/ the first
      checkpoints/epoch_NNN.ckpt    the best epoch so far (ModelCheckpoint, top-1)
      checkpoints/last.ckpt         the latest epoch: what a rerun resumes from
      checkpoints/best.ckpt         a copy of the best epoch, written when training ends
      metrics.json                  valid/test metrics of the best checkpoint
      wandb/, csv/, <task>.log      loggers
      item_embeddings.npy, index/<kind>/   written by ``python -m recsys.index``
    <run_name> -> <run_name>-<hash> symlink to the latest completed run of that name

Every checkpoint carries ``checkpoint[CHECKPOINT_KEY] = {"config_hash", "dataset_fingerprint",
"run"}`` (:class:`ProvenanceCallback`), so a file copied out of its directory still says where
it came from. Checkpoint paths read from a checkpoint (Lightning's ``best_model_path``) are
only ever opened inside the run's ``checkpoints/`` (:func:`inside_run`).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl

from recsys.utils.artifacts import (CHECKPOINT_KEY, PROVENANCE_FILE, Provenance, ProvenanceError, read_provenance,
                                    write_provenance)
from recsys.utils.run_identity import identity_diff

log = logging.getLogger(__name__)

CHECKPOINTS, BEST, LAST, METRICS = "checkpoints", "best.ckpt", "last.ckpt", "metrics.json"
RUNNING, COMPLETE = "running", "complete"
# what `resume=false` removes before starting a run over (never anything outside its own directory)
RUN_OUTPUTS = (CHECKPOINTS, METRICS, PROVENANCE_FILE, "index", "item_embeddings.npy", "model")
HYDRA_RECORD = ("config.yaml", "overrides.yaml", "hydra.yaml")


def is_rank_zero() -> bool:
    """True in the process that owns the run's files (rank 0 of a multi-process launch, or the only one)."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


@dataclass
class RunSpec:
    """What identifies this launch of a run (computed by ``recsys.train`` before anything is written)."""

    name: str  # run_name, e.g. ml100k-two_tower-seed42
    config_hash: str
    identity: dict
    dataset_fingerprint: str
    dataset_dir: str
    command: str

    def checkpoint_record(self, run_dir: Path) -> dict:
        return {"config_hash": self.config_hash, "dataset_fingerprint": self.dataset_fingerprint, "run": run_dir.name}


def _provenance(run_dir: Path) -> Provenance | None:
    return read_provenance(run_dir) if (run_dir / PROVENANCE_FILE).is_file() else None


def start(run_dir: Path, spec: RunSpec, resume: bool) -> str:
    """Decide what this launch does in ``run_dir``: ``"new"``, ``"resume"`` (from last.ckpt) or
    ``"complete"`` (the run finished before: reuse it). Rank 0 records a new run's provenance.

    Refuses (ProvenanceError) a directory that holds another config's run (it names the
    differing keys), one without provenance but with checkpoints, and a resume whose dataset
    changed since the run started.
    """
    prov = _provenance(run_dir)
    last = run_dir / CHECKPOINTS / LAST
    if prov is None and (last.exists() or (run_dir / METRICS).exists()):
        raise ProvenanceError(f"{run_dir} holds a run without {PROVENANCE_FILE} (an older version?), so it is not "
                              "known which config produced it; move it away or pick another output directory")
    if prov is not None and prov.config_hash != spec.config_hash:
        _restore_hydra_record(run_dir)
        diff = identity_diff(prov.extra.get("identity", {}), spec.identity)
        raise ProvenanceError(f"{run_dir} holds another run (config {prov.config_hash}; this command's is "
                              f"{spec.config_hash}; differs in: {'; '.join(diff[:8]) or 'unknown keys'}). It was not "
                              "touched: drop the hydra.run.dir / paths.output_dir override so the run gets its own directory")
    if prov is None or not resume:
        mode = "new"
    elif prov.dataset_fingerprint != spec.dataset_fingerprint:
        raise ProvenanceError(f"{spec.dataset_dir} changed since {run_dir} started (dataset fingerprint "
                              f"{prov.dataset_fingerprint} recorded, {spec.dataset_fingerprint} now), so it is not resumed; "
                              "`resume=false` retrains this run on the current data (its checkpoints are replaced)")
    elif prov.extra.get("status") == COMPLETE and (run_dir / METRICS).exists():
        mode = "complete"
    else:
        mode = "resume" if last.exists() else "new"
    if mode == "new" and is_rank_zero():
        if prov is not None:
            log.info("%s: starting %s over (removing its checkpoints and metrics)",
                     "resume=false" if not resume else "no last.ckpt to resume from", run_dir)
            for name in RUN_OUTPUTS:
                p = run_dir / name
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
        else:
            _log_new_run(run_dir, spec)
        _snapshot_hydra_record(run_dir)
        write_provenance(run_dir, Provenance("run", spec.config_hash, spec.dataset_fingerprint, extra={
            "status": RUNNING, "name": spec.name, "identity": spec.identity, "dataset_dir": spec.dataset_dir,
            "command": spec.command, "started": time.time()}))
    return mode


def finish(run_dir: Path, **extra) -> Provenance:
    """Mark the run complete (``extra`` joins its provenance) and point ``<run_name>`` at it. Rank 0 only."""
    prov = read_provenance(run_dir)
    prov.extra.update(status=COMPLETE, finished=time.time(), **extra)
    write_provenance(run_dir, prov)
    update_pointer(run_dir, prov.extra["name"])
    return prov


def update_pointer(run_dir: Path, name: str) -> Path | None:
    """``<parent>/<name>`` -> ``<name>-<hash>`` (relative symlink, replaced atomically)."""
    if not run_dir.name.startswith(name + "-"):
        return None  # an explicit output directory: there is no name to point from
    link = run_dir.parent / name
    if link.exists() and not link.is_symlink():
        log.warning("%s is a directory (older layout), not a link: it is left alone and does not point to %s",
                    link, run_dir.name)
        return None
    tmp = run_dir.parent / f".{name}.link-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.name)
    os.replace(tmp, link)
    return link


def _log_new_run(run_dir: Path, spec: RunSpec) -> None:
    latest = run_dir.parent / spec.name
    prov = _provenance(latest.resolve()) if latest.is_symlink() else None
    if prov is not None:
        diff = identity_diff(prov.extra.get("identity", {}), spec.identity)
        log.info("new run %s; differs from %s in: %s", run_dir.name, latest.resolve().name, "; ".join(diff[:8]))
    else:
        log.info("new run %s", run_dir)


def _snapshot_hydra_record(run_dir: Path) -> None:
    """Keep the creating launch's ``.hydra/*.yaml`` in ``.hydra/created/`` (restored if another config is refused)."""
    src = run_dir / ".hydra"
    if (src / "config.yaml").is_file():
        (src / "created").mkdir(exist_ok=True)
        for name in HYDRA_RECORD:
            if (src / name).is_file():
                shutil.copy2(src / name, src / "created" / name)


def _restore_hydra_record(run_dir: Path) -> None:
    """Undo what Hydra wrote for a launch that is refused: ``.hydra`` claims the run's own config again."""
    src, created = run_dir / ".hydra", run_dir / ".hydra" / "created"
    for name in HYDRA_RECORD:
        if (created / name).is_file():
            shutil.copy2(created / name, src / name)
        elif not created.is_dir():
            (src / name).unlink(missing_ok=True)


def inside_run(run_dir: Path, path: str | Path) -> Path:
    """``path`` as a file of ``run_dir/checkpoints/``, or a ProvenanceError.

    A recorded absolute path from elsewhere (the run directory was moved) maps to the file of
    the same name in this run's ``checkpoints/`` when there is one; anything else is refused.
    """
    base = (run_dir / CHECKPOINTS).resolve()
    p = Path(path)
    real = (p if p.is_absolute() else run_dir / p).resolve()
    if base in real.parents:
        return real
    same_name = (base / p.name).resolve()  # resolved: a symlink in checkpoints/ pointing out is outside too
    if base in same_name.parents and same_name.is_file():
        log.warning("checkpoint path %s is outside %s; using %s", path, base, same_name)
        return same_name
    raise ProvenanceError(f"checkpoint path {path} is outside its run's {base} and was not opened "
                          "(a run's checkpoints are read only from its own checkpoints/ directory; was last.ckpt edited?)")


def checkpoint_file(run_dir: Path, which: str = "best") -> Path:
    """``best`` | ``last`` | ``epoch_NNN`` (or a file name) -> the checkpoint file inside ``run_dir``."""
    name = {"best": BEST, "last": LAST}.get(which, which if which.endswith(".ckpt") else f"{which}.ckpt")
    return inside_run(run_dir, Path(CHECKPOINTS) / name)


def publish_best(run_dir: Path, best: Path) -> Path:
    """Copy the best epoch to ``checkpoints/best.ckpt`` (atomically: a kill leaves the old one or the new one)."""
    dst = run_dir / CHECKPOINTS / BEST
    if best.resolve() == dst.resolve():
        return dst
    tmp = dst.with_name(f".best.{os.getpid()}.tmp")
    shutil.copyfile(best, tmp)
    os.replace(tmp, dst)
    return dst


def resolve_run(path: str | Path) -> Path:
    """A run directory or its stable name (``outputs/<task>/<run_name>``) -> the run's real directory."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such run; train it first (`python -m recsys.train experiment=...`), "
                                "or give the run directory printed at the end of training")
    return p.resolve()


class ProvenanceCallback(pl.Callback):
    """Writes the run's provenance into every checkpoint, and checks it when Lightning resumes one."""

    def __init__(self, record: dict) -> None:
        self.record = dict(record)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = dict(self.record)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        found = checkpoint.get(CHECKPOINT_KEY) or {}
        if found.get("config_hash") != self.record["config_hash"]:
            raise ProvenanceError(f"the checkpoint being resumed was written by config {found.get('config_hash')} "
                                  f"(run {found.get('run')}), not this run's {self.record['config_hash']}; not resuming it")
