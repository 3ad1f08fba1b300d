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

from recsys.core.candidates import Candidates, UserContext


class CandidateMerger:
    """Args: caps per source, default cap, source weights in the fusion, ``rrf_k``."""

    def __init__(self, caps: dict[str, int] | None = None, default_cap: int = 200,
                 weights: dict[str, float] | None = None, rrf_k: float = 60.0) -> None:
        self.caps, self.default_cap = dict(caps or {}), default_cap
        self.weights, self.rrf_k = dict(weights or {}), rrf_k
        self._tables: dict[tuple[str, ...], np.ndarray] = {}

    def __call__(self, lists: dict[str, Candidates], k: int | None = None) -> Candidates:
        """lists: source name -> its candidates (best first) -> merged (K,), best first.

        Vectorised with numpy (no loop per candidate): ~1,000 candidates merge in well under
        a millisecond, which matters for the p99 budget of the serving path.
        """
        names = list(lists)
        heads = {n: lists[n].head(self.caps.get(n, self.default_cap)) for n in names}
        all_items = np.concatenate([heads[n].items for n in names]) if names else np.zeros(0, np.int64)
        if len(all_items) == 0:
            return Candidates.empty()
        # first-appearance order (source order, then rank), as the reference merger builds rows
        uniq, first = np.unique(all_items, return_index=True)
        order = np.argsort(first, kind="stable")
        items = uniq[order]  # (U,)
        row_of = np.empty(len(uniq), np.int64)
        row_of[order] = np.arange(len(uniq))
        fused = np.zeros(len(items), np.float64)
        feats: dict[str, np.ndarray] = {}
        member = np.zeros((len(names), len(items)), dtype=bool)
        for s, n in enumerate(names):
            h = heads[n]
            rows = row_of[np.searchsorted(uniq, h.items)]  # (K_s,) merged row of each of this source's items
            rank = np.arange(len(h), dtype=np.int64)
            score = np.full(len(items), np.nan, np.float32)
            r = np.full(len(items), -1, np.int64)
            # a source that repeats an item keeps its last occurrence, like the reference loop
            score[rows], r[rows] = h.scores, rank
            fused += np.bincount(rows, weights=self.weights.get(n, 1.0) / (self.rrf_k + rank + 1), minlength=len(items))
            feats[f"{n}_score"], feats[f"{n}_rank"] = score, r
            member[s, rows] = True
        # label by membership bitmask: 2^S strings built once instead of one join per candidate
        code = (member.astype(np.int64) << np.arange(len(names))[:, None]).sum(0)  # (U,)
        labels = self._label_table(tuple(names))[code]
        merged = Candidates(items, fused.astype(np.float32), labels, feats).sorted()
        return merged.head(k) if k is not None else merged


    def _label_table(self, names: tuple[str, ...]) -> np.ndarray:
        """(2^S,) object: the "a+b" label of each membership bitmask, built once per tuple of source names."""
        table = self._tables.get(names)
        if table is None:
            table = np.array(["+".join(n for b, n in enumerate(names) if c >> b & 1) for c in range(1 << len(names))],
                             dtype=object)
            self._tables[names] = table
        return table


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
