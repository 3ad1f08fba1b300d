"""The multi-stage recommender: candidate sources, a merger, then stages in order.

    ctx -> sources (each ~N_s candidates) -> merger (dedupe, fuse, ~1,000)
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

import numpy as np

from recsys.pipeline.candidates import Candidates, UserContext


class RRFMerger:
    """Merge source lists by reciprocal-rank fusion and keep ``max_candidates``.

    RRF (Cormack, Clarke & Buettcher, SIGIR 2009): score(i) = sum_s w_s / (c + rank_s(i)),
    rank from 1. Sources score on unrelated scales (inner products, counts,
    cosine), ranks are comparable. Each item's ``sources`` entry lists every
    source that produced it ("two_tower+popularity"), and each source's own
    score is kept as feature ``<source>_score`` (0 where it did not produce it).
    """

    def __init__(self, max_candidates: int = 1000, c: float = 60.0, weights: Mapping[str, float] | None = None):
        self.max_candidates, self.c, self.weights = max_candidates, c, dict(weights or {})

    def __call__(self, lists: Mapping[str, Candidates]) -> Candidates:
        lists = {n: l for n, l in lists.items() if len(l)}
        if not lists:
            return Candidates.empty()
        all_items = np.concatenate([l.items for l in lists.values()])
        uniq, inverse = np.unique(all_items, return_inverse=True)  # (U,)
        fused = np.zeros(len(uniq), dtype=np.float64)
        feats: dict[str, np.ndarray] = {}
        member = np.zeros((len(lists), len(uniq)), dtype=bool)
        start = 0
        for s, (name, l) in enumerate(lists.items()):
            pos = inverse[start : start + len(l)]
            start += len(l)
            # a source may repeat an item: keep its best (first) rank
            first = np.unique(pos, return_index=True)[1]
            pos_u, rank = pos[first], first + 1
            fused[pos_u] += self.weights.get(name, 1.0) / (self.c + rank)
            f = np.zeros(len(uniq), dtype=np.float32)
            f[pos_u] = l.scores[first]
            feats[f"{name}_score"] = f
            member[s, pos_u] = True
        names = list(lists)
        sources = np.array(["+".join(names[s] for s in np.flatnonzero(member[:, u])) for u in range(len(uniq))], dtype=object)
        order = np.argsort(-fused, kind="stable")[: self.max_candidates]
        return Candidates(uniq[order], fused[order], sources[order], {k: v[order] for k, v in feats.items()})


class Pipeline:
    """Sources -> merger -> stages -> top ``k``.

    Args:
        sources: name -> source (None entries are switched off).
        merger: fuses the source lists into one candidate list.
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
    import inspect

    from hydra.utils import get_object, instantiate
    from omegaconf import DictConfig, OmegaConf

    def make(node):
        if node is None:
            return None
        target = node.get("_target_") if isinstance(node, (dict, DictConfig)) else None
        if target is None:
            raise ValueError(f"pipeline entry without _target_: {node}")
        params = inspect.signature(get_object(target)).parameters  # a class or a factory classmethod
        extra = {k: v for k, v in objects.items() if k in params and k not in node}
        # objects go in after Hydra (as a partial's arguments) so it never tries to
        # turn a DataFrame or a dataclass into config
        return instantiate(node, _partial_=True, _convert_="all")(**extra)

    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    sources = {n: make(s) for n, s in (cfg.get("sources") or {}).items()}
    stages = {n: make(s) for n, s in (cfg.get("stages") or {}).items()}
    merger = make(cfg.merger) if cfg.get("merger") is not None else RRFMerger()
    return Pipeline(sources, merger, stages, k=int(cfg.get("k", 10)), per_source=int(cfg.get("per_source", 300)))
