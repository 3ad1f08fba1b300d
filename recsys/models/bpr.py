"""BPR-MF: matrix factorisation trained with Bayesian Personalized Ranking.

Rendle, Freudenthaler, Gantner, Schmidt-Thieme 2009, "BPR: Bayesian
Personalized Ranking from Implicit Feedback" (UAI). The model is
x_ui = <w_u, h_i> + b_i (the item bias is common in implementations, e.g.
LightFM/Cornac; it lets the model express popularity cheaply). The loss
lives in ``lit_bpr.py``; this module only scores.
"""

from __future__ import annotations

import torch
from torch import nn

from recsys.data.history import History


class BPRMF(nn.Module):
    """User and item embeddings (D) plus an item bias.

    Args:
        n_users, n_items: table sizes (from ``DatasetMeta``).
        dim: embedding dimension D.
        init_std: std of the normal initialisation (small, as in the paper's
            N(0, 0.01) initialisation, so early scores are near zero).
    """

    def __init__(self, n_users: int, n_items: int, dim: int = 64, init_std: float = 0.01) -> None:
        super().__init__()
        if n_users <= 0 or n_items <= 0 or dim <= 0:
            raise ValueError(f"need positive sizes, got n_users={n_users}, n_items={n_items}, dim={dim}")
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        self.item_bias = nn.Embedding(n_items, 1)
        nn.init.normal_(self.user.weight, std=init_std)
        nn.init.normal_(self.item.weight, std=init_std)
        nn.init.zeros_(self.item_bias.weight)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """users (B,), items (B,) or (B, M) -> scores of the same shape as items."""
        u = self.user(users)  # (B, D)
        v = self.item(items)  # (B, D) or (B, M, D)
        if items.dim() == 2:
            return torch.einsum("bd,bmd->bm", u, v) + self.item_bias(items).squeeze(-1)
        return (u * v).sum(-1) + self.item_bias(items).squeeze(-1)

    def score(self, history: History) -> torch.Tensor:
        """(B, N) scores of every item for ``history.users`` (history items are not used:
        BPR-MF is transductive, the user's embedding already encodes the training history)."""
        u = self.user(history.users.to(self.user.weight.device))  # (B, D)
        return u @ self.item.weight.T + self.item_bias.weight.T  # (B, N)
