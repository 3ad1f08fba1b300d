"""Lightning callback: full-ranking evaluation of the validation stage at epoch end.

Logs ``val/ndcg@10``, ``val/recall@20``, ... through ``pl_module.log`` so
``ModelCheckpoint``/``EarlyStopping``/Optuna can monitor them. Ranking
metrics need the whole catalogue scored per user, which a per-batch
``validation_step`` cannot give, hence a callback around the ``Evaluator``.

It runs once per epoch: at the end of the validation loop when the
datamodule has one, otherwise at the end of the training epoch (Lightning
puts ``ModelCheckpoint`` after other callbacks, so the metric is logged
before the checkpoint reads it).

Under DDP (``trainer=ddp`` / ``ddp_sim``) only global rank 0 evaluates (the
full catalogue for every user: splitting users would need a reduction of
every metric) and broadcasts the result; every rank then logs the same
values, because ``ModelCheckpoint`` and ``EarlyStopping`` run on every rank
and must see the monitored key and take the same decision. Loggers write on
rank 0 only (Lightning's rule).
"""

from __future__ import annotations

import logging

import pytorch_lightning as pl

from recsys.data.schema import Dataset, Split
from recsys.eval.evaluator import Evaluator

log = logging.getLogger(__name__)


class RankingEvalCallback(pl.Callback):
    """Args:
    evaluator: the ``Evaluator`` (its ks/metrics decide what is logged).
    dataset, split: what to evaluate on.
    stage: split part, ``valid`` by default (keys ``val/...``).
    every_n_epochs: evaluate every n-th epoch (and never during the sanity check).
    """

    def __init__(self, evaluator: Evaluator, dataset: Dataset, split: Split, stage: str = "valid", every_n_epochs: int = 1) -> None:
        if every_n_epochs <= 0:
            raise ValueError(f"every_n_epochs must be positive, got {every_n_epochs}")
        self.evaluator, self.dataset, self.split = evaluator, dataset, split
        self.stage, self.every_n_epochs = stage, every_n_epochs
        self._done_epoch: int | None = None
        self.last_metrics: dict = {}

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if trainer.sanity_checking or self._done_epoch == epoch or (epoch + 1) % self.every_n_epochs:
            return
        self._done_epoch = epoch
        metrics = self.evaluator.evaluate(pl_module, self.dataset, self.split, self.stage) if trainer.is_global_zero else None
        if trainer.world_size > 1:
            metrics = trainer.strategy.broadcast(metrics, src=0)
        self.last_metrics = metrics
        for key, value in metrics.items():
            if isinstance(value, (int, float)):  # "protocol" is a string label, not a metric
                # Equal on every rank already; sync_dist's mean of equal values keeps them (and silences
                # Lightning's per-key warning about unsynchronised epoch-level logging).
                pl_module.log(key, float(value), prog_bar=key.endswith("ndcg@10"), on_epoch=True, sync_dist=trainer.world_size > 1)
        if trainer.is_global_zero:
            log.info("epoch %d %s", epoch, {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float) and "@10" in k})

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._run(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._run(trainer, pl_module)  # no-op when validation already ran this epoch
