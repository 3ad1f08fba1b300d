"""A trained ranker on disk: weights, a JSON config beside them, and a provenance record.

    <dir>/ranker.pt         torch.save(LitRanker.state_dict())  (tensors only)
    <dir>/ranker.json       {"ranker": LitRanker hyperparameters, "features": FeatureSpec, ...}
    <dir>/provenance.json   kind "ranker"; config hash of ranker.json; dataset fingerprint;
                            parent = the serving retriever's checkpoint (and its file hash);
                            extra.retrievers = every retriever checkpoint with its hash;
                            extra.fit_stats = rows, times, best validation NDCG@10

``load_ranker`` reads the weights through ``recsys.utils.artifacts.load_torch``
(``weights_only=True``), checks the config against its recorded hash and the dataset
fingerprint against the serving dataset, and refuses a mismatch with a ``ProvenanceError``
that names the command that rebuilds the ranker. ``load_ranker_run`` does so for the
``model/`` of a training run (``recsys.train``: the rebuild command is the run's recorded one)
and also checks the served two-tower checkpoint against the one the ranker was trained behind.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from recsys.models.lit_ranker import LitRanker
from recsys.ranking.features import FeatureSpec
from recsys.utils.artifacts import (Provenance, ProvenanceError, check_match, dataset_fingerprint, file_hash, hash_of,
                                    load_torch, read_provenance, write_provenance)

log = logging.getLogger(__name__)

WEIGHTS, CONFIG = "ranker.pt", "ranker.json"
REBUILD = "python -m recsys.train experiment=ml100k/dlrm"


@dataclass
class SavedRanker:
    model: LitRanker
    spec: FeatureSpec
    config: dict
    provenance: Provenance


def save_ranker(directory: str | Path, model: LitRanker, spec: FeatureSpec, dataset_dir: str | Path,
                retrievers: dict[str, str | Path | None] | None = None, extra: dict | None = None,
                stats: dict | None = None) -> Path:
    """Write the ranker to ``directory``; ``retrievers``: name -> checkpoint (``serving`` is the parent).

    ``extra`` joins the config (and its hash: what produced the ranker); ``stats`` (row counts,
    times, the best validation NDCG) go into the provenance record only.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), d / WEIGHTS)
    config = {"ranker": json.loads(json.dumps(dict(model.hparams))), "features": spec.to_dict(), **(extra or {})}
    # keys unsorted: the order of ``cardinalities`` is the model's feature order F
    (d / CONFIG).write_text(json.dumps(config, indent=2))
    ckpts = {k: {"path": str(p), "hash": file_hash(p)} for k, p in (retrievers or {}).items() if p is not None}
    serving = ckpts.get("serving")
    write_provenance(d, Provenance(
        kind="ranker", config_hash=hash_of(config), dataset_fingerprint=dataset_fingerprint(dataset_dir),
        parent=serving["path"] if serving else None, parent_hash=serving["hash"] if serving else None,
        extra={"retrievers": ckpts, "weights_hash": file_hash(d / WEIGHTS), "fit_stats": dict(stats or {})}))
    return d


def load_ranker(directory: str | Path, dataset_dir: str | Path, rebuild: str = REBUILD) -> SavedRanker:
    """Load a ranker saved by :func:`save_ranker` for serving on ``dataset_dir`` (checked);
    ``rebuild``: the command an error names."""
    d = Path(directory)
    if not (d / CONFIG).is_file():
        raise FileNotFoundError(f"{d / CONFIG}: not found; train a ranker with `{rebuild}`")
    prov = read_provenance(d, rebuild=rebuild)
    if prov.kind != "ranker":
        raise ProvenanceError(f"{d}: provenance says {prov.kind!r}, not a ranker")
    config = json.loads((d / CONFIG).read_text())
    check_match(f"{d / CONFIG} and its provenance record", hash_of(config), prov.config_hash, rebuild)
    check_match(f"the ranker's dataset ({d}) and the serving dataset ({dataset_dir})",
                dataset_fingerprint(dataset_dir), prov.dataset_fingerprint, rebuild)
    model = LitRanker(**config["ranker"])
    model.load_state_dict(load_torch(d / WEIGHTS))
    return SavedRanker(model.eval(), FeatureSpec(**config["features"]), config, prov)


def load_ranker_run(run_dir: str | Path, dataset_dir: str | Path, two_tower_run: str | Path | None = None,
                    two_tower_checkpoint: str = "best", rebuild: str = REBUILD) -> SavedRanker:
    """The ranker of a ``recsys.train`` run (``<run>/model/``; the run directory or its stable name),
    checked as :func:`load_ranker` does and, with ``two_tower_run``, against the served two-tower:
    the file ``load_two_tower_run(two_tower_run, ..., two_tower_checkpoint)`` loads must be the one
    (hash) the ranker recorded as its parent, since its two-tower score and rank features came from it.
    ``rebuild``: the training command an error names when the run has none recorded (its experiment)."""
    from recsys.ranking.candidates import two_tower_checkpoint as checkpoint_of
    from recsys.utils import run_dir as R

    named = Path(run_dir)
    if not named.exists():
        raise FileNotFoundError(f"{named}: no ranker run; train one behind the served two-tower run with `{rebuild}`")
    run = R.resolve_run(named)
    recorded = read_provenance(run).extra.get("command") if (run / "provenance.json").is_file() else None
    rebuild = recorded or rebuild
    saved = load_ranker(run / "model", dataset_dir, rebuild)
    log.info("ranker %s (trained behind the two-tower checkpoint %s)", run, saved.provenance.parent)
    if two_tower_run is None:
        return saved
    served = checkpoint_of(two_tower_run, two_tower_checkpoint)
    trained_behind = saved.config.get("retriever_run")
    if trained_behind is None or os.path.abspath(trained_behind) != os.path.abspath(two_tower_run):
        rebuild = f"{rebuild} model.module.retriever_run={two_tower_run}"
    name = saved.config.get("retriever_artifact") or "two_tower"
    node = ((saved.config.get("candidates") or {}).get("artifacts") or {}).get(name) or {}
    if node.get("checkpoint", "best") != two_tower_checkpoint:
        rebuild = f"{rebuild} model.module.candidates.node.artifacts.{name}.checkpoint={two_tower_checkpoint}"
    if saved.provenance.parent_hash is None:
        raise ProvenanceError(f"{run} records no two-tower checkpoint, so it cannot be checked against the served "
                              f"{served}; retrain it with `{rebuild}`")
    check_match(f"the two-tower checkpoint the ranker {run.name} was trained behind ({saved.provenance.parent}) and the "
                f"served one ({served}) (file hashes)", file_hash(served) if served.is_file() else "missing",
                saved.provenance.parent_hash, rebuild)
    return saved
