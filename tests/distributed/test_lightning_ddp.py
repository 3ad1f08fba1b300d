"""Lightning DDP on 2 CPU processes (gloo): `trainer=ddp_sim` through the real config, the
evaluator callback on rank 0 only, and the epoch sampler's epoch through Lightning's
DistributedSamplerWrapper. CPU is forced (accelerator cpu, CUDA hidden from the ranks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_set_epoch_reaches_the_epoch_sampler_through_lightnings_wrapper(ml100k, ml100k_split):
    """What Lightning does at each epoch start, on the sampler it injects under DDP (rank 1 of 2)."""
    from lightning_fabric.utilities.data import _set_sampler_epoch
    from lightning_fabric.utilities.distributed import DistributedSamplerWrapper
    from torch.utils.data import DataLoader

    from recsys.data.datamodules import InteractionDataModule

    dm = InteractionDataModule(ml100k, ml100k_split, batch_size=8192, seed=3)
    loader = dm.train_dataloader()
    wrapped = DataLoader(loader.dataset, sampler=DistributedSamplerWrapper(loader.sampler, num_replicas=2, rank=1, shuffle=False),
                         batch_size=None)
    for epoch in (4, 2):  # also backwards: a resume sets an earlier epoch than the sampler's counter
        _set_sampler_epoch(wrapped, epoch)
        got = [int(b["neg_items"].sum()) for b in wrapped]
        expected = dm._batches(ml100k_split.train, epoch, shuffle=True)
        assert got == [int(expected[i]["neg_items"].sum()) for i in range(1, len(expected), 2)]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ddp_spawn_rank0_evaluates_and_every_rank_sees_the_metric(ml100k, ml100k_split, tmp_path, monkeypatch):
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
    from torch.utils.data import DistributedSampler

    import _ddp_parts
    from recsys.data.datamodules import InteractionDataModule
    from recsys.eval.callback import RankingEvalCallback

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # inherited by the spawned ranks: CPU only
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = str(tmp_path / "notes")
    evaluator = _ddp_parts.RecordingEvaluator(ks=[10], metrics=["ndcg", "recall"], beyond_metrics=[], device="cpu", progress=False)
    dm = InteractionDataModule(ml100k, ml100k_split, batch_size=8192, seed=5)
    model = _ddp_parts.RecordingBPR(ml100k.meta, dim=16)
    callbacks = [RankingEvalCallback(evaluator, ml100k, ml100k_split),
                 ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/ndcg@10", mode="max"),
                 EarlyStopping(monitor="val/ndcg@10", mode="max", patience=5),
                 _ddp_parts.WriteNotes(out, evaluator)]
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=2, num_sanity_val_steps=0,
                         logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks)
    trainer.fit(model, datamodule=dm)
    r0, r1 = (json.loads(Path(f"{out}.{r}.json").read_text()) for r in (0, 1))
    assert r0["world_size"] == 2 and r0["backend"] == "gloo"
    assert (r0["evaluator_calls"], r1["evaluator_calls"]) == (2, 0)  # one full evaluation per epoch, on rank 0
    assert r0["logged"] == r1["logged"] and 0 < r0["logged"]["val/ndcg@10"] < 1  # both ranks monitor one value
    for rank, notes in ((0, r0["notes"]), (1, r1["notes"])):
        for epoch in (0, 1):
            mine = [n for n in notes if n["epoch"] == epoch]
            assert all(n["sampler_epoch"] == epoch and n["wrapper"] == "DistributedSamplerWrapper" for n in mine)
            batches = dm._batches(ml100k_split.train, epoch, shuffle=True)
            # Lightning's wrapper also permutes the (ready-made) batches by (PL_GLOBAL_SEED, epoch), then strides
            order = DistributedSampler(range(len(batches)), num_replicas=2, rank=rank, shuffle=True,
                                       seed=int(os.getenv("PL_GLOBAL_SEED", 0)))
            order.set_epoch(epoch)
            expected = [batches[i] for i in order]
            assert [n["user_sum"] for n in mine] == [int(b["user"].sum()) for b in expected]
            assert [n["neg_sum"] for n in mine] == [int(b["neg_items"].sum()) for b in expected]
    assert trainer.checkpoint_callback.best_model_path  # ModelCheckpoint found the monitored key


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_trainer_ddp_sim_runs_through_the_real_config(ml100k_data_root, tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "recsys.train", "experiment=ml100k/bpr", "trainer=ddp_sim", "logger=none",
           "trainer.max_epochs=2", "trainer.limit_train_batches=4", "trainer.enable_progress_bar=false",
           "eval.progress=false", f"paths.data_dir={ml100k_data_root}", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=850)
    assert res.returncode == 0, res.stderr[-4000:]
    cfg = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "strategy: ddp_spawn" in cfg and "devices: 2" in cfg
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert np.isfinite(metrics["test/ndcg@10"]) and np.isfinite(metrics["val/ndcg@10"])
    # Both epochs ran in the spawned ranks. (metrics["train/epochs"] reads the parent process's trainer,
    # which ddp_spawn leaves at 0: train.py's to fix, reported.)
    assert metrics["best_checkpoint"].endswith("best.ckpt") and (run_dir / "checkpoints" / "epoch_001.ckpt").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert "self.log('val/ndcg@10'" not in res.stderr  # the callback logs synchronised values on every rank


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_trainer_ddp_strategy_evaluates_once_on_rank_0(ml100k_data_root, tmp_path):
    """strategy=ddp (what trainer=ddp uses on GPUs): Lightning relaunches the script per rank; the final
    valid/test evaluation runs on rank 0 only (one "evaluation took" line per stage), rank 0 writes metrics."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "recsys.train", "experiment=ml100k/bpr", "trainer=ddp_sim", "trainer.strategy=ddp",
           "logger=none", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.enable_progress_bar=false",
           "eval.progress=false", f"paths.data_dir={ml100k_data_root}", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=850)
    assert res.returncode == 0, res.stderr[-4000:]
    out = res.stdout + res.stderr
    assert out.count("valid evaluation took") == 1 and out.count("test evaluation took") == 1, out[-4000:]
    assert np.isfinite(json.loads((run_dir / "metrics.json").read_text())["test/ndcg@10"])
