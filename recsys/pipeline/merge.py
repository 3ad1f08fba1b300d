"""Vectorised reciprocal-rank-fusion merger for the request path.

Same contract and output as ``recsys.retrieval.merge.CandidateMerger`` (per-source
caps, ``sources`` = "a+b", features ``<name>_score`` (NaN where absent) and
``<name>_rank`` (-1 where absent), fused score sum_s w_s / (rrf_k + rank_s + 1);
RRF: Cormack, Clarke & Buettcher, SIGIR 2009), but with numpy instead of a
Python loop per candidate: ~1,000 candidates merge in well under a millisecond
instead of ~10 ms, which matters for the p99 budget of the serving path
(``scripts/bench_pipeline.py``). ``tests/pipeline/test_pipeline_merge.py``
checks that both mergers agree row for row.
"""

from __future__ import annotations

import numpy as np

from recsys.pipeline.candidates import Candidates


class RRFMerger:
    """Args: caps per source, default cap, source weights in the fusion, ``rrf_k``."""

    def __init__(self, caps: dict[str, int] | None = None, default_cap: int = 200,
                 weights: dict[str, float] | None = None, rrf_k: float = 60.0) -> None:
        self.caps, self.default_cap = dict(caps or {}), default_cap
        self.weights, self.rrf_k = dict(weights or {}), rrf_k

    def __call__(self, lists: dict[str, Candidates], k: int | None = None) -> Candidates:
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
            np.add.at(fused, rows, self.weights.get(n, 1.0) / (self.rrf_k + rank + 1))
            feats[f"{n}_score"], feats[f"{n}_rank"] = score, r
            member[s, rows] = True
        # label by membership bitmask: 2^S strings built once instead of one join per candidate
        code = (member.astype(np.int64) << np.arange(len(names))[:, None]).sum(0)  # (U,)
        table = np.array(["+".join(n for b, n in enumerate(names) if c >> b & 1) for c in range(1 << len(names))], dtype=object)
        labels = table[code]
        merged = Candidates(items, fused.astype(np.float32), labels, feats).sorted()
        return merged.head(k) if k is not None else merged
