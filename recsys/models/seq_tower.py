"""A sequential user tower for the two-tower model: a causal Transformer over the recent history.

Papers:
- Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018
  (SASRec): causal self-attention over the last L items, the last position's
  hidden state scores the next item, input and output item vectors shared.
- Yi et al., "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
  Recommendations", RecSys 2019: two towers with normalised outputs, in-batch
  sampled softmax with logQ correction (``two_tower_loss.py``).

Here the Transformer is SASRec's (``sasrec.CausalEncoder``) and its input
vectors are the *item tower's* outputs for the history items: the torchrec
tables of the item tower (id, categories, year) plus the projected text
embedding, so the user and item sides share one item representation as SASRec
shares its table, and a history item the model never saw in training still
enters through its content. The tower reads the ``history`` key of the user
KJT (``UserFeatures.kjt``: the last ``max_history`` items, oldest first, in
``splits.chronological`` order) and ignores the other keys.

Shapes: history KJT B bags -> left-padded ids (B, L) -> item vectors (B, L, D)
-> encoder (B, L, D) -> projection, L2 norm -> (B, L, D); ``forward`` returns
the last position (B, D), ``sequence`` every position (for training on every
next item of a window).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from recsys.models.sasrec import CausalEncoder
from recsys.models.two_tower_loss import full_softmax_loss, sampled_softmax_loss, sampling_log_q

ItemVectors = Callable[[torch.Tensor], torch.Tensor]  # item_idx (M,) -> (M, D)


def left_padded(values: torch.Tensor, lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """Jagged ids (values (nnz,), lengths (B,)) -> (B, max_len) of each bag's last max_len ids, left-padded with -1."""
    b = lengths.numel()
    out = torch.full((b, max_len), -1, dtype=torch.long, device=values.device)
    if b == 0 or values.numel() == 0:
        return out
    ends = torch.cumsum(lengths, 0)  # (B,)
    seg = torch.repeat_interleave(torch.arange(b, device=values.device), lengths)  # (nnz,)
    from_end = ends[seg] - torch.arange(values.numel(), device=values.device) - 1  # 0 = a bag's last id
    keep = from_end < max_len
    out[seg[keep], max_len - 1 - from_end[keep]] = values[keep].long()
    return out


