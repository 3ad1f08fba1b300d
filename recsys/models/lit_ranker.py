"""LightningModule around the DLRM / DCN-v2 ranker: pointwise BCE and/or listwise softmax loss.

The plain model (``recsys.models.dlrm.DLRM``) knows nothing of Lightning; this wrapper owns the
dense-feature standardisation (buffers, so they travel in the state dict), the losses, the
list metrics and the optimiser. Hyperparameters are plain JSON values, so a saved ranker is a
``state_dict`` + a JSON file (``recsys.ranking.two_stage.TwoStageRanker.save``).

Batches are whole candidate lists (``recsys.ranking.data.RankerLists.collate``)::

    dense (R, F_d) float32, sparse KJT (R rows), labels (R,) float32,
    seg (R,) list of each row within the batch (0..Q-1), pos (R,) its position in its list

Losses: ``bce`` (binary cross-entropy per row), ``listwise`` (softmax cross-entropy of the
positive against its list, ListNet with one relevant item: Cao et al. 2007, "Learning to
Rank: From Pairwise Approach to Listwise Approach"), or ``both`` (their sum).
``members > 1`` trains that many rankers side by side on the same batches, each from its own
initialisation and with its own loss, and scores with the mean of their logits (a deep
ensemble, Lakshminarayanan et al. 2017): on ML-100K one ranker's validation NDCG@10 moves by
about +-3% with its initialisation alone, and the mean of several is steadier.
Validation: ``val/ndcg@10`` and ``val/recall@10`` of each list re-ranked by the logits (a list
whose target was not retrieved counts 0), ``val/auc`` pooled over rows, ``val/loss``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl
import torch
from torchmetrics.classification import BinaryAUROC

from recsys.models.dlrm import DLRM, build_dlrm, interaction_factory

LOSSES = ("bce", "listwise", "both")


def padded_lists(values: torch.Tensor, seg: torch.Tensor, pos: torch.Tensor, fill: float) -> torch.Tensor:
    """Rows (R,) of Q lists -> (Q, M) with ``fill`` in the padding."""
    out = torch.full((int(seg.max()) + 1 if seg.numel() else 0, int(pos.max()) + 1 if pos.numel() else 0), fill,
                     dtype=values.dtype, device=values.device)
    out[seg, pos] = values
    return out


def list_ranks(logits: torch.Tensor, labels: torch.Tensor, seg: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """0-based rank of each list's positive under ``logits`` (ties go to the earlier row); -1 if none."""
    s = padded_lists(logits, seg, pos, float("-inf"))  # (Q, M)
    y = padded_lists(labels, seg, pos, 0.0) > 0
    has = y.any(1)
    p = y.float().argmax(1)
    sp = s.gather(1, p[:, None])
    m = torch.arange(s.shape[1], device=s.device)[None, :]
    rank = (s > sp).sum(1) + ((s == sp) & (m < p[:, None])).sum(1)
    return torch.where(has, rank, torch.full_like(rank, -1))


