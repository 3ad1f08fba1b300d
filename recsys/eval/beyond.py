"""Beyond-accuracy metrics on top-K lists (pure torch, batched).

Inputs share one vocabulary:

    topk        (U, K) int64  recommended item_idx, best first; -1 marks an
                              empty slot (a list shorter than K)
    categories  (N, C) bool   multi-hot item categories
    embeddings  (N, D) float  item embeddings (e.g. all-MiniLM-L6-v2 of the text)
    popularity  (N,)   float  training interaction count per item

Definitions (per user, then averaged by the caller, except coverage):

    coverage@K        |union of all users' top-K items| / N       (one number)
    ild_category@K    mean over pairs i<j of 1 - Jaccard(cat_i, cat_j);
                      two items without any category count as identical
                      (distance 0), so missing metadata never adds diversity
    ild_embedding@K   mean over pairs i<j of 1 - cosine(e_i, e_j)
    novelty@K         mean over the list of -log2(p_i), p_i = c_i / sum_j c_j,
                      with unseen items counted once (c_i := max(c_i, 1)) so
                      the self-information stays finite (Zhou et al. 2010)
    popularity_bias@K mean popularity percentile of the list, mid-rank:
                      pct_i = (#{j: c_j < c_i} + #{j: c_j = c_i} / 2) / N,
                      in (0, 1); 0.5 when every item is equally popular
    arp@K             average recommendation popularity: mean c_i (Abdollahpouri et al. 2019)

Lists with fewer than two items have ILD 0. Empty slots are ignored.
"""

from __future__ import annotations

import torch


def _valid(topk: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, k) item ids with empty slots replaced by 0, and (U, k) bool validity mask."""
    t = topk[:, :k]
    valid = t >= 0
    return t.clamp(min=0), valid


def coverage(topk: torch.Tensor, n_items: int, k: int) -> torch.Tensor:
    """Scalar: share of the catalogue that appears in at least one top-k list."""
    t, valid = _valid(topk, k)
    seen = torch.zeros(n_items, dtype=torch.bool, device=topk.device)
    seen[t[valid]] = True
    return seen.float().mean()


def recommended_items(topk: torch.Tensor, n_items: int, k: int) -> torch.Tensor:
    """(N,) bool: items in at least one top-k list (to accumulate coverage over batches)."""
    t, valid = _valid(topk, k)
    seen = torch.zeros(n_items, dtype=torch.bool, device=topk.device)
    seen[t[valid]] = True
    return seen


def _mean_pairwise(dist: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(U,) mean of dist[u, i, j] over pairs i < j with both slots valid; 0 if no pair."""
    k = dist.shape[1]
    upper = torch.triu(torch.ones(k, k, dtype=torch.bool, device=dist.device), diagonal=1)
    pair = upper & valid[:, :, None] & valid[:, None, :]  # (U, k, k)
    n_pairs = pair.sum((1, 2))
    total = (dist * pair).sum((1, 2))
    return torch.where(n_pairs > 0, total / n_pairs.clamp(min=1), torch.zeros_like(total))


def ild_category(topk: torch.Tensor, categories: torch.Tensor, k: int) -> torch.Tensor:
    """(U,) intra-list diversity: mean pairwise Jaccard distance of category sets."""
    t, valid = _valid(topk, k)
    c = categories.to(topk.device)[t].float()  # (U, k, C)
    inter = c @ c.transpose(1, 2)  # (U, k, k) |a & b|
    size = c.sum(2)  # (U, k)
    union = size[:, :, None] + size[:, None, :] - inter
    # Both sets empty: identical (Jaccard 1) by the documented convention.
    jac = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))
    return _mean_pairwise(1.0 - jac, valid)


def ild_embedding(topk: torch.Tensor, embeddings: torch.Tensor, k: int) -> torch.Tensor:
    """(U,) intra-list diversity: mean pairwise cosine distance of item embeddings."""
    t, valid = _valid(topk, k)
    e = torch.nn.functional.normalize(embeddings.to(topk.device).float(), dim=1)[t]  # (U, k, D)
    cos = e @ e.transpose(1, 2)  # (U, k, k)
    return _mean_pairwise(1.0 - cos, valid)


def _list_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    n = valid.sum(1)
    total = (values * valid).sum(1)
    return torch.where(n > 0, total / n.clamp(min=1), torch.zeros_like(total))


def novelty(topk: torch.Tensor, popularity: torch.Tensor, k: int) -> torch.Tensor:
    """(U,) mean self-information -log2(popularity share) of the recommended items."""
    t, valid = _valid(topk, k)
    c = popularity.to(topk.device).double().clamp(min=1)
    info = (-torch.log2(c / c.sum())).float()  # (N,)
    return _list_mean(info[t], valid)


def popularity_percentile(popularity: torch.Tensor) -> torch.Tensor:
    """(N,) mid-rank percentile of each item's popularity in the catalogue."""
    c = popularity.double()
    s, _ = torch.sort(c)
    below = torch.searchsorted(s, c, right=False)  # #{j: c_j < c_i}
    upto = torch.searchsorted(s, c, right=True)  # #{j: c_j <= c_i}
    return ((below + (upto - below) / 2.0) / c.numel()).float()


def popularity_bias(topk: torch.Tensor, popularity: torch.Tensor, k: int) -> torch.Tensor:
    """(U,) mean popularity percentile of the recommended items (0.5 = catalogue average)."""
    t, valid = _valid(topk, k)
    pct = popularity_percentile(popularity.to(topk.device))
    return _list_mean(pct[t], valid)


def arp(topk: torch.Tensor, popularity: torch.Tensor, k: int) -> torch.Tensor:
    """(U,) average recommendation popularity (mean training count of the list)."""
    t, valid = _valid(topk, k)
    return _list_mean(popularity.to(topk.device).float()[t], valid)


# What each per-user beyond-accuracy metric needs from the evaluator (coverage is
# aggregated separately because it is a property of all lists together).
BEYOND_NEEDS: dict[str, str] = {
    "ild_category": "categories",
    "ild_embedding": "embeddings",
    "novelty": "popularity",
    "popularity_bias": "popularity",
    "arp": "popularity",
}
BEYOND_FNS = {
    "ild_category": ild_category,
    "ild_embedding": ild_embedding,
    "novelty": novelty,
    "popularity_bias": popularity_bias,
    "arp": arp,
}
# Direction of each beyond-accuracy metric (popularity measures: lower = less biased).
HIGHER_IS_BETTER = {"coverage": True, "ild_category": True, "ild_embedding": True, "novelty": True, "popularity_bias": False, "arp": False}
