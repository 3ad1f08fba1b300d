"""The multi-stage recommender: candidate sources, a merger, then stages in order.

    ctx -> sources (each ~N_s candidates) -> merger (dedupe, fuse, ~1,000;
           ``recsys.retrieval.merge.CandidateMerger``: reciprocal-rank fusion)
        -> stages[0] -> stages[1] -> ... -> head(k)

A source is a plain object with a ``name`` and ``__call__(ctx, k) -> Candidates``
(``recsys.retrieval.sources``: two-tower ANN, item-to-item, popularity, content);
a stage is ``__call__(ctx, cands) -> Candidates``. Both are built by Hydra
``instantiate`` from ``configs/pipeline/*.yaml`` (see :func:`build_pipeline`).
Switching a stage or source off is one override that sets it to null
(``pipeline.stages.mmr=null``): a null entry is simply absent from the list.

Every call records, in ``cands.trace``: ``latency_ms`` per source and stage
(plus ``total``), ``counts`` (list length after each step) and whatever the
stages add (``removed`` by filters, ``fallbacks``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence


from recsys.core.candidates import Candidates, UserContext
from recsys.retrieval.merge import CandidateMerger


class Pipeline:
    """Sources -> merger -> stages -> top ``k``.

    Args:
        sources: name -> source (None entries are switched off).
        merger: fuses the source lists into one candidate list (``merger(lists) -> Candidates``).
        stages: name -> stage, in order (None entries are switched off), or a list.
        k: final list length (a request's ``constraints.max_results`` may lower it).
        per_source: how many candidates each source is asked for.
    """

    def __init__(self, sources: Mapping[str, object], merger, stages: Mapping[str, object] | Sequence | None = None,
                 k: int = 10, per_source: int = 300):
        self.sources = {n: s for n, s in dict(sources).items() if s is not None}
        if not self.sources:
            raise ValueError("pipeline needs at least one candidate source")
        if stages is None:
            stages = {}
        if not isinstance(stages, Mapping):
            stages = {getattr(s, "name", type(s).__name__): s for s in stages}
        self.stages = {n: s for n, s in dict(stages).items() if s is not None}
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.merger, self.k, self.per_source = merger, k, per_source

    def __call__(self, ctx: UserContext, k: int | None = None) -> Candidates:
        k = k or self.k
        if ctx.constraints.max_results is not None:
            k = min(k, ctx.constraints.max_results)
        latency: dict[str, float] = {}
        counts: dict[str, int] = {}
        t_start = time.perf_counter()
        lists = {}
        for name, source in self.sources.items():
            t = time.perf_counter()
            lists[name] = source(ctx, self.per_source)
            latency[f"source/{name}"] = (time.perf_counter() - t) * 1e3
            counts[f"source/{name}"] = len(lists[name])
        t = time.perf_counter()
        cands = self.merger(lists)
        latency["merge"] = (time.perf_counter() - t) * 1e3
        counts["merge"] = len(cands)
        trace = cands.trace
        trace["latency_ms"], trace["counts"] = latency, counts
        for name, stage in self.stages.items():
            t = time.perf_counter()
            cands = stage(ctx, cands)
            cands.trace = trace  # stages that build new Candidates keep the shared trace
            latency[name] = (time.perf_counter() - t) * 1e3
            counts[name] = len(cands)
        cands = cands.head(k)
        latency["total"] = (time.perf_counter() - t_start) * 1e3
        return cands


def build_pipeline(cfg, **objects) -> Pipeline:
    """Instantiate a ``configs/pipeline/*.yaml`` node.

    ``objects`` (``catalog=``, ``dataset=``, models...) are handed to every
    source and stage whose constructor names them, so YAML holds only
    hyper-parameters and data-derived objects are built once, in code.
    """
    from omegaconf import DictConfig, OmegaConf

    from recsys.core.inject import instantiate_with

    hint = "e.g. text_emb: prepare with data.text_embeddings=true; or switch the entry off with =null"

    def make(node):
        return None if node is None else instantiate_with(node, required_hint=hint, **objects)

    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    sources = {n: make(s) for n, s in (cfg.get("sources") or {}).items()}
    stages = {n: make(s) for n, s in (cfg.get("stages") or {}).items()}
    merger = make(cfg.merger) if cfg.get("merger") is not None else CandidateMerger()
    return Pipeline(sources, merger, stages, k=int(cfg.get("k", 10)), per_source=int(cfg.get("per_source", 300)))
