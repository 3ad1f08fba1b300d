"""Retrievers the two-stage ranker fits itself, and the trainer config that reaches their trainers.

``LightningRetriever`` gives a trainable LightningModule retriever (the two-tower) the
``fit(dataset, split)`` / ``score(history)`` interface, so ``TwoStageRanker`` fits one on the
inner training part (for its training lists) and one on the whole training part (for serving)
without knowing which model it is.

Nested trainers are built from the run's composed trainer config (``trainer=cpu``/``gpu``/...):
``configs/model/dlrm.yaml`` hands ``${trainer}`` to :func:`trainer_partial`, which turns it into
a ``functools.partial`` of ``pytorch_lightning.Trainer``; each nested fit overrides only what it
owns (epochs, callbacks, no logger, no checkpoint files, no validation for the retriever).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytorch_lightning as pl
import torch

from recsys.core.inject import call_with_available
from recsys.data.history import History
from recsys.data.schema import Dataset, DatasetMeta, Split

CPU_TRAINER = {"_target_": "pytorch_lightning.Trainer", "accelerator": "cpu", "devices": 1, "deterministic": True}


def trainer_partial(config: Mapping | None = None) -> Callable[..., pl.Trainer]:
    """A trainer config node (``_target_: pytorch_lightning.Trainer`` + its arguments) -> partial.

    ``None`` gives a single-CPU trainer (tests, scripts that build the ranker without Hydra).
    Keys the nested fits always set themselves are dropped from the config first.
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(OmegaConf.create(dict(config) if isinstance(config, Mapping) else config or CPU_TRAINER),
                                  resolve=True)
    for key in ("default_root_dir", "max_epochs", "callbacks", "logger"):
        node.pop(key, None)
    return instantiate(node, _partial_=True)


class LightningRetriever:
    """Train a LightningModule retriever for a fixed number of epochs, then delegate ``score``.

    Args:
        meta: dataset metadata.
        module: factory of the LightningModule (receives ``meta``, ``dataset_dir`` if it takes them).
        datamodule: factory of its DataModule (receives ``dataset``, ``split``, ``meta``, ``dataset_dir``).
        max_epochs: training epochs (no validation: the inner split has none).
        trainer: partial of ``pytorch_lightning.Trainer`` (:func:`trainer_partial`); None = one CPU.
        dataset_dir: the prepared dataset directory (text embeddings live there).
    """

    def __init__(self, meta: DatasetMeta, module: Callable, datamodule: Callable, max_epochs: int = 10,
                 trainer: Callable[..., pl.Trainer] | None = None, dataset_dir: str | None = None, progress: bool = False) -> None:
        self.meta, self.module_factory, self.datamodule_factory = meta, module, datamodule
        self.max_epochs, self.dataset_dir, self.progress = max_epochs, dataset_dir, progress
        self.trainer_factory = trainer or trainer_partial()
        self.model = self.trainer = None

    def fit(self, dataset: Dataset, split: Split) -> "LightningRetriever":
        avail = dict(meta=self.meta, dataset=dataset, split=split, dataset_dir=self.dataset_dir)
        self.model = call_with_available(self.module_factory, **avail)
        dm = call_with_available(self.datamodule_factory, **avail)
        self.trainer = self.trainer_factory(
            max_epochs=self.max_epochs, logger=False, enable_checkpointing=False, limit_val_batches=0,
            num_sanity_val_steps=0, enable_progress_bar=self.progress, enable_model_summary=False,
        )
        self.trainer.fit(self.model, datamodule=dm)
        self.model = self.model.cpu().eval()  # candidates are generated on the CPU, request by request
        return self

    def save(self, path: str | Path) -> Path:
        """The fitted module as a Lightning checkpoint (weights + hyperparameters) at ``path``."""
        if self.trainer is None:
            raise RuntimeError("LightningRetriever.fit must run before save")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.trainer.save_checkpoint(path, weights_only=True)
        return path

    def eval(self) -> "LightningRetriever":
        return self

    @torch.no_grad()
    def score(self, history: History) -> torch.Tensor:
        if self.model is None:
            raise RuntimeError("LightningRetriever.fit must run before score")
        return self.model.score(history)

