"""Sampled softmax for two-tower retrieval, with logQ correction.

Yi et al., "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
Recommendations", RecSys 2019: with in-batch negatives a popular item shows up
as a negative far more often than under the full softmax, so the model learns
to push popular items down. Subtracting log Q(j) -- the log of the expected
number of times item j is in the sampled set -- from every logit of item j
makes the sampled softmax an (asymptotically) unbiased estimate of the full
one. Yang et al., "Mixed Negative Sampling for Learning Two-tower Neural
Networks in Recommendations", WWW 2020: extra uniformly sampled negatives
reach the long tail that in-batch sampling rarely shows; with both samplers,
item j is expected ``B * p_j + M / N`` times, which is the Q used here.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def sampling_log_q(item_prob: torch.Tensor, batch_size: int, n_uniform: int = 0) -> torch.Tensor:
    """log of the expected count of each item in one batch's negative set.

    item_prob (N,) the unigram probability of each item as a positive (sums to 1),
    batch_size B (in-batch negatives), n_uniform M (uniform negatives) -> (N,).
    """
    n = item_prob.numel()
    return torch.log(batch_size * item_prob + n_uniform / n)


def sampled_softmax_loss(
    user: torch.Tensor,
    item: torch.Tensor,
    item_ids: torch.Tensor,
    temperature: float = 0.05,
    log_q: torch.Tensor | None = None,
    neg_item: torch.Tensor | None = None,
    neg_ids: torch.Tensor | None = None,
    neg_log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """In-batch sampled softmax: row b's positive is column b.

    user (B, D), item (B, D) the positives' embeddings, item_ids (B,);
    log_q (B,) log Q of each in-batch item (None = no correction);
    neg_item (M, D), neg_ids (M,), neg_log_q (M,) optional extra negatives.
    Returns the mean cross-entropy (scalar).

    Columns holding the same item as row b's positive (other than b itself)
    are masked: that item is not a negative for b.
    """
    b = user.shape[0]
    logits = user @ item.T / temperature  # (B, B)
    if log_q is not None:
        logits = logits - log_q[None, :]
    dup = (item_ids[None, :] == item_ids[:, None]) & ~torch.eye(b, dtype=torch.bool, device=user.device)
    logits = logits.masked_fill(dup, float("-inf"))
    if neg_item is not None:
        nl = user @ neg_item.T / temperature  # (B, M)
        if neg_log_q is not None:
            nl = nl - neg_log_q[None, :]
        nl = nl.masked_fill(neg_ids[None, :] == item_ids[:, None], float("-inf"))
        logits = torch.cat([logits, nl], dim=1)  # (B, B + M)
    return F.cross_entropy(logits, torch.arange(b, device=user.device))


def full_softmax_loss(user: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """Softmax over the whole catalogue (small catalogues: every item is a negative, no sampling bias).

    user (M, D), items (N, D) every item's embedding, targets (M,) item_idx -> mean cross-entropy.
    """
    return F.cross_entropy(user @ items.T / temperature, targets)
