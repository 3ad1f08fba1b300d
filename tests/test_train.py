"""The training entry point, composed from the real configs and run as a user runs it:
every experiment runs a few steps; the same command twice reuses the run; a changed
hyper-parameter gets a new run directory; resume=false starts over; a killed run resumes;
a doctored checkpoint runs no code; an Optuna sweep runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
ALL_EXPERIMENTS = sorted(p.relative_to(CONFIGS / "experiment").with_suffix("").as_posix()
                         for p in (CONFIGS / "experiment").rglob("*.yaml"))
# ML-100K ships offline (recbole wheel); ML-1M needs its archive (GPU box): compose-only here.
EXPERIMENTS = [e for e in ALL_EXPERIMENTS if e.startswith("ml100k/")]
OFFLINE_UNAVAILABLE = [e for e in ALL_EXPERIMENTS if e not in EXPERIMENTS]


@pytest.mark.parametrize("experiment", OFFLINE_UNAVAILABLE)
def test_other_dataset_experiments_compose(experiment, tmp_path):
    cfg = compose_train([f"experiment={experiment}"], tmp_path / "run", tmp_path / "data")
    assert cfg.model.module._target_ and cfg.data._target_ == "recsys.data.prepare.prepare"


def compose_train(overrides: list[str], output_dir: Path, data_dir: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=False)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.data_dir = str(data_dir)
    return cfg


def _fast(extra: list[str]) -> list[str]:
    return ["logger=none", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
            "trainer.enable_progress_bar=false", *extra]


# the rankers train behind the served two-tower run by default (tests/ranking/test_ranker_train.py walks
# that journey); here each fits its own two-tower, on a few users' lists
RANKER_STEPS = ["model.module.retriever_run=null", "model.module.max_train_users=20", "model.module.max_val_users=50"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_a_few_steps(experiment, tmp_path, ml100k_data_root):
    from recsys.train import run

    ranker = experiment.endswith(("/dlrm", "/dcn", "/seq_dlrm", "/seq_dcn"))
    cfg = compose_train(_fast([f"experiment={experiment}", *(RANKER_STEPS if ranker else [])]), tmp_path / "run",
                        ml100k_data_root)
    metrics, artifacts = run(cfg)
    assert 0.0 <= metrics["test/ndcg@10"] <= 1.0
    assert 0.0 <= metrics["val/ndcg@10"] <= 1.0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test/ndcg@10"] == metrics["test/ndcg@10"]


def test_wandb_offline_run_is_written(tmp_path, ml100k_data_root):
    from recsys.train import run

    cfg = compose_train(["experiment=ml100k/pop", "logger=wandb"], tmp_path / "run", ml100k_data_root)
    run(cfg)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert runs, "an offline W&B run directory must exist for `wandb sync`"


def _train_cmd(out: Path, data_root: Path, epochs: int, experiment: str = "ml100k/bpr", extra=()) -> list[str]:
    return [sys.executable, "-m", "recsys.train", f"experiment={experiment}", "logger=none",
            f"trainer.max_epochs={epochs}", "callbacks.early_stopping.patience=100", "eval.progress=false",
            "trainer.enable_progress_bar=false", f"hydra.run.dir={out}", f"paths.data_dir={data_root}", *extra]


ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _user_cmd(log_dir: Path, data_root: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``python -m recsys.train experiment=ml100k/two_tower debug=fast ...`` with Hydra's default run directory."""
    cmd = [sys.executable, "-m", "recsys.train", "experiment=ml100k/two_tower", "debug=fast", "eval.progress=false",
           f"paths.log_dir={log_dir}", f"paths.data_dir={data_root}", *overrides]
    res = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "Unpickl" not in res.stdout + res.stderr
    return res


