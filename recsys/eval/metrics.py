"""Ranking metrics on a hit matrix (pure torch, batched, device-agnostic).

Every function takes

    hits   (U, K) bool   hits[u, i] is True when the i-th recommended item of
                         user u (0-based, best first) is relevant
    n_rel  (U,)   int    number of relevant items of user u (>= 1 for every
                         user the evaluator keeps)
    k      int           cut-off; only ``hits[:, :k]`` is read. A list shorter
                         than k (fewer columns) counts its missing tail as misses.

and returns a per-user tensor ``(U,)`` float32 on the same device; the caller
averages over users. The definitions (RecBole's, which match most papers):

    rank i in 1..K, rel_i in {0, 1}, R = n_rel
    hit_rate@K  = 1[sum_i rel_i > 0]
    precision@K = sum_i rel_i / K
    recall@K    = sum_i rel_i / R
    mrr@K       = 1 / (first i with rel_i = 1), 0 when there is none
    ndcg@K      = DCG / IDCG,  DCG = sum_i rel_i / log2(i + 1),
                  IDCG = sum_{i=1}^{min(R, K)} 1 / log2(i + 1)
    map@K       = sum_i rel_i * precision@i / min(R, K)

With one relevant item per user (leave-one-out) recall@K == hit_rate@K and
map@K == mrr@K. A user with R = 0 scores 0 on every metric (the evaluator
never passes one; the guard only avoids NaN).

``METRICS`` is the RecBole-style declaration: what each metric needs and
whether bigger is better, so the evaluator computes only what is asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


def _cut(hits: torch.Tensor, k: int) -> torch.Tensor:
    """(U, k) float hits, padded with misses when the list is shorter than k."""
    if k <= 0:
        raise ValueError(f"cut-off k must be positive, got {k}")
    if hits.dim() != 2:
        raise ValueError(f"hits must be (U, K), got shape {tuple(hits.shape)}")
    h = hits[:, :k].float()
    if h.shape[1] < k:
        h = torch.nn.functional.pad(h, (0, k - h.shape[1]))
    return h


def _discounts(k: int, device) -> torch.Tensor:
    """(k,) 1 / log2(i + 1) for ranks i = 1..k."""
    return 1.0 / torch.log2(torch.arange(2, k + 2, device=device, dtype=torch.float32))


def hit_rate(hits: torch.Tensor, n_rel: torch.Tensor, k: int) -> torch.Tensor:
    return (_cut(hits, k).sum(1) > 0).float()


def precision(hits: torch.Tensor, n_rel: torch.Tensor, k: int) -> torch.Tensor:
    return _cut(hits, k).sum(1) / k


def recall(hits: torch.Tensor, n_rel: torch.Tensor, k: int) -> torch.Tensor:
    n = n_rel.to(hits.device).float()
    return _cut(hits, k).sum(1) / n.clamp(min=1)


def mrr(hits: torch.Tensor, n_rel: torch.Tensor, k: int) -> torch.Tensor:
    h = _cut(hits, k)
    ranks = torch.arange(1, k + 1, device=h.device, dtype=torch.float32)
    # Reciprocal rank of every hit; the first hit has the largest one.
    return (h / ranks).max(1).values


def ndcg(hits: torch.Tensor, n_rel: torch.Tensor, k: int) -> torch.Tensor:
    h = _cut(hits, k)
    disc = _discounts(k, h.device)
    dcg = (h * disc).sum(1)
    # Ideal DCG: the min(R, K) relevant items all at the top.
    ideal_len = n_rel.to(h.device).long().clamp(min=0, max=k)
    idcg_table = torch.cat([torch.zeros(1, device=h.device), disc.cumsum(0)])  # (k+1,) idcg for 0..k hits
    idcg = idcg_table[ideal_len]
    return torch.where(idcg > 0, dcg / idcg.clamp(min=1e-12), torch.zeros_like(dcg))


def average_precision(hits: torch.Tensor, n_rel: torch.Tensor, k: int) -> torch.Tensor:
    h = _cut(hits, k)
    ranks = torch.arange(1, k + 1, device=h.device, dtype=torch.float32)
    prec_at_i = h.cumsum(1) / ranks  # (U, k) precision@i
    denom = n_rel.to(h.device).float().clamp(min=1, max=k)
    return (prec_at_i * h).sum(1) / denom


@dataclass(frozen=True)
class Metric:
    """A metric's declaration: its function, its inputs, its direction."""

    name: str
    fn: Callable[..., torch.Tensor]
    needs: tuple[str, ...]
    higher_is_better: bool = True


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("recall", recall, ("hits", "n_rel")),
        Metric("precision", precision, ("hits",)),
        Metric("ndcg", ndcg, ("hits", "n_rel")),
        Metric("mrr", mrr, ("hits",)),
        Metric("hit_rate", hit_rate, ("hits",)),
        Metric("map", average_precision, ("hits", "n_rel")),
    )
}


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown ranking metric {name!r}; known: {sorted(METRICS)}") from None
