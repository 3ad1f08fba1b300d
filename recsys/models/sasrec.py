"""SASRec: self-attentive sequential recommendation.

Kang & McAuley 2018, "Self-Attentive Sequential Recommendation" (ICDM).
A causal Transformer over the user's last L items; the hidden state at the
last position, dotted with the (shared) item embedding table, scores the next
item. Follows the authors' implementation: item embeddings scaled by
sqrt(D), learned positions, pre-LayerNorm blocks whose attention queries are
normalised (keys/values are not), padding positions re-zeroed after every
block, and only a causal mask (a key-padding mask would give an all-masked
row, hence NaN, for a user without history).

Item ids inside the model are shifted by +1 (0 = padding), matching
``recsys.data.datamodules.SequenceDataModule``; ``score`` undoes the shift.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from recsys.data.history import History


class SASRecBlock(nn.Module):
    """One self-attention block: causal multi-head attention + point-wise FFN, both residual."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim, eps=1e-8)
        self.attn = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-8)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, causal: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x (B, L, D), causal (L, L) bool True = blocked, keep (B, L, 1) float -> (B, L, D)."""
        q = self.attn_norm(x)
        a, _ = self.attn(q, x, x, attn_mask=causal, need_weights=False)  # (B, L, D)
        x = q + a  # residual on the normalised query, as in the authors' code
        x = x + self.ffn(self.ffn_norm(x))
        return x * keep


class SASRec(nn.Module):
    """Args:
    n_items: catalogue size N (the table has N + 1 rows; row 0 is padding).
    max_len: L, the number of most recent items the model reads.
    dim: D. n_blocks, n_heads: Transformer depth and heads. dropout: on
    embeddings, attention and FFN.
    """

    def __init__(self, n_items: int, max_len: int = 50, dim: int = 64, n_blocks: int = 2, n_heads: int = 1, dropout: float = 0.2) -> None:
        super().__init__()
        if n_items <= 0 or max_len <= 0 or dim % n_heads:
            raise ValueError(f"need n_items > 0, max_len > 0, dim divisible by n_heads; got {n_items}, {max_len}, {dim}/{n_heads}")
        self.n_items, self.max_len, self.dim = n_items, max_len, dim
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.pos = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(SASRecBlock(dim, n_heads, dropout) for _ in range(n_blocks))
        self.norm = nn.LayerNorm(dim, eps=1e-8)
        nn.init.xavier_normal_(self.item.weight[1:])
        nn.init.xavier_normal_(self.pos.weight)
        self.register_buffer("causal", torch.triu(torch.ones(max_len, max_len, dtype=torch.bool), diagonal=1), persistent=False)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """seq (B, L) item ids + 1, left-padded with 0 -> hidden states (B, L, D)."""
        b, length = seq.shape
        if length > self.max_len:
            raise ValueError(f"sequence length {length} > max_len {self.max_len}")
        keep = (seq > 0).unsqueeze(-1).float()  # (B, L, 1)
        pos = torch.arange(length, device=seq.device)
        x = self.item(seq) * math.sqrt(self.dim) + self.pos(pos)  # (B, L, D)
        x = self.drop(x) * keep
        causal = self.causal[:length, :length]
        for block in self.blocks:
            x = block(x, causal, keep)
        return self.norm(x)

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (..., D) -> (..., N) logits over real items (padding row excluded)."""
        return hidden @ self.item.weight[1:].T

    def score(self, history: History) -> torch.Tensor:
        """(B, N) next-item scores from each user's last ``max_len`` items."""
        seq = history.padded(self.max_len, pad=-1) + 1  # (B, L), 0 = padding
        hidden = self(seq.to(self.item.weight.device))  # (B, L, D)
        return self.item_logits(hidden[:, -1])  # (B, N)
