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
that names the command that rebuilds the ranker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from recsys.models.lit_ranker import LitRanker
from recsys.ranking.features import FeatureSpec
from recsys.utils.artifacts import (Provenance, ProvenanceError, check_match, dataset_fingerprint, file_hash, hash_of,
                                    load_torch, read_provenance, write_provenance)

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


def load_ranker(directory: str | Path, dataset_dir: str | Path) -> SavedRanker:
    """Load a ranker saved by :func:`save_ranker` for serving on ``dataset_dir`` (checked)."""
    d = Path(directory)
    if not (d / CONFIG).is_file():
        raise FileNotFoundError(f"{d / CONFIG}: not found; train a ranker with `{REBUILD}`")
    prov = read_provenance(d, rebuild=REBUILD)
    if prov.kind != "ranker":
        raise ProvenanceError(f"{d}: provenance says {prov.kind!r}, not a ranker")
    config = json.loads((d / CONFIG).read_text())
    check_match(f"{d / CONFIG} and its provenance record", hash_of(config), prov.config_hash, REBUILD)
    check_match(f"the ranker's dataset ({d}) and the serving dataset ({dataset_dir})",
                dataset_fingerprint(dataset_dir), prov.dataset_fingerprint, REBUILD)
    model = LitRanker(**config["ranker"])
    model.load_state_dict(load_torch(d / WEIGHTS))
    return SavedRanker(model.eval(), FeatureSpec(**config["features"]), config, prov)
