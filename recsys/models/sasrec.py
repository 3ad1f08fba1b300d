"""SASRec: self-attentive sequential recommendation, and its causal encoder.

Kang & McAuley 2018, "Self-Attentive Sequential Recommendation" (ICDM).
A causal Transformer over the user's last L items; the hidden state at the
last position, dotted with the (shared) item embedding table, scores the next
item. ``CausalEncoder`` is the Transformer alone (positions, blocks, masks) so
the sequential user tower of the two-tower model (``seq_tower.py``) runs the
same blocks over its own item vectors.

Two block layouts, both from reference implementations:

- ``norm="pre"`` (the authors' TensorFlow code): item embeddings scaled by
  sqrt(D), pre-LayerNorm blocks whose attention queries are normalised
  (keys/values are not) with the residual on the normalised query, a final
  LayerNorm, ReLU point-wise FFN of width D.
- ``norm="post"`` (RecBole 1.2.1's ``SASRec``, BERT-style; Sun et al. 2019,
  "BERT4Rec"): LayerNorm of item + position embedding, post-LayerNorm
  residual blocks, GELU FFN of width ``ffn_dim`` (RecBole: 4 D), dropout on
  the attention output and the FFN output, no final norm.

``init="normal"`` is RecBole's (every Linear/Embedding weight N(0, 0.02),
biases 0); ``init="xavier"`` the PyTorch port's (xavier-normal embeddings,
PyTorch defaults elsewhere). Masks: causal, and padded keys are never attended
to (both references mask them) except that a position may always attend to
itself, so an all-padding row has a defined (and discarded) output instead of
NaN. Padding positions are re-zeroed after every block.

Sequences are left-padded: position L-1 is always the most recent item, and
position embeddings count back from it. Item ids inside the model are shifted
by +1 (0 = padding), matching ``recsys.data.datamodules.SequenceDataModule``;
``score`` undoes the shift.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from recsys.data.history import History

NORMS = ("pre", "post")
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class SASRecBlock(nn.Module):
    """One self-attention block: causal multi-head attention + point-wise FFN, both residual."""

    def __init__(self, dim: int, n_heads: int, dropout: float, attn_dropout: float, ffn_dim: int,
                 activation: str, norm: str) -> None:
        super().__init__()
        self.norm_kind, self.n_heads = norm, n_heads
        self.attn_norm = nn.LayerNorm(dim, eps=1e-8 if norm == "pre" else 1e-12)
        self.attn = nn.MultiheadAttention(dim, n_heads, dropout=attn_dropout, batch_first=True)
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-8 if norm == "pre" else 1e-12)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), ACTIVATIONS[activation](), nn.Dropout(dropout),
                                 nn.Linear(ffn_dim, dim), nn.Dropout(dropout))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x (B, L, D), mask (B * heads, L, L) bool True = blocked, keep (B, L, 1) float -> (B, L, D)."""
        if self.norm_kind == "pre":
            q = self.attn_norm(x)
            a, _ = self.attn(q, x, x, attn_mask=mask, need_weights=False)  # (B, L, D)
            x = q + a  # residual on the normalised query, as in the authors' code
            x = x + self.ffn(self.ffn_norm(x))
        else:
            a, _ = self.attn(x, x, x, attn_mask=mask, need_weights=False)
            x = self.attn_norm(x + self.drop(a))
            x = self.ffn_norm(x + self.ffn(x))
        return x * keep


