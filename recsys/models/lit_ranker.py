"""LightningModule around the DLRM / DCN-v2 ranker: BCE loss, AUC and log loss.

The plain model (``recsys.models.dlrm.DLRM``) knows nothing of Lightning;
this wrapper owns the loss, metrics, logging and optimiser. Unsharded, one
optimiser (Lightning's) steps every parameter. When the same DLRM is sharded
with ``recsys.distributed.sharding.shard_model``, the fused embedding optimiser owns
the tables instead and the loop there steps only the dense parameters.

Batches: (dense (B, F_d) float32, sparse KeyedJaggedTensor with F keys, labels (B,) float32).
Metric keys: ``train/loss``, ``val/loss``, ``val/auc``, ``val/logloss``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torchmetrics.classification import BinaryAUROC

from recsys.models.dlrm import DLRM, build_dlrm


class LitRanker(pl.LightningModule):
    """Args:
    cardinalities: table rows per sparse feature (from the dataset's metadata).
    num_dense_features: F_d.
    embedding_dim, dense_layers, over_layers: DLRM sizes (bottom MLP ends at D).
    interaction: factory ``(F, D) -> module``; None = DLRM dot interaction.
    optimizer: partial ``params -> torch.optim.Optimizer`` (default Adam lr 1e-3).
    """

    def __init__(
        self,
        cardinalities: dict[str, int],
        num_dense_features: int,
        embedding_dim: int = 16,
        dense_layers: tuple[int, ...] = (64,),
        over_layers: tuple[int, ...] = (64, 32),
        interaction: Callable | None = None,
        optimizer: Callable | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["interaction", "optimizer"])
        self.model: DLRM = build_dlrm(dict(cardinalities), num_dense_features, embedding_dim, tuple(dense_layers), tuple(over_layers), interaction)
        self.optimizer_factory = optimizer
        self.val_auc = BinaryAUROC()
        self._val_loss_sum = torch.zeros(())
        self._val_n = 0

    def forward(self, dense: torch.Tensor, sparse) -> torch.Tensor:
        return self.model(dense, sparse)  # (B,) logits

    @torch.no_grad()
    def predict_logits(self, data, batch_size: int = 4096) -> torch.Tensor:
        """(R,) logits for every row of a ``RankingTensors``."""
        was = self.training
        self.eval()
        out = [self(*data.batch(torch.arange(s, min(s + batch_size, len(data))))[:2]) for s in range(0, len(data), batch_size)]
        self.train(was)
        return torch.cat(out) if out else torch.zeros(0)

    def _loss(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        dense, sparse, labels = batch
        logits = self(dense, sparse)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels), logits

    def training_step(self, batch, batch_idx):
        loss, _ = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch[2].numel())
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_auc.reset()
        self._val_loss_sum, self._val_n = torch.zeros(()), 0

    def validation_step(self, batch, batch_idx):
        loss, logits = self._loss(batch)
        n = batch[2].numel()
        self._val_loss_sum = self._val_loss_sum + loss.detach().cpu() * n
        self._val_n += n
        self.val_auc.update(torch.sigmoid(logits), batch[2].long())

    def on_validation_epoch_end(self) -> None:
        if self._val_n == 0:
            return
        logloss = float(self._val_loss_sum / self._val_n)
        self.log_dict({"val/loss": logloss, "val/logloss": logloss, "val/auc": self.val_auc.compute()}, prog_bar=True)

    def configure_optimizers(self):
        factory = self.optimizer_factory or (lambda ps: torch.optim.Adam(ps, lr=1e-3))
        return factory(self.parameters())
