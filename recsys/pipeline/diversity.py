"""Diversity stages: Maximal Marginal Relevance and per-category caps.

MMR: Carbonell & Goldstein, "The Use of MMR, Diversity-Based Reranking for
Reordering Documents and Producing Summaries", SIGIR 1998. Greedily pick

    argmax_i  lambda * rel(i) - (1 - lambda) * max_{j in S} sim(i, j)

where S is the list chosen so far. ``rel`` is the incoming score min-max
normalised to [0, 1], so that lambda trades it against a cosine similarity
on the same scale. lambda = 1 keeps the incoming order; lambda = 0 is pure
dissimilarity.
"""

from __future__ import annotations

import numpy as np

from recsys.core.candidates import Candidates, UserContext
from recsys.pipeline.catalog import ItemCatalog
from recsys.pipeline.sizing import DEFAULT_K, SizeSpec, as_size


def _rank_scores(k: int) -> np.ndarray:
    """(k,) strictly decreasing scores that encode a chosen order (1, ..., 1/k)."""
    return (np.arange(k, 0, -1) / max(k, 1)).astype(np.float32)


def category_similarity(catalog: ItemCatalog, items: np.ndarray) -> np.ndarray:
    """(K, K) Jaccard overlap of item category sets (fallback when there are no embeddings)."""
    k = len(items)
    onehot = np.zeros((k, len(catalog.categories)), dtype=np.float32)
    for j, i in enumerate(items):
        onehot[j, catalog.category_ids(int(i))] = 1.0
    inter = onehot @ onehot.T
    sizes = onehot.sum(1)
    union = sizes[:, None] + sizes[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)


def mmr_order(relevance: np.ndarray, similarity: np.ndarray, lambda_: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy MMR selection.

    Args:
        relevance: (K,) in [0, 1].
        similarity: (K, K) pairwise similarity.
        lambda_: weight of relevance, in [0, 1].
        k: how many to select (at most K).
    Returns:
        (k,) selected row indices in selection order, and (k,) their MMR values.
    Ties go to the lower row index (the better incoming rank).
    """
    if not 0.0 <= lambda_ <= 1.0:
        raise ValueError(f"MMR lambda must be in [0, 1], got {lambda_}")
    n = len(relevance)
    k = min(k, n)
    chosen = np.zeros(k, dtype=np.int64)
    gains = np.zeros(k, dtype=np.float32)
    max_sim = np.full(n, -np.inf, dtype=np.float64)  # to S; -inf until S is non-empty
    free = np.ones(n, dtype=bool)
    for t in range(k):
        penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
        value = lambda_ * relevance - (1.0 - lambda_) * penalty
        value = np.where(free, value, -np.inf)
        j = int(np.argmax(value))  # first max: ties keep incoming order
        chosen[t], gains[t], free[j] = j, value[j], False
        max_sim = np.maximum(max_sim, similarity[j])
    return chosen, gains


class MMRDiversifier:
    """Re-order the top ``pool`` candidates by MMR and keep ``k``.

    ``k`` and ``pool`` are sizes (``recsys.pipeline.sizing``): fixed ints, or
    relative to the request's k, e.g. ``k={times: 2, min: 20}`` keeps max(2k, 20).
    Similarity is the cosine of ``catalog.embeddings`` (text or two-tower item
    embeddings); a catalogue without embeddings falls back to the Jaccard
    overlap of categories (recorded in the trace).
    """

    name = "mmr"

    def __init__(self, catalog: ItemCatalog, lambda_: float = 0.7, k: SizeSpec = 20, pool: SizeSpec = 100):
        if not 0.0 <= lambda_ <= 1.0:
            raise ValueError(f"MMR lambda must be in [0, 1], got {lambda_}")
        self.catalog, self.lambda_, self.k, self.pool = catalog, lambda_, as_size(k), as_size(pool)

    def __call__(self, ctx: UserContext, cands: Candidates, k: int = DEFAULT_K) -> Candidates:
        cands = cands.head(self.pool(k))
        if len(cands) == 0:
            return cands
        s = cands.scores.astype(np.float64)
        span = s.max() - s.min()
        rel = (s - s.min()) / span if span > 0 else np.ones_like(s)
        if self.catalog.embeddings is not None:
            e = self.catalog.embeddings[cands.items]  # (K, D), unit norm
            sim = e @ e.T
        else:
            sim = category_similarity(self.catalog, cands.items)
            cands.trace.setdefault("fallbacks", []).append("mmr: no embeddings, category overlap used")
        order, gains = mmr_order(rel, sim, self.lambda_, self.k(k))
        out = cands.take(order)
        out.features["mmr_gain"] = gains
        return out.with_scores(_rank_scores(len(out)))


class CategoryCap:
    """Keep at most ``max_per_category`` items of any one category, in order, up to ``k``.

    An item counts against each of its categories. With ``strict=False`` a list
    that the caps leave shorter than ``k`` is topped up with the skipped items,
    placed after all the kept ones (and the trace says so); ``strict=True``
    returns it short. ``max_per_category`` and ``k`` are sizes (fixed, or relative
    to the request's k: ``recsys.pipeline.sizing``).
    """

    name = "category_cap"

    def __init__(self, catalog: ItemCatalog, max_per_category: SizeSpec = 3, k: SizeSpec = 20, strict: bool = True):
        self.catalog, self.cap, self.k, self.strict = catalog, as_size(max_per_category), as_size(k), strict
        if self.cap(1) < 1:  # sizes never shrink as k grows: >= 1 at k=1 is >= 1 everywhere
            raise ValueError(f"max_per_category must be >= 1, got {max_per_category}")

    def __call__(self, ctx: UserContext, cands: Candidates, k: int = DEFAULT_K) -> Candidates:
        keep, cap = self.k(k), self.cap(k)
        # plain Python ints in the loop: numpy's per-call overhead on 1-3 genres was most of this stage's time
        offsets, ids = self.catalog.cat_offsets, self.catalog.cat_ids
        counts = [0] * len(self.catalog.categories)
        kept, skipped = [], []
        for j, i in enumerate(cands.items.tolist()):
            if len(kept) == keep:
                break
            cats = dict.fromkeys(ids[offsets[i]:offsets[i + 1]].tolist())  # (an item counts once per genre)
            if any(counts[c] >= cap for c in cats):
                skipped.append(j)
                continue
            for c in cats:
                counts[c] += 1
            kept.append(j)
        if not self.strict and len(kept) < keep and skipped:
            top_up = skipped[: keep - len(kept)]
            cands.trace.setdefault("fallbacks", []).append(f"category_cap: topped up {len(top_up)} capped items")
            kept = kept + top_up  # capped items go after every uncapped one
        counts_removed = cands.trace.setdefault("removed", {})
        counts_removed[self.name] = counts_removed.get(self.name, 0) + len(skipped)
        return cands.take(np.asarray(kept, dtype=np.int64))
