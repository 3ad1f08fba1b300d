"""Retrievers for the two-stage ranker: anything with ``fit(dataset, split)`` and ``score(history)``.

Fitted recommenders (ItemKNN, Popularity) already have that interface.
``LightningRetriever`` gives it to a trainable LightningModule retriever
(two-tower, BPR) so ``TwoStageRanker`` can fit one on the inner training part
and another on the whole training part without knowing which model it is.
"""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch

from recsys.core.inject import call_with_available
from recsys.data.history import History
from recsys.data.schema import Dataset, DatasetMeta, Split


class LightningRetriever:
    """Train a LightningModule retriever for a fixed number of epochs, then delegate ``score``.

    Args:
        meta: dataset metadata.
        module: factory of the LightningModule (receives ``meta``, ``dataset_dir`` if it takes them).
        datamodule: factory of its DataModule (receives ``dataset``, ``split``, ``meta``, ``dataset_dir``).
        max_epochs: training epochs (no validation: the inner split has none).
        dataset_dir: the prepared dataset directory (text embeddings live there).
    """

    def __init__(self, meta: DatasetMeta, module: Callable, datamodule: Callable, max_epochs: int = 10,
                 dataset_dir: str | None = None, progress: bool = False) -> None:
        self.meta, self.module_factory, self.datamodule_factory = meta, module, datamodule
        self.max_epochs, self.dataset_dir, self.progress = max_epochs, dataset_dir, progress
        self.model = None

    def fit(self, dataset: Dataset, split: Split) -> "LightningRetriever":
        avail = dict(meta=self.meta, dataset=dataset, split=split, dataset_dir=self.dataset_dir)
        self.model = call_with_available(self.module_factory, **avail)
        dm = call_with_available(self.datamodule_factory, **avail)
        trainer = pl.Trainer(
            max_epochs=self.max_epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
            limit_val_batches=0, num_sanity_val_steps=0, enable_progress_bar=self.progress, enable_model_summary=False,
        )
        trainer.fit(self.model, datamodule=dm)
        self.model.eval()
        return self

    @torch.no_grad()
    def score(self, history: History) -> torch.Tensor:
        if self.model is None:
            raise RuntimeError("LightningRetriever.fit must run before score")
        return self.model.score(history)
