"""Merge the candidate lists of several sources into one deduplicated list.

Each source is capped (``caps[name]``, else ``default_cap``) before merging,
so one source cannot flood the set. Duplicates collapse into one row that
keeps every source that proposed it (``sources`` = ``"two_tower+content"``)
and each source's score and rank as features (``<name>_score``, ``<name>_rank``;
NaN / -1 where that source did not propose the item), which the ranker can
use as inputs. The merged order is reciprocal-rank fusion (Cormack, Clarke,
Buettcher, SIGIR 2009): score = sum over sources of w_s / (rrf_k + rank_s),
because the sources' raw scores live on different scales.
"""

from __future__ import annotations

import time

import numpy as np

from recsys.pipeline.candidates import Candidates, UserContext


class CandidateMerger:
    """Args: caps per source, default cap, source weights in the fusion, ``rrf_k``."""

    def __init__(self, caps: dict[str, int] | None = None, default_cap: int = 200,
                 weights: dict[str, float] | None = None, rrf_k: float = 60.0) -> None:
        self.caps, self.default_cap = dict(caps or {}), default_cap
        self.weights, self.rrf_k = dict(weights or {}), rrf_k

    def __call__(self, lists: dict[str, Candidates], k: int | None = None) -> Candidates:
        """lists: source name -> its candidates (best first) -> merged (K,), best first."""
        names = list(lists)
        rows: dict[int, int] = {}  # item -> merged row
        items: list[int] = []
        for name in names:
            for it in lists[name].items[: self.caps.get(name, self.default_cap)]:
                if int(it) not in rows:
                    rows[int(it)] = len(items)
                    items.append(int(it))
        n = len(items)
        fused = np.zeros(n, np.float64)
        feats: dict[str, np.ndarray] = {}
        proposed = [[] for _ in range(n)]
        for name in names:
            c = lists[name]
            cap = min(len(c), self.caps.get(name, self.default_cap))
            score = np.full(n, np.nan, np.float32)
            rank = np.full(n, -1, np.int64)
            for r in range(cap):
                j = rows[int(c.items[r])]
                score[j], rank[j] = c.scores[r], r
                fused[j] += self.weights.get(name, 1.0) / (self.rrf_k + r + 1)
                proposed[j].append(name)
            feats[f"{name}_score"], feats[f"{name}_rank"] = score, rank
        merged = Candidates(np.asarray(items, np.int64), fused.astype(np.float32),
                            np.asarray(["+".join(p) for p in proposed], dtype=object), feats)
        merged = merged.sorted()
        return merged.head(k) if k is not None else merged


class CandidateGenerator:
    """Runs every source for a request and merges: ``__call__(ctx, k) -> Candidates``.

    ``sources`` are objects with ``name`` and ``__call__(ctx, k)``; each is asked
    for its cap. Per-source counts and latencies go into ``trace["candidates"]``.
    A cold user (no history, no session) uses only ``cold_sources`` when given
    (popularity + content by default in the pipeline config).
    """

    def __init__(self, sources: list, merger: CandidateMerger | None = None, cold_sources: list[str] | None = None) -> None:
        if not sources:
            raise ValueError("CandidateGenerator needs at least one source")
        self.sources, self.merger = list(sources), merger or CandidateMerger()
        self.cold_sources = set(cold_sources) if cold_sources else None

    def __call__(self, ctx: UserContext, k: int = 1000) -> Candidates:
        lists, trace = {}, {}
        for src in self.sources:
            if ctx.is_cold and self.cold_sources is not None and src.name not in self.cold_sources:
                continue
            t0 = time.perf_counter()
            lists[src.name] = src(ctx, self.merger.caps.get(src.name, self.merger.default_cap))
            trace[src.name] = {"n": len(lists[src.name]), "ms": 1000 * (time.perf_counter() - t0)}
        merged = self.merger(lists, k)
        merged.trace["candidates"] = {**trace, "merged": len(merged)}
        return merged
