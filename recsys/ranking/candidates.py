"""The serving pipeline's candidate generation, rebuilt on a chosen set of visible interactions.

The ranker must be trained on what it re-ranks when serving, so its candidates come from the
same pipeline config (``configs/pipeline/*.yaml``: its ``artifacts``, ``sources``, ``merger`` and
``per_source``), built by the pipeline's own factory (``recsys.pipeline.pipeline.build_pipeline``)
with the data-derived objects of the visible interactions (``pipeline_objects``): the inner
training part for training lists, the training part for validation and offline evaluation.
An artifact the ranker supplies itself (the two-tower it fitted, as ``two_tower=(model, flat
index)``: :func:`fitted_two_tower`) is injected under the artifact's name instead of being
loaded from the config's node; the sources that name it are the config's own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from recsys.pipeline.pipeline import Pipeline, build_pipeline
from recsys.pipeline.recommender import pipeline_objects


def plain_config(node) -> dict:
    """A pipeline config node handed over un-instantiated (``_recursive_: false`` in the model config),
    resolved where it sits in the composed config (its interpolations name ``paths``, ``data``...),
    as plain containers."""
    if node is None:
        return {}
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def fitted_two_tower(model):
    """``(model, flat ItemIndex over its item tower)``: the ``two_tower`` artifact of a two-tower fitted
    in memory (anything with ``item_embeddings()``), shaped like ``load_two_tower``'s."""
    from recsys.retrieval.index import ItemIndex

    emb = model.item_embeddings().detach().cpu().numpy().astype(np.float32)  # (N, D)
    return model, ItemIndex("flat", device="cpu").build(emb)


def two_tower_checkpoint(run_dir: str | Path, checkpoint: str = "best") -> Path:
    """The checkpoint file of a two-tower run that ``load_two_tower_run(run_dir, ..., checkpoint)`` loads
    (the stable name resolved to the run's own directory): what a ranker records and serving checks."""
    from recsys.utils import run_dir as R

    return R.checkpoint_file(R.resolve_run(run_dir), checkpoint)


def candidate_pipeline(candidates: DictConfig | dict, dataset, visible, split, dataset_dir, text_emb,
                       artifacts: dict | None = None, stages: dict | None = None) -> Pipeline:
    """A ``Pipeline`` with the config's sources and merger on ``visible`` (``stages`` after them, none by default).

    ``artifacts``: name -> object replacing the config's artifact of that name (its node is then not
    built); the config's other artifacts are loaded from their nodes as in serving.
    """
    cfg = plain_config(candidates)
    given = dict(artifacts or {})
    declared = cfg.get("artifacts") or {}
    unknown = set(given) - set(declared)
    if unknown:
        raise ValueError(f"the candidate config declares no artifact {sorted(unknown)} (artifacts: {sorted(declared)})")
    node = {"artifacts": {n: a for n, a in declared.items() if n not in given},
            "sources": cfg.get("sources") or {}, "merger": cfg.get("merger"),
            "per_source": cfg.get("per_source", 300), "k": 10}
    objects = {**pipeline_objects(dataset, visible, split, dataset_dir, text_emb), **given}
    built = build_pipeline(OmegaConf.create(node), **objects)
    return Pipeline(built.sources, built.merger, stages or {}, k=built.k, per_source=built.per_source)


def source_names(candidates: DictConfig | dict) -> list[str]:
    """The config's switched-on source names, in order (the ranker's ``<s>_score`` features)."""
    return [n for n, s in (candidates.get("sources") or {}).items() if s is not None]
