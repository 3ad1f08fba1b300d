"""LightningModule that trains ``BPRMF`` with the BPR loss (Rendle et al. 2009).

Batches come from ``recsys.data.datamodules.InteractionDataModule``:
``{"user": (B,), "item": (B,), "neg_items": (B,) or (B, M), "timestamp": (B,)}``.
Loss per (u, i, j): -log sigmoid(x_ui - x_uj), averaged over the M negatives
and the batch, plus L2 on the embeddings touched by the batch (the paper's
per-sample regularisation, not weight decay on the whole table, so rare
items are not shrunk on every step).
"""

from __future__ import annotations

from typing import Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from recsys.data.history import History
from recsys.data.schema import DatasetMeta
from recsys.models.bpr import BPRMF


class LitBPR(pl.LightningModule):
    """Args:
    meta: dataset metadata (table sizes).
    dim: embedding dimension D.
    reg: L2 coefficient on the batch's user/item/negative embeddings.
    optimizer: ``functools.partial`` of a torch optimiser (Hydra ``_partial_: true``);
        default Adam(lr=1e-3).
    """

    def __init__(self, meta: DatasetMeta, dim: int = 64, reg: float = 1e-4, optimizer: Callable | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer"])
        self.net = BPRMF(meta.n_users, meta.n_items, dim)
        self.reg = reg
        self.optimizer_factory = optimizer

    def bpr_loss(self, batch: dict) -> torch.Tensor:
        users, pos, neg = batch["user"], batch["item"], batch["neg_items"]
        if neg.dim() == 1:
            neg = neg.unsqueeze(1)  # (B, 1)
        x_pos = self.net(users, pos)  # (B,)
        x_neg = self.net(users, neg)  # (B, M)
        loss = -F.logsigmoid(x_pos.unsqueeze(1) - x_neg).mean()
        l2 = (
            self.net.user(users).pow(2).sum(-1)
            + self.net.item(pos).pow(2).sum(-1)
            + self.net.item(neg).pow(2).sum(-1).mean(-1)
        ).mean()
        return loss + self.reg * l2

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.bpr_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["user"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.bpr_loss(batch)
        self.log("val/loss", loss, batch_size=batch["user"].shape[0])
        return loss

    def score(self, history: History) -> torch.Tensor:
        """(B, N) scores for the evaluator and the pipeline."""
        return self.net.score(history)

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            return torch.optim.Adam(self.parameters(), lr=1e-3)
        return self.optimizer_factory(params=self.parameters())
