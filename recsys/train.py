"""Train and evaluate one model: ``python -m recsys.train experiment=ml100k/bpr``.

``run(cfg)`` is a plain function returning ``(metrics, artifacts)``; the thin
Hydra ``main`` returns ``cfg.optimized_metric`` so sweepers can optimise it.

Two kinds of model share this path:
- LightningModules (BPR, SASRec, two-tower, ...): trained by a Lightning
  ``Trainer`` on ``cfg.model.datamodule``; validation NDCG is computed each
  epoch by the evaluator callback and drives checkpointing; the best
  checkpoint is evaluated.
- Fitted recommenders (Popularity, ItemKNN): ``model.fit(dataset, split)``.

Both end with a full-ranking evaluation on valid and test by the same
``Evaluator`` and write ``metrics.json`` in the run directory.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from recsys.data.io import load_dataset, load_split
from recsys.utils import wandb as wandb_utils
from recsys.core.inject import instantiate_with
from recsys.utils.instantiate import instantiate_group

log = logging.getLogger(__name__)


def prepare_data(cfg: DictConfig):
    """Prepare (or reuse) the dataset of ``cfg.data``; return (dir, Dataset, Split)."""
    dataset_dir = Path(instantiate(cfg.data))
    dataset = load_dataset(dataset_dir)
    split = load_split(dataset_dir, cfg.data.split.name)
    return dataset_dir, dataset, split


def output_dir(cfg: DictConfig) -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_dir)


def _last_checkpoint(out: Path) -> str | None:
    last = out / "checkpoints" / "last.ckpt"
    return str(last) if last.exists() else None


def fit_lightning(cfg, model, dataset, split, dataset_dir, evaluator, loggers, out: Path) -> dict:
    """Train a LightningModule; load its best checkpoint; return trainer-side metrics."""
    from recsys.eval.callback import RankingEvalCallback

    datamodule = instantiate_with(cfg.model.datamodule, dataset=dataset, split=split, dataset_dir=dataset_dir, meta=dataset.meta)
    callbacks = instantiate_group(cfg.get("callbacks"))
    # The evaluator callback must run before ModelCheckpoint reads val/ndcg@10.
    callbacks.insert(0, RankingEvalCallback(evaluator, dataset, split))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    ckpt_path = _last_checkpoint(out) if cfg.get("resume", True) else None
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    t0 = time.perf_counter()
    # Our own checkpoints carry DatasetMeta in their hyperparameters: allow exactly that class
    # rather than switching weights_only off for everything.
    from recsys.data.schema import DatasetMeta

    with torch.serialization.safe_globals([DatasetMeta]):
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {"train/time_s": time.perf_counter() - t0, "train/epochs": trainer.current_epoch}
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best:
        log.info("loading best checkpoint %s", best)
        state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
        model.load_state_dict(state)
        metrics["best_checkpoint"] = best
    return metrics


def run(cfg: DictConfig) -> tuple[dict, dict]:
    """Prepare data, build, train (or fit) and evaluate the model of ``cfg``."""
    wandb_utils.default_offline()
    pl.seed_everything(cfg.seed, workers=True)
    out = output_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    loggers = instantiate_group(cfg.get("logger"))
    try:
        dataset_dir, dataset, split = prepare_data(cfg)
        log.info("dataset %s: %d users, %d items, %d interactions", dataset.meta.name,
                 dataset.meta.n_users, dataset.meta.n_items, dataset.meta.n_interactions)
        evaluator = instantiate(cfg.eval)
        model = instantiate_with(cfg.model.module, meta=dataset.meta, dataset_dir=dataset_dir)
        for lg in loggers:
            lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

        metrics: dict = {}
        if cfg.get("train", True):
            if isinstance(model, pl.LightningModule):
                metrics.update(fit_lightning(cfg, model, dataset, split, dataset_dir, evaluator, loggers, out))
            else:
                t0 = time.perf_counter()
                model.fit(dataset, split)
                metrics["train/time_s"] = time.perf_counter() - t0
                if hasattr(model, "save"):
                    model.save(out / "model")

        model.eval() if isinstance(model, torch.nn.Module) else None
        stages = ["valid"] + (["test"] if cfg.get("test", True) else [])
        for stage in stages:
            t0 = time.perf_counter()
            with torch.no_grad():
                metrics.update(evaluator.evaluate(model, dataset, split, stage))
            log.info("%s evaluation took %.1f s", stage, time.perf_counter() - t0)
        for lg in loggers:
            lg.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})

        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        log.info("metrics: %s", json.dumps({k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}))
        artifacts = {"output_dir": str(out), "metrics": str(out / "metrics.json"), "dataset_dir": str(dataset_dir), "model": model}
        return metrics, artifacts
    finally:
        for lg in loggers:
            if hasattr(lg, "finalize"):
                lg.finalize("success")
        wandb_utils.finish()


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics, _ = run(cfg)
    value = metrics.get(cfg.get("optimized_metric"))
    return float(value) if value is not None else None


if __name__ == "__main__":
    main()