class CausalEncoder(nn.Module):
    """Learned positions + ``n_blocks`` causal self-attention blocks over (B, L, D) input vectors.

    Args:
        dim: D. max_len: L, the longest sequence (positions table size).
        n_blocks, n_heads: depth and heads. dropout: embeddings, FFN and (post)
            attention output. attn_dropout: on attention weights (None = dropout).
        ffn_dim: FFN width (None = D). activation: ``relu`` or ``gelu``.
        norm: ``pre`` (Kang & McAuley's code) or ``post`` (RecBole/BERT); see the module docstring.
    """

    def __init__(self, dim: int, max_len: int, n_blocks: int = 2, n_heads: int = 1, dropout: float = 0.2,
                 attn_dropout: float | None = None, ffn_dim: int | None = None, activation: str = "relu",
                 norm: str = "pre") -> None:
        super().__init__()
        if norm not in NORMS or activation not in ACTIVATIONS:
            raise ValueError(f"norm must be one of {NORMS} and activation one of {sorted(ACTIVATIONS)}; got {norm!r}, {activation!r}")
        if max_len <= 0 or dim % n_heads:
            raise ValueError(f"need max_len > 0 and dim divisible by n_heads; got {max_len}, {dim}/{n_heads}")
        self.dim, self.max_len, self.norm_kind, self.n_heads = dim, max_len, norm, n_heads
        attn_dropout = dropout if attn_dropout is None else attn_dropout
        self.pos = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(SASRecBlock(dim, n_heads, dropout, attn_dropout, ffn_dim or dim, activation, norm)
                                    for _ in range(n_blocks))
        # pre: the final LayerNorm of the authors' code; post: the LayerNorm of the input embedding.
        self.norm = nn.LayerNorm(dim, eps=1e-8 if norm == "pre" else 1e-12)
        self.register_buffer("causal", torch.triu(torch.ones(max_len, max_len, dtype=torch.bool), diagonal=1), persistent=False)

    def mask(self, keep: torch.Tensor) -> torch.Tensor:
        """keep (B, L) bool -> (B * heads, L, L) bool, True = query i may not attend to key j."""
        length = keep.shape[1]
        eye = torch.eye(length, dtype=torch.bool, device=keep.device)
        blocked = self.causal[:length, :length] | (~keep[:, None, :] & ~eye)  # (B, L, L)
        return blocked.repeat_interleave(self.n_heads, dim=0)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) item vectors (0 at padding), keep (B, L) bool real positions -> (B, L, D).

        Left-padded input: position embeddings are indexed so the last column is always L-1.
        """
        b, length, _ = x.shape
        if length > self.max_len:
            raise ValueError(f"sequence length {length} > max_len {self.max_len}")
        x = x + self.pos(torch.arange(self.max_len - length, self.max_len, device=x.device))
        if self.norm_kind == "post":
            x = self.norm(x)
        keep_f = keep.unsqueeze(-1).to(x.dtype)  # (B, L, 1)
        x = self.drop(x) * keep_f
        mask = self.mask(keep)
        for block in self.blocks:
            x = block(x, mask, keep_f)
        return self.norm(x) if self.norm_kind == "pre" else x


def init_normal_(module: nn.Module, std: float = 0.02) -> None:
    """RecBole's initialisation: Linear/Embedding weights N(0, std), biases 0 (MultiheadAttention's too)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.MultiheadAttention):
            nn.init.normal_(m.in_proj_weight, 0.0, std)
            nn.init.zeros_(m.in_proj_bias)


class SASRec(nn.Module):
    """Args:
    n_items: catalogue size N (the table has N + 1 rows; row 0 is padding).
    max_len: L, the number of most recent items the model reads.
    dim, n_blocks, n_heads, dropout, attn_dropout, ffn_dim, activation, norm: ``CausalEncoder``.
    scale_embeddings: multiply item embeddings by sqrt(D) (the authors' code; RecBole does not).
    init: ``xavier`` or ``normal`` (RecBole, std 0.02).
    """

    def __init__(self, n_items: int, max_len: int = 50, dim: int = 64, n_blocks: int = 2, n_heads: int = 1,
                 dropout: float = 0.2, attn_dropout: float | None = None, ffn_dim: int | None = None,
                 activation: str = "relu", norm: str = "pre", scale_embeddings: bool = True, init: str = "xavier") -> None:
        super().__init__()
        if n_items <= 0 or init not in ("xavier", "normal"):
            raise ValueError(f"need n_items > 0 and init 'xavier' or 'normal'; got {n_items}, {init!r}")
        self.n_items, self.max_len, self.dim = n_items, max_len, dim
        self.scale = math.sqrt(dim) if scale_embeddings else 1.0
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.encoder = CausalEncoder(dim, max_len, n_blocks, n_heads, dropout, attn_dropout, ffn_dim, activation, norm)
        if init == "normal":
            init_normal_(self)
        else:
            nn.init.xavier_normal_(self.item.weight)
            nn.init.xavier_normal_(self.encoder.pos.weight)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """seq (B, L) item ids + 1, left-padded with 0 -> hidden states (B, L, D)."""
        return self.encoder(self.item(seq) * self.scale, seq > 0)

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (..., D) -> (..., N) logits over real items (padding row excluded)."""
        return hidden @ self.item.weight[1:].T

    def score(self, history: History) -> torch.Tensor:
        """(B, N) next-item scores from each user's last ``max_len`` items."""
        seq = history.padded(self.max_len, pad=-1) + 1  # (B, L), 0 = padding
        hidden = self(seq.to(self.item.weight.device))  # (B, L, D)
        return self.item_logits(hidden[:, -1])  # (B, N)
