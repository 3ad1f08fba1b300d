"""LightningModule training ``SASRec`` (Kang & McAuley 2018) on ``SequenceDataModule`` batches.

Loss: ``ce`` (default) is softmax cross-entropy over all N items at every
position; ``bce`` is the paper's binary cross-entropy with one sampled
negative per position. We default to CE because on catalogues of this size
(ML-100K: ~1.3k items) the full softmax is cheap, and Klenitskiy & Vasilev
2023 ("Turning Dross Into Gold Loss: is BERT4Rec really better than
SASRec?", RecSys) show SASRec with CE clearly beats the one-negative BCE
version; ``bce`` stays available to reproduce the paper.

Train batch: ``seq, target, neg`` (B, L) item ids + 1 (0 = padding / no target).
Val batch: ``seq`` (B, L), ``target`` (B,) the held-out item + 1.
"""

from __future__ import annotations

from typing import Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from recsys.data.history import History
from recsys.data.schema import DatasetMeta
from recsys.models.sasrec import SASRec


class LitSASRec(pl.LightningModule):
    """Args:
    meta: dataset metadata (N items).
    max_len, dim, n_blocks, n_heads, dropout, attn_dropout, ffn_dim, activation, norm,
    scale_embeddings, init: ``SASRec`` architecture (``recsys.models.sasrec``).
    loss: ``ce`` (full softmax) or ``bce`` (one negative per position, the paper's).
    optimizer: ``functools.partial`` of a torch optimiser; default Adam(lr=1e-3).
    """

    def __init__(self, meta: DatasetMeta, max_len: int = 50, dim: int = 64, n_blocks: int = 2, n_heads: int = 1,
                 dropout: float = 0.2, attn_dropout: float | None = None, ffn_dim: int | None = None,
                 activation: str = "relu", norm: str = "pre", scale_embeddings: bool = True, init: str = "xavier",
                 loss: str = "ce", optimizer: Callable | None = None) -> None:
        super().__init__()
        if loss not in ("ce", "bce"):
            raise ValueError(f"loss must be 'ce' or 'bce', got {loss!r}")
        self.save_hyperparameters(ignore=["optimizer"])
        self.net = SASRec(meta.n_items, max_len, dim, n_blocks, n_heads, dropout, attn_dropout, ffn_dim,
                          activation, norm, scale_embeddings, init)
        self.loss_name = loss
        self.optimizer_factory = optimizer

    def sequence_loss(self, batch: dict) -> torch.Tensor:
        seq, target = batch["seq"], batch["target"]
        hidden = self.net(seq)  # (B, L, D)
        mask = target > 0  # (B, L) positions with a next item
        if self.loss_name == "ce":
            logits = self.net.item_logits(hidden[mask])  # (M, N)
            return F.cross_entropy(logits, target[mask] - 1)
        emb = self.net.item.weight
        pos = (hidden * emb[target]).sum(-1)[mask]  # (M,)
        neg = (hidden * emb[batch["neg"]]).sum(-1)[mask]  # (M,)
        return F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos)) + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.sequence_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["seq"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self.net.item_logits(self.net(batch["seq"])[:, -1])  # (B, N)
        loss = F.cross_entropy(logits, batch["target"] - 1)
        self.log("val/loss", loss, batch_size=batch["seq"].shape[0])
        return loss

    def score(self, history: History) -> torch.Tensor:
        """(B, N) scores for the evaluator and the pipeline."""
        return self.net.score(history)

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            return torch.optim.Adam(self.parameters(), lr=1e-3)
        return self.optimizer_factory(params=self.parameters())