def _files(d: Path) -> dict:
    return {str(p.relative_to(d)): p.stat().st_mtime_ns for p in d.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_two_tower_same_command_reuses_changed_override_gets_new_run(tmp_path, ml100k_data_root):
    import torch

    from recsys.utils.artifacts import CHECKPOINT_KEY, read_provenance

    first = _user_cmd(tmp_path, ml100k_data_root)
    pointer = tmp_path / "debug" / "ml100k-two_tower-seed42"
    assert pointer.is_symlink()
    run = pointer.resolve()
    prov = read_provenance(run)
    assert run.name == f"ml100k-two_tower-seed42-{prov.config_hash}" and prov.extra["status"] == "complete"
    best = run / "checkpoints" / "best.ckpt"
    # our checkpoints need no allow-list at all: nothing Hydra-typed, no project class
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    assert ckpt[CHECKPOINT_KEY] == {"config_hash": prov.config_hash, "dataset_fingerprint": prov.dataset_fingerprint,
                                    "run": run.name}
    assert isinstance(ckpt["hyper_parameters"]["hidden"], list)
    for line in ("ndcg@10", "recall@10", "mrr@10", "coverage@10", str(run), str(best), str(run / "metrics.json")):
        assert line in first.stdout, line
    assert len(first.stdout.splitlines()) < 40  # a short table, not a 100-key dict
    metrics = (run / "metrics.json").read_text()
    before = _files(run)

    second = _user_cmd(tmp_path, ml100k_data_root)  # the same command: reused, nothing retrained
    assert "completed before, reused" in second.stdout
    assert (run / "metrics.json").read_text() == metrics
    assert {k: v for k, v in _files(run).items() if k.startswith("checkpoints/")} == \
           {k: v for k, v in before.items() if k.startswith("checkpoints/")}

    lr = _user_cmd(tmp_path, ml100k_data_root, "model.module.lr=0.05")  # a changed hyper-parameter: a new run
    runs = sorted(p for p in (tmp_path / "debug").iterdir() if not p.is_symlink())
    assert len(runs) == 2 and pointer.resolve() != run
    assert "model.module.lr: 0.001 -> 0.05" in lr.stdout + lr.stderr
    assert "lr: 0.05" in (pointer.resolve() / ".hydra" / "config.yaml").read_text()
    assert "lr: 0.001" in (run / ".hydra" / "config.yaml").read_text()
    assert {k: v for k, v in _files(run).items() if k.startswith("checkpoints/")} == \
           {k: v for k, v in before.items() if k.startswith("checkpoints/")}

    _user_cmd(tmp_path, ml100k_data_root, "resume=false")  # starts the first run over, in its own directory
    assert (run / "checkpoints" / "best.ckpt").stat().st_mtime_ns != before["checkpoints/best.ckpt"]
    assert len([p for p in (tmp_path / "debug").iterdir() if not p.is_symlink()]) == 2
    assert pointer.resolve() == run


@pytest.mark.slow
def test_a_directory_of_another_config_is_refused_untouched(tmp_path, ml100k_data_root):
    out = tmp_path / "run"
    cmd = _train_cmd(out, ml100k_data_root, 1, extra=["trainer.limit_train_batches=3"])
    subprocess.run(cmd, check=True, env=ENV, cwd=ROOT, capture_output=True)
    before = _files(out)
    config = (out / ".hydra" / "config.yaml").read_text()
    res = subprocess.run([*cmd, "model.module.dim=32"], env=ENV, cwd=ROOT, capture_output=True, text=True)
    assert res.returncode != 0
    assert "holds another run" in res.stderr and "model.module.dim: 64 -> 32" in res.stderr, res.stderr[-2000:]
    assert (out / ".hydra" / "config.yaml").read_text() == config  # .hydra still claims the run's own config
    after = _files(out)
    assert {k: v for k, v in after.items() if not k.startswith(".hydra") and not k.endswith(".log")} == \
           {k: v for k, v in before.items() if not k.startswith(".hydra") and not k.endswith(".log")}


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["ml100k/bpr", "ml100k/two_tower"])
def test_killed_run_resumes(experiment, tmp_path, ml100k_data_root):
    epochs = 3
    limit = ["trainer.limit_train_batches=40"] if experiment.endswith("two_tower") else []
    ref = tmp_path / "uninterrupted"
    subprocess.run(_train_cmd(ref, ml100k_data_root, epochs, experiment, limit), check=True, env=ENV, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(run_dir, ml100k_data_root, epochs, experiment, limit), env=ENV, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # let the checkpoint write finish, then kill mid-training
    assert proc.poll() is None, "the run finished before it could be killed; make epochs longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "metrics.json").exists()

    res = subprocess.run(_train_cmd(run_dir, ml100k_data_root, epochs, experiment, limit), env=ENV, cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming from" in res.stdout + res.stderr and "resumed from last.ckpt" in res.stdout
    a = json.loads((ref / "metrics.json").read_text())
    b = json.loads((run_dir / "metrics.json").read_text())
    assert b["train/epochs"] == a["train/epochs"] == epochs
    if experiment.endswith("bpr"):  # BPR's sampler is seeded per epoch, so a resumed run is exact
        for key in ("val/ndcg@10", "test/ndcg@10", "test/recall@20"):
            assert b[key] == pytest.approx(a[key], abs=1e-6), key


def _completed_bpr_run(out: Path, data_root: Path):
    from recsys.train import run

    cfg = compose_train(_fast(["experiment=ml100k/bpr", "eval.progress=false"]), out, data_root)
    run(cfg)
    return cfg


def _reopen(out: Path) -> None:
    """Make the completed run look killed after its last epoch (status running, no metrics), so a rerun resumes."""
    from recsys.utils.artifacts import read_provenance, write_provenance

    prov = read_provenance(out)
    prov.extra["status"] = "running"
    write_provenance(out, prov)
    (out / "metrics.json").unlink()


@pytest.mark.parametrize("doctor", ["best_path_outside", "best_path_inside", "last_is_a_pickle"])
def test_doctored_checkpoint_runs_no_code(doctor, tmp_path, ml100k_data_root):
    import torch

    from recsys.train import run
    from recsys.utils.artifacts import ProvenanceError
    from test_artifacts import write_evil_pickle

    out, marker = tmp_path / "run", tmp_path / "pwned"
    cfg = _completed_bpr_run(out, ml100k_data_root)
    _reopen(out)
    last = out / "checkpoints" / "last.ckpt"
    if doctor == "last_is_a_pickle":
        write_evil_pickle(last, marker)
        match = "outside the allow-list"
    else:
        evil = write_evil_pickle((out / "checkpoints" if doctor == "best_path_inside" else tmp_path) / "evil.pkl", marker)
        ckpt = torch.load(last, weights_only=False)
        (key,) = [k for k in ckpt["callbacks"] if k.startswith("ModelCheckpoint")]
        ckpt["callbacks"][key]["best_model_path"] = str(evil)
        torch.save(ckpt, last)
        match = "outside its run's" if doctor == "best_path_outside" else "outside the allow-list"
    with pytest.raises(ProvenanceError, match=match):
        run(cfg)
    assert not marker.exists()
@pytest.mark.slow
def test_optuna_sweep_two_trials(tmp_path, ml100k_data_root):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "recsys.train", "-m", "hparams_search=bpr_optuna", "experiment=ml100k/bpr",
           "logger=none", "trainer.max_epochs=1", "trainer.limit_train_batches=5",
           "trainer.enable_progress_bar=false", "hydra.sweeper.n_trials=2",
           f"hydra.sweep.dir={tmp_path}", f"paths.data_dir={ml100k_data_root}"]
    res = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    best = (tmp_path / "optimization_results.yaml").read_text()
    assert "best_value" in best
    assert len(list(tmp_path.glob("*/metrics.json"))) == 2