class LitRanker(pl.LightningModule):
    """Args:
    cardinalities: table rows per pooled sparse feature (``RankerFeatures.cardinalities()``).
    num_dense_features: F_d.
    embedding_dim, dense_layers, over_layers: DLRM sizes (the bottom MLP ends at D).
    interaction: ``dot`` (DLRM) or ``dcn`` (DCN-v2, ``cross_layers`` low-rank ``cross_rank`` layers).
    din_items: > 0 adds the DIN attention arch over an item table of that size (``din_history`` long).
    loss: one of :data:`LOSSES`. lr, weight_decay: Adam.
    """

    def __init__(
        self,
        cardinalities: dict[str, int],
        num_dense_features: int,
        embedding_dim: int = 16,
        dense_layers: Sequence[int] = (64,),
        over_layers: Sequence[int] = (64, 32),
        interaction: str = "dot",
        cross_layers: int = 3,
        cross_rank: int | None = 32,
        din_items: int = 0,
        din_history: int = 20,
        loss: str = "listwise",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        members: int = 1,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if int(members) < 1:
            raise ValueError(f"members must be >= 1, got {members!r}")
        self.save_hyperparameters()
        self.hparams["cardinalities"] = {str(k): int(v) for k, v in dict(cardinalities).items()}
        self.hparams["dense_layers"], self.hparams["over_layers"] = list(dense_layers), list(over_layers)
        def build() -> DLRM:
            return build_dlrm(dict(cardinalities), num_dense_features, embedding_dim, tuple(dense_layers),
                              tuple(over_layers), interaction_factory(interaction, cross_layers, cross_rank),
                              din_items=din_items, din_history=din_history)

        # the first member keeps the name ``model`` (state-dict keys ``model.*``: one-member rankers
        # saved before ``members`` existed load unchanged)
        self.model: DLRM = build()
        self.others = torch.nn.ModuleList([build() for _ in range(int(members) - 1)])
        # Standardisation of the dense inputs, fitted on the training rows (set_dense_stats).
        self.register_buffer("dense_mean", torch.zeros(num_dense_features))
        self.register_buffer("dense_std", torch.ones(num_dense_features))
        self.val_auc = BinaryAUROC()
        self._val: dict[str, float] = {}

    def set_dense_stats(self, dense: torch.Tensor) -> None:
        """dense (R, F_d) training rows -> per-feature mean and std (constant features keep std 1)."""
        self.dense_mean.copy_(dense.mean(0))
        std = dense.std(0)
        self.dense_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def member_logits(self, dense: torch.Tensor, sparse) -> torch.Tensor:
        """(members, R) logits of every member."""
        x = (dense - self.dense_mean) / self.dense_std
        return torch.stack([m(x, sparse) for m in (self.model, *self.others)])

    def forward(self, dense: torch.Tensor, sparse) -> torch.Tensor:
        if not len(self.others):
            return self.model((dense - self.dense_mean) / self.dense_std, sparse)  # (R,) logits
        return self.member_logits(dense, sparse).mean(0)  # (R,) the members' mean logit

    def _loss(self, logits, labels, seg, pos) -> torch.Tensor:
        loss = logits.new_zeros(())
        if self.hparams.loss in ("bce", "both"):
            loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        if self.hparams.loss in ("listwise", "both"):
            s = padded_lists(logits, seg, pos, float("-inf"))  # (Q, M)
            y = padded_lists(labels, seg, pos, 0.0)
            keep = y.sum(1) > 0  # lists without a positive carry no listwise signal
            if keep.any():
                logp = torch.log_softmax(s[keep], dim=1)
                loss = loss - (logp.masked_fill(y[keep] == 0, 0.0) * y[keep]).sum(1).div(y[keep].sum(1)).mean()
        return loss

    def training_step(self, batch, batch_idx):
        dense, sparse, labels, seg, pos = batch
        # each member fits on its own (the sum of their losses): trained on the mean they would co-adapt
        loss = sum(self._loss(z, labels, seg, pos) for z in self.member_logits(dense, sparse)) / (1 + len(self.others))
        self.log("train/loss", loss, prog_bar=True, batch_size=int(seg.max()) + 1)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_auc.reset()
        self._val = {"loss": 0.0, "ndcg": 0.0, "recall": 0.0, "lists": 0.0}

    def validation_step(self, batch, batch_idx):
        dense, sparse, labels, seg, pos = batch
        logits = self(dense, sparse)
        q = int(seg.max()) + 1
        self._val["loss"] += float(self._loss(logits, labels, seg, pos)) * q
        rank = list_ranks(logits, labels, seg, pos)
        hit = (rank >= 0) & (rank < 10)
        self._val["ndcg"] += float(torch.where(hit, 1.0 / torch.log2(rank.clamp(min=0).float() + 2.0), torch.zeros(())).sum())
        self._val["recall"] += float(hit.sum())
        self._val["lists"] += q
        self.val_auc.update(torch.sigmoid(logits), labels.long())

    def on_validation_epoch_end(self) -> None:
        n = self._val.get("lists", 0.0)
        if not n:
            return
        self.log_dict({"val/loss": self._val["loss"] / n, "val/ndcg@10": self._val["ndcg"] / n,
                       "val/recall@10": self._val["recall"] / n, "val/auc": self.val_auc.compute()}, prog_bar=True)

    @torch.no_grad()
    def predict_logits(self, rows, batch_size: int = 8192) -> torch.Tensor:
        """(R,) logits for every row of a ``RankerTensors``."""
        was = self.training
        self.eval()
        n = len(rows)
        out = [self(*rows.batch(torch.arange(s, min(s + batch_size, n)))) for s in range(0, n, batch_size)]
        self.train(was)
        return torch.cat(out) if out else torch.zeros(0)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