class SeqUserTower(nn.Module):
    """History (ordered) -> user vector, with the item tower's vectors as the sequence input.

    Args:
        dim: D, the item tower's output width (the sequence runs at that width).
        max_len: L, the most recent items read (set it to the model's ``max_history``).
        n_blocks, n_heads, dropout, attn_dropout, ffn_dim, activation, norm: ``CausalEncoder``.
        normalize: L2-normalise the output (the item tower does; scores are cosines).
    """

    reads_item_vectors = True  # TwoTower passes the item tower's lookup into forward
    ebc = ec = None  # no torchrec tables of its own: the history goes through the item tower's

    def __init__(self, dim: int = 64, max_len: int = 50, n_blocks: int = 2, n_heads: int = 2, dropout: float = 0.2,
                 attn_dropout: float | None = None, ffn_dim: int | None = None, activation: str = "relu",
                 norm: str = "pre", normalize: bool = True) -> None:
        super().__init__()
        self.dim, self.max_len, self.normalize = dim, max_len, normalize
        self.encoder = CausalEncoder(dim, max_len, n_blocks, n_heads, dropout, attn_dropout, ffn_dim, activation, norm)
        # Unit-norm item vectors have components ~1/sqrt(D): scale them as SASRec scales its table.
        self.scale = math.sqrt(dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.xavier_normal_(self.encoder.pos.weight)

    @property
    def out_dim(self) -> int:
        return self.dim

    @property
    def feature_keys(self) -> list[str]:
        return ["history"]

    def ids(self, kjt) -> torch.Tensor:
        """(B, L) history item ids from the user KJT, left-padded with -1."""
        hist = kjt["history"]
        return left_padded(hist.values(), hist.lengths(), self.max_len)

    def sequence(self, kjt, item_vectors: ItemVectors) -> torch.Tensor:
        """kjt (user KJT, B rows), item_vectors ids (M,) -> (M, D) -> (B, L, D) outputs at every position.

        Position j's output has read positions <= j only (causal); padding rows are zeros before the norm.
        """
        ids = self.ids(kjt)  # (B, L)
        keep = ids >= 0
        x = torch.zeros(*ids.shape, self.dim, device=ids.device)
        if keep.any():
            x[keep] = item_vectors(ids[keep]).to(x.dtype) * self.scale  # (B, L, D)
        out = self.proj(self.encoder(x, keep))
        return F.normalize(out, dim=-1) if self.normalize else out

    def forward(self, kjt, item_vectors: ItemVectors) -> torch.Tensor:
        """-> (B, D): the output at the last position (the most recent item); an empty history gives
        the vector of the position embedding alone (a defined cold-start vector, no NaN)."""
        return self.sequence(kjt, item_vectors)[:, -1]


def unique_lookup(embed: ItemVectors) -> ItemVectors:
    """Wrap ``embed`` so each distinct id of a call is embedded once (histories repeat items)."""

    def lookup(ids: torch.Tensor) -> torch.Tensor:
        uniq, inverse = torch.unique(ids, return_inverse=True)
        return embed(uniq)[inverse]

    return lookup


def next_item_loss(lit, batch) -> torch.Tensor:
    """Next-item loss of a ``LitTwoTower`` with the sequential tower (or ``softmax="full"``).

    batch: ``TwoTowerBatch`` users (B,), items (B,) one next item per row, or
    (B, L) the next item at every position of a window (-1 = none, right-aligned
    like the tower's output), history B bags (the inputs). The item tower runs
    once per step: over the whole catalogue for ``full`` (its vectors are both
    the sequence input and the softmax's classes), over the batch's distinct
    history and target items for ``sampled``, whose negatives are the batch's M
    targets (in-batch, logQ-corrected with Q = M p_j + n_uniform / N, Yi et al.
    2019) plus ``n_uniform`` uniform items. Reads ``lit``'s user/item features,
    model, softmax, temperature, logq, item_prob and n_uniform.
    """
    users, items, history = batch
    kjt = lit.user_features.kjt(users, history.to(lit.device))
    targets = items.to(lit.device).reshape(len(users), -1)  # (B, T)
    n_items = lit.item_features.n_items
    if lit.softmax == "full":
        table = lit.item_embeddings_of(torch.arange(n_items, device=lit.device))  # (N, D)
        vectors = lambda ids: table[ids]  # noqa: E731
    else:
        needed = torch.unique(torch.cat([history.items.to(lit.device), targets[targets >= 0]]))
        table = lit.item_embeddings_of(needed)  # (U, D)
        vectors = lambda ids: table[torch.searchsorted(needed, ids)]  # noqa: E731
    if targets.shape[1] == 1:
        u = lit.model.users(kjt, vectors)[:, None]  # (B, 1, D)
    elif not lit.model.sequential:
        raise ValueError("window batches (a target at every position) need user_tower='sequential'")
    else:
        u = lit.model.user_tower.sequence(kjt, vectors)[:, -targets.shape[1]:]  # (B, T, D)
    keep = targets >= 0
    u, t = u[keep], targets[keep]  # (M, D), (M,)
    if lit.softmax == "full":
        return full_softmax_loss(u, table, t, lit.temperature)
    log_q = sampling_log_q(lit.item_prob, len(t), lit.n_uniform) if lit.logq else None
    neg = neg_ids = None
    if lit.n_uniform > 0:
        neg_ids = torch.randint(0, n_items, (lit.n_uniform,), device=lit.device)
        neg = lit.item_embeddings_of(neg_ids)  # (n_uniform, D)
    return sampled_softmax_loss(u, vectors(t), t, lit.temperature, log_q[t] if log_q is not None else None,
                                neg, neg_ids, log_q[neg_ids] if log_q is not None and neg_ids is not None else None)
