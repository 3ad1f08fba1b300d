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
``Evaluator`` (on the trainer's device), write ``metrics.json`` in the run directory and
print a short table of headline metrics with the paths of the run's outputs.

A run is identified by its whole resolved config (``recsys.utils.run_identity``); its
directory (``recsys.utils.run_dir``) holds one run: the same command resumes it from
``last.ckpt`` (or reuses it when it finished), a changed hyper-parameter gets a new
directory, ``resume=false`` starts it over. In a multi-process launch only rank 0 writes.
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

from recsys.core.inject import instantiate_with
from recsys.data.io import load_dataset, load_split
from recsys.eval.evaluator import stage_prefix
from recsys.utils import run_dir as R
from recsys.utils import wandb as wandb_utils
from recsys.utils.artifacts import CHECKPOINT_KEY, ProvenanceError, allow_listed, dataset_fingerprint, hash_of, load_torch, refused
from recsys.utils.instantiate import instantiate_group
from recsys.utils.run_identity import identity_config, register_resolver

log = logging.getLogger(__name__)
register_resolver()  # ${run_hash:} in configs/train.yaml's run_id, resolved by Hydra before the job starts

HEADLINE = ("ndcg@10", "recall@10", "mrr@10", "hit_rate@10", "coverage@10")


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


def run_spec(cfg: DictConfig, dataset_dir: Path, out: Path) -> R.RunSpec:
    """The identity of this launch; under Hydra, check it is the one the directory name was made from."""
    ident = identity_config(cfg)
    spec = R.RunSpec(name=str(cfg.run_name), config_hash=hash_of(ident), identity=ident,
                     dataset_fingerprint=dataset_fingerprint(dataset_dir), dataset_dir=str(dataset_dir.resolve()),
                     command=_command())
    if HydraConfig.initialized() and out.name.startswith(spec.name + "-") and out.name != f"{spec.name}-{spec.config_hash}":
        raise RuntimeError(f"run directory {out.name} was named from another identity than this job's "
                           f"({spec.config_hash}): an identity key must not depend on the run directory")
    return spec


def _command() -> str | None:
    if not HydraConfig.initialized():
        return None  # composed in code (tests, scripts): no command line to repeat
    return " ".join(["python -m recsys.train", *HydraConfig.get().overrides.task])


def load_best(out: Path, spec: R.RunSpec, model, path) -> int:
    """Load the state of checkpoint ``path`` (inside ``out``) into ``model``; return its epoch."""
    ckpt = load_torch(R.inside_run(out, path))
    found = (ckpt.get(CHECKPOINT_KEY) or {}).get("config_hash")
    if found != spec.config_hash:
        raise ProvenanceError(f"{path} was written by config {found}, not by this run's {spec.config_hash}")
    model.load_state_dict(ckpt["state_dict"])
    return int(ckpt.get("epoch", -1))


def fit_lightning(cfg, model, dataset, split, dataset_dir, evaluator, loggers, out: Path, spec: R.RunSpec,
                  resume: bool) -> tuple[dict, torch.device]:
    """Train a LightningModule; load its best checkpoint; return trainer-side metrics and the trainer's device."""
    from recsys.distributed.env import check_trainer_device
    from recsys.eval.callback import RankingEvalCallback

    datamodule = instantiate_with(cfg.model.datamodule, dataset=dataset, split=split, dataset_dir=dataset_dir, meta=dataset.meta)
    callbacks = instantiate_group(cfg.get("callbacks"))
    # The evaluator callback must run before ModelCheckpoint reads val/ndcg@10.
    callbacks.insert(0, RankingEvalCallback(evaluator, dataset, split))
    callbacks.append(R.ProvenanceCallback(spec.checkpoint_record(out)))
    check_trainer_device(cfg.trainer)  # trainer=gpu without a GPU: one line naming trainer=cpu, not Lightning's traceback
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    ckpt_path = out / R.CHECKPOINTS / R.LAST if resume else None
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    t0 = time.perf_counter()
    with allow_listed():  # Lightning's own torch.load: weights only, the project's allow-list
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except Exception as e:
            if ckpt_path is None or refused(ckpt_path, e) is e:
                raise
            raise refused(ckpt_path, e) from e
    epochs = trainer.current_epoch
    if epochs == 0 and (out / R.CHECKPOINTS / R.LAST).is_file():  # ddp_spawn: the loop ran in the workers
        epochs = int(load_torch(out / R.CHECKPOINTS / R.LAST).get("epoch", -1)) + 1
    metrics = {"train/time_s": time.perf_counter() - t0, "train/epochs": epochs}
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best:  # read back from last.ckpt on resume: it may only name a file of this run
        log.info("loading best checkpoint %s", best)
        metrics["best_epoch"] = load_best(out, spec, model, best)
        if R.is_rank_zero():
            metrics["best_checkpoint"] = str(R.publish_best(out, R.inside_run(out, best)))
    return metrics, trainer.strategy.root_device


def reuse_completed(out: Path, spec: R.RunSpec, model) -> dict | None:
    """A completed run's recorded metrics with its best checkpoint loaded into ``model``; None if it has none."""
    best = out / R.CHECKPOINTS / R.BEST
    if not best.is_file():
        return None
    epoch = load_best(out, spec, model, best)
    log.info("%s completed before: reusing it (best epoch %d); resume=false trains it again", out, epoch)
    return {**json.loads((out / R.METRICS).read_text()), "best_checkpoint": str(best), "best_epoch": epoch}


def run(cfg: DictConfig) -> tuple[dict, dict]:
    """Prepare data, build, train (or fit, or reuse) and evaluate the model of ``cfg``."""
    wandb_utils.default_offline()
    pl.seed_everything(cfg.seed, workers=True)
    out = output_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    dataset_dir, dataset, split = prepare_data(cfg)
    spec = run_spec(cfg, dataset_dir, out)
    mode = R.start(out, spec, resume=bool(cfg.get("resume", True)))
    loggers = instantiate_group(cfg.get("logger"))
    try:
        log.info("dataset %s: %d users, %d items, %d interactions", dataset.meta.name,
                 dataset.meta.n_users, dataset.meta.n_items, dataset.meta.n_interactions)
        evaluator = instantiate(cfg.eval)
        model = instantiate_with(cfg.model.module, meta=dataset.meta, dataset_dir=dataset_dir)
        lightning = isinstance(model, pl.LightningModule)
        metrics, device = None, evaluator.device
        if mode == "complete" and lightning:
            metrics = reuse_completed(out, spec, model)
            if metrics is None:
                log.warning("%s is marked complete but has no %s: training it again", out, R.BEST)
                mode = R.start(out, spec, resume=False)
        elif mode == "complete":
            mode = "new"  # a fitted recommender has no checkpoint: fitting again takes seconds
        if metrics is None:
            for lg in loggers:
                lg.log_hyperparams({**OmegaConf.to_container(cfg, resolve=True), "run/config_hash": spec.config_hash})
            metrics = {}
            if cfg.get("train", True):
                metrics, device = fit(cfg, model, dataset, split, dataset_dir, evaluator, loggers, out, spec, mode)

        if lightning:
            model.to(device)  # Lightning hands the module back on CPU after fit
        if isinstance(model, torch.nn.Module):
            model.eval()
        stages = ["valid"] + (["test"] if cfg.get("test", True) else [])
        # a reused run: only the missing stages; under trainer=ddp every rank runs this script: rank 0 evaluates
        todo = [s for s in stages if f"{stage_prefix(s)}/n_users" not in metrics] if R.is_rank_zero() else []
        for stage in todo:
            t0 = time.perf_counter()
            with torch.no_grad():
                metrics.update(evaluator.evaluate(model, dataset, split, stage))
            log.info("%s evaluation took %.1f s", stage, time.perf_counter() - t0)
        if mode != "complete":
            for lg in loggers:
                lg.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        if R.is_rank_zero():
            report(out, spec, mode, metrics, loggers)
        artifacts = {"output_dir": str(out), "metrics": str(out / R.METRICS), "dataset_dir": str(dataset_dir),
                     "model": model, "config_hash": spec.config_hash, "mode": mode}
        return metrics, artifacts
    finally:
        for lg in loggers:
            if hasattr(lg, "finalize"):
                lg.finalize("success")
        wandb_utils.finish()


def fit(cfg, model, dataset, split, dataset_dir, evaluator, loggers, out: Path, spec: R.RunSpec,
        mode: str) -> tuple[dict, torch.device | str]:
    """Train a LightningModule (resuming when ``mode == "resume"``) or fit a recommender."""
    if isinstance(model, pl.LightningModule):
        return fit_lightning(cfg, model, dataset, split, dataset_dir, evaluator, loggers, out, spec,
                             resume=mode == "resume")
    t0 = time.perf_counter()
    model.fit(dataset, split)
    if hasattr(model, "save") and R.is_rank_zero():
        model.save(out / "model")
    return {"train/time_s": time.perf_counter() - t0}, evaluator.device


def report(out: Path, spec: R.RunSpec, mode: str, metrics: dict, loggers) -> None:
    """Rank 0: write metrics.json, mark the run complete (and its name's link), print the summary."""
    (out / R.METRICS).write_text(json.dumps(metrics, indent=2, sort_keys=True))
    wandb_dir = _wandb_dir(loggers)
    prov = R.finish(out, metrics=R.METRICS, best_epoch=metrics.get("best_epoch"),
                    best_checkpoint=f"{R.CHECKPOINTS}/{R.BEST}" if metrics.get("best_checkpoint") else None,
                    **({"wandb_dir": wandb_dir} if wandb_dir else {}))
    paths = {"run dir": str(out), "metrics": str(out / R.METRICS)}
    if metrics.get("best_checkpoint"):
        paths["best checkpoint"] = metrics["best_checkpoint"]
    if prov.extra.get("wandb_dir"):
        paths["W&B run"] = f"{prov.extra['wandb_dir']}  (upload: wandb sync <dir>)"
    pointer = out.parent / spec.name
    if pointer.is_symlink() and pointer.resolve() == out.resolve():
        paths["latest of its name"] = str(pointer)
    print(summary(metrics, paths, f"{out.name}: {_how(mode, metrics)}"), flush=True)


def _how(mode: str, metrics: dict) -> str:
    if mode == "complete":
        return "completed before, reused (resume=false trains it again)"
    verb = "resumed from last.ckpt, trained" if mode == "resume" else "trained"
    if "train/epochs" in metrics:
        return (f"{verb} in {metrics['train/time_s']:.1f} s, {metrics['train/epochs']} epochs done, "
                f"best epoch {metrics.get('best_epoch', '-')}")
    return f"fitted in {metrics.get('train/time_s', 0.0):.1f} s"


def _wandb_dir(loggers) -> str | None:
    """The offline W&B run directory (``<save_dir>/wandb/offline-run-*``) of a started W&B logger."""
    for lg in loggers:
        if type(lg).__name__ == "WandbLogger" and getattr(lg, "_experiment", None) is not None:
            files = getattr(lg.experiment, "dir", None)  # .../offline-run-*/files
            return str(Path(files).parent) if files else None
    return None


def summary(metrics: dict, paths: dict, title: str) -> str:
    """A short human table: headline metrics (rows) by stage (columns), then where the outputs are."""
    stages = [p for p in ("val", "test") if f"{p}/n_users" in metrics]
    rows = [m for m in HEADLINE if any(f"{p}/{m}" in metrics for p in stages)]
    lines = [title, f"  {'metric':<14}" + "".join(f"{s:>10}" for s in stages)]
    for m in rows:
        lines.append(f"  {m:<14}" + "".join(f"{metrics[f'{s}/{m}']:>10.4f}" if f"{s}/{m}" in metrics else f"{'-':>10}"
                                            for s in stages))
    width = max(len(k) for k in paths)
    lines += [f"  {k:<{width}}  {v}" for k, v in paths.items()]
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from recsys.utils.cli import user_errors

    with user_errors("recsys.train"):
        metrics, _ = run(cfg)
    value = metrics.get(cfg.get("optimized_metric"))
    return float(value) if value is not None else None


if __name__ == "__main__":
    from recsys.utils.cli import doc_on_help

    doc_on_help(__doc__)
    main()
