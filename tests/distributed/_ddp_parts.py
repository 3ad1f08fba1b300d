"""Instrumented real components for the Lightning DDP tests (importable by spawned ranks).

``RecordingEvaluator`` is the real ``Evaluator`` that also notes which rank ran it;
``RecordingBPR`` is the real ``LitBPR`` that notes, per training batch, the epoch of the
epoch sampler behind Lightning's ``DistributedSamplerWrapper`` and a checksum of the batch.
Each rank writes its notes to ``<out>.<rank>.json`` when training ends.
"""

from __future__ import annotations

import json

import pytorch_lightning as pl

from recsys.eval.evaluator import Evaluator
from recsys.models.lit_bpr import LitBPR


class RecordingEvaluator(Evaluator):
    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.calls = 0

    def evaluate(self, *a, **kw):
        self.calls += 1
        return super().evaluate(*a, **kw)


class RecordingBPR(LitBPR):
    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.notes: list[dict] = []

    def training_step(self, batch, batch_idx):
        wrapper = self.trainer.train_dataloader.sampler  # Lightning's DistributedSamplerWrapper
        inner = wrapper.dataset._sampler  # our epoch sampler inside it
        self.notes.append({"epoch": self.trainer.current_epoch, "sampler_epoch": inner.batches.epoch,
                           "wrapper": type(wrapper).__name__, "neg_sum": int(batch["neg_items"].sum()),
                           "user_sum": int(batch["user"].sum())})
        return super().training_step(batch, batch_idx)


class WriteNotes(pl.Callback):
    """After fit (and every callback's last epoch): notes, evaluator calls and logged metrics of this rank."""

    def __init__(self, out: str, evaluator: RecordingEvaluator) -> None:
        self.out, self.evaluator = out, evaluator

    def on_train_end(self, trainer, pl_module) -> None:
        logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        with open(f"{self.out}.{trainer.global_rank}.json", "w") as f:
            json.dump({"notes": pl_module.notes, "evaluator_calls": self.evaluator.calls, "logged": logged,
                       "world_size": trainer.world_size, "backend": trainer.strategy.process_group_backend}, f)
