"""A two-tower run and its FAISS index as one checked pair.

``python -m recsys.index`` writes, with every index, ``index/<kind>/provenance.json`` (kind
``index``): the run's config hash, the fingerprint of the dataset whose item features were
embedded, the checkpoint it embedded (``parent``, relative to the run) and that file's hash
(``parent_hash``). :func:`load_two_tower_run` is the one loader serving uses: it loads the
checkpoint and the index of a run and refuses a pair that does not belong together, with a
:class:`~recsys.utils.artifacts.ProvenanceError` naming the command that rebuilds the stale part.
"""

from __future__ import annotations

import logging
from pathlib import Path

from recsys.utils import run_dir as R
from recsys.utils.artifacts import (CHECKPOINT_KEY, PROVENANCE_FILE, Provenance, ProvenanceError, check_match,
                                    dataset_fingerprint, file_hash, hash_of, load_torch, read_provenance,
                                    write_provenance)

log = logging.getLogger(__name__)


def index_command(run_dir, index_kind: str, checkpoint: str = "best") -> str:
    return f"python -m recsys.index run={run_dir} index={index_kind} checkpoint={checkpoint}"


def train_command(run_prov: Provenance, run_dir: Path) -> str:
    """The command that trained the run (recorded by recsys.train), or where to find its overrides."""
    return run_prov.extra.get("command") or f"python -m recsys.train <the overrides in {run_dir}/.hydra/overrides.yaml>"


def checkpoint_provenance(ckpt: dict, path) -> dict:
    """The ``{"config_hash", "dataset_fingerprint", "run"}`` a training checkpoint carries."""
    found = ckpt.get(CHECKPOINT_KEY)
    if not found:
        raise ProvenanceError(f"{path} carries no provenance record (written by an older version, or not by "
                              "recsys.train), so its data and config cannot be checked; retrain it with recsys.train")
    return found


def write_index_provenance(index_dir: Path, checkpoint: Path, ckpt: dict, dataset_dir, index_config: dict) -> Provenance:
    """Record what built the index in ``index_dir`` (called by ``python -m recsys.index`` before the swap)."""
    run_dir = checkpoint.parent.parent if checkpoint.parent.name == R.CHECKPOINTS else checkpoint.parent
    found = ckpt.get(CHECKPOINT_KEY) or {}
    if not found:
        log.warning("%s carries no provenance record: the index records its file hash only", checkpoint)
    prov = Provenance(
        "index", config_hash=found.get("config_hash", "unknown"), dataset_fingerprint=dataset_fingerprint(dataset_dir),
        parent=str(checkpoint.resolve().relative_to(run_dir.resolve())), parent_hash=file_hash(checkpoint),
        extra={"run": run_dir.resolve().name, "checkpoint_epoch": ckpt.get("epoch"), "dataset_dir": str(Path(dataset_dir).resolve()),
               "index_config": index_config, "index_config_hash": hash_of(index_config)})
    write_provenance(index_dir, prov)
    return prov


def load_two_tower_run(run_dir: str | Path, index_kind: str, checkpoint: str = "best", dataset_dir=None,
                       device: str = "cpu"):
    """Load a trained two-tower run and its FAISS index, checked to belong together.

    Args:
        run_dir: the run's directory or its stable name (``outputs/<task>/<run_name>``, a link
            to the latest completed run of that name).
        index_kind: ``index/<index_kind>/`` of the run (``python -m recsys.index run=... index=<kind>``).
        checkpoint: ``best`` (default), ``last`` or ``epoch_NNN`` (a file of ``<run>/checkpoints/``).
        dataset_dir: the prepared dataset to build item/user features from; default the one the
            run was trained on (recorded in its provenance).
        device: where the model and the index go (``cpu`` or ``cuda``).

    Returns ``(LitTwoTower in eval mode, ItemIndex)``.

    Raises FileNotFoundError (no such run, checkpoint or index: the message says which command
    makes it) and ProvenanceError when: the checkpoint was not written by this run's config; the
    index was built from another checkpoint (or another file of the same name, e.g. a best.ckpt
    replaced by a resumed run); the dataset changed since the run was trained or since the index
    was built; the index does not cover the model's catalogue.
    """
    from recsys.models.lit_two_tower import LitTwoTower
    from recsys.retrieval.index import ItemIndex

    named = Path(run_dir)
    run = R.resolve_run(named)
    if not (run / PROVENANCE_FILE).is_file():
        raise ProvenanceError(f"{run} is not a run directory of recsys.train (no {PROVENANCE_FILE}; a run of an older "
                              "version?): train it with `python -m recsys.train experiment=...` and use that run")
    run_prov = read_provenance(run)
    retrain = train_command(run_prov, run)
    ckpt_path = R.checkpoint_file(run, checkpoint)
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"{ckpt_path}: not found (run status: {run_prov.extra.get('status')}); "
                                f"train the run to completion with `{retrain}`")
    rebuild_index = index_command(named, index_kind, checkpoint)
    if not str(index_kind).replace("_", "").isalnum():  # a kind names a folder of <run>/index/, never a path
        raise ValueError(f"index_kind {index_kind!r}: expected a name such as flat, ivf_flat, ivf_pq or hnsw")
    index_dir = run / "index" / index_kind
    if not (index_dir / "index.faiss").is_file():
        raise FileNotFoundError(f"{index_dir}: no {index_kind} index for this run; build it with `{rebuild_index}`")

    ckpt = load_torch(ckpt_path)
    found = checkpoint_provenance(ckpt, ckpt_path)
    check_match(f"the config hashes of {ckpt_path} and of its run {run}", run_prov.config_hash, found["config_hash"],
                rebuild=f"{retrain} resume=false")
    idx_prov = read_provenance(index_dir, rebuild=rebuild_index)
    check_match(f"the checkpoint {idx_prov.parent} that built {index_dir} and {ckpt_path.relative_to(run)} (file hashes)",
                file_hash(ckpt_path), idx_prov.parent_hash, rebuild=rebuild_index)

    ds_dir = Path(dataset_dir) if dataset_dir is not None else Path(run_prov.extra.get("dataset_dir") or ckpt["hyper_parameters"]["dataset_dir"])
    now = dataset_fingerprint(ds_dir)
    same_dir = ds_dir.resolve() == Path(run_prov.extra.get("dataset_dir", ds_dir)).resolve()
    check_match(f"the dataset fingerprints of {ds_dir} now and when {run.name} was trained", now,
                found["dataset_fingerprint"],
                rebuild=(f"{retrain} resume=false" if same_dir else f"{retrain} paths.data_dir={ds_dir.parent}")
                + f" (that command prepares the data with the run's own data options, re-preparing {ds_dir} if they "
                  f"differ; to train on the dataset as it is now, add the data overrides it was prepared with: "
                  f"'prepare' in {ds_dir / 'meta.json'})")
    check_match(f"the dataset fingerprints of {ds_dir} now and when {index_dir} was built", now,
                idx_prov.dataset_fingerprint, rebuild=rebuild_index)

    model = LitTwoTower.from_checkpoint(ckpt, dataset_dir=str(ds_dir)).eval().to(device)
    index = ItemIndex.load(index_dir, device=device)
    n_items = model.item_features.n_items
    if len(index) > n_items or (len(index) and int(index.id_map.max()) >= n_items):
        raise ProvenanceError(f"{index_dir} holds items outside the model's catalogue of {n_items}; "
                              f"rebuild it with `{rebuild_index}`")
    return model, index
