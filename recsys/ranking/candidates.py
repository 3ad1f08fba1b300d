"""The serving pipeline's candidate generation, rebuilt on a chosen set of visible interactions.

The ranker must be trained on what it re-ranks when serving, so its candidates come from the
same pipeline config (``configs/pipeline/*.yaml``: its ``sources``, ``merger`` and
``per_source``), built by the pipeline's own factory (``recsys.pipeline.pipeline.build_pipeline``)
with the data-derived objects of the visible interactions (``pipeline_objects``): the inner
training part for training lists, the training part for validation and offline evaluation.
The one source the ranker fits itself (``retriever_source``, the two-tower) is replaced by a
``TwoTowerSource`` over the fitted model and an exact in-memory index of its item tower.
"""

from __future__ import annotations

import numpy as np
from omegaconf import DictConfig, OmegaConf

from recsys.pipeline.pipeline import Pipeline, build_pipeline
from recsys.pipeline.recommender import pipeline_objects


def plain_config(node) -> dict:
    """A pipeline config node handed over un-instantiated (``_recursive_: false`` in the model config), as plain containers."""
    return OmegaConf.to_container(OmegaConf.create(node), resolve=True) if node is not None else {}


def two_tower_source(model, name: str):
    """A ``TwoTowerSource`` over a fitted two-tower (anything with ``item_embeddings()``) and a flat index."""
    from recsys.retrieval.index import ItemIndex
    from recsys.retrieval.sources import TwoTowerSource

    emb = model.item_embeddings().detach().cpu().numpy().astype(np.float32)
    return TwoTowerSource(model, ItemIndex("flat", device="cpu").build(emb), name=name)


def candidate_pipeline(candidates: DictConfig | dict, dataset, visible, split, dataset_dir, text_emb,
                       retriever_source: str | None = None, retriever_model=None, stages: dict | None = None) -> Pipeline:
    """A ``Pipeline`` with the config's sources and merger on ``visible`` (``stages`` after them, none by default).

    ``retriever_model``: a fitted two-tower that replaces the source named ``retriever_source``
    (the config's own node, e.g. a run directory, is then not built). Without it every source is
    built from the config, the two-tower from its run directory as in serving.
    """
    cfg = OmegaConf.create(candidates if not isinstance(candidates, DictConfig) else OmegaConf.to_container(candidates))
    names = [n for n, s in (cfg.get("sources") or {}).items() if s is not None]
    replace = retriever_model is not None
    if replace and retriever_source not in names:
        raise ValueError(f"the candidate config has no source {retriever_source!r} to replace (sources: {names})")
    node = {"sources": {n: (None if replace and n == retriever_source else cfg.sources[n]) for n in names},
            "merger": cfg.get("merger"), "per_source": cfg.get("per_source", 300), "k": 10}
    objects = pipeline_objects(dataset, visible, split, dataset_dir, text_emb)
    built = build_pipeline(OmegaConf.create(node), **objects)
    sources = {n: (two_tower_source(retriever_model, n) if replace and n == retriever_source else built.sources[n]) for n in names}
    # same source order as the config: the merger's first-appearance order and labels depend on it
    return Pipeline(sources, built.merger, stages or {}, k=built.k, per_source=built.per_source)


def source_names(candidates: DictConfig | dict) -> list[str]:
    """The config's switched-on source names, in order (the ranker's ``<s>_score`` features)."""
    return [n for n, s in (candidates.get("sources") or {}).items() if s is not None]
