"""The shell scripts as a user runs them, on CPU: the `python`/`torchrun` on PATH (no
`.venv/bin/...`), their argument handling, and every piece of `scripts/gpu_smoke.sh` that
has a CPU fallback (`--device cpu`). The GPU-only checks are asserted to SKIP here."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))


def _env(**extra) -> dict:
    """PATH starts with this interpreter's bin dir (as an activated env would); CPU only."""
    bindir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "TORCHRUN")}
    return {**env, "PATH": bindir + os.pathsep + env.get("PATH", ""), "PYTHONPATH": str(ROOT),
            "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", **extra}


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _run(args: list[str], timeout: int = 600, **env) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=_env(**env), capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_use_the_interpreter_on_path(script):
    text = script.read_text()
    # Naming `. .venv/bin/activate` in an error message is fine; running an interpreter from it is not.
    assert not re.search(r"\.venv/bin/(python|pip|torchrun)", text), f"{script.name} hard-codes .venv/bin (conda and Docker have none)"
    assert os.access(script, os.X_OK) and text.startswith("#!/usr/bin/env bash")
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def test_reproduce_outside_the_environment_says_to_activate_it(tmp_path):
    """A `python` that cannot import recsys (no activated env): one line naming the fix, nothing runs."""
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    res = _run(["scripts/reproduce_ml100k.sh", "--quick", "--out", str(tmp_path / "r")], PYTHON=str(fake))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "activate the project's environment" in res.stderr and not (tmp_path / "r").exists()


def test_launch_torchrun_parses_the_jobs_arguments_through_torchrun():
    res = _run(["scripts/launch_torchrun.sh", "--help"], NPROC="1", MASTER_PORT=_free_port())
    assert res.returncode == 0, res.stderr[-2000:]
    assert "--dataset-dir" in res.stdout and "--sharding" in res.stdout


def test_launch_torchrun_default_nproc_comes_from_python_on_path(tmp_path):
    """No NPROC: the script asks `python` for the GPU count (0 here -> 1 process); one rank runs the job."""
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "meta.json").write_text("{}")  # passes the script's check; the job refuses it
    res = _run(["scripts/launch_torchrun.sh", "--dataset-dir", str(tmp_path / "bad")], MASTER_PORT=_free_port())
    assert res.returncode != 0 and "[rank0]" in res.stderr and "prepare the dataset first" not in res.stderr


def test_launch_torchrun_refuses_before_spawning_ranks(tmp_path):
    """An unprepared dataset names the prepare command; --device cuda without CUDA says so; one line each."""
    res = _run(["scripts/launch_torchrun.sh", "--dataset-dir", str(tmp_path / "ml1m"), "--device", "cuda"])
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        f"launch_torchrun: {tmp_path / 'ml1m'}/meta.json is missing: prepare the dataset first: "
        "python -m recsys.data.prepare data=ml1m (downloads the MovieLens zip from grouplens.org)"]
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "meta.json").write_text("{}")
    res = _run(["scripts/launch_torchrun.sh", "--device=cuda", "--dataset-dir", str(tmp_path / "ok")])
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "sees no CUDA device" in res.stderr


def test_reproduce_and_launch_gpu_help():
    res = _run(["scripts/reproduce_ml100k.sh", "--help"])
    assert res.returncode == 0 and "--quick" in res.stdout, res.stderr[-2000:]
    res = _run(["scripts/launch_gpu.sh", "--help"])
    assert res.returncode == 0 and "TRAINER=cpu" in res.stdout and "data=NAME picks experiment NAME/two_tower" in res.stdout
    res = _run(["scripts/launch_gpu.sh", "data=nope"])  # refused before anything trains
    assert res.returncode == 2 and "no configs/experiment/nope/two_tower.yaml" in res.stderr


def test_sweep_needs_its_two_arguments():
    res = _run(["scripts/sweep.sh", "bpr_optuna"])
    assert res.returncode != 0 and "usage: scripts/sweep.sh <hparams_search> <experiment>" in res.stderr


@pytest.mark.slow
def test_sweep_runs_one_trial(tmp_path, ml100k_data_root):
    res = _run(["scripts/sweep.sh", "bpr_optuna", "ml100k/bpr", "logger=none", "trainer.max_epochs=1",
                "trainer.limit_train_batches=3", "trainer.enable_progress_bar=false", "hydra.sweeper.n_trials=1",
                f"hydra.sweep.dir={tmp_path}", f"paths.data_dir={ml100k_data_root}"], timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "best_value" in (tmp_path / "optimization_results.yaml").read_text()


@pytest.mark.slow
def test_launch_gpu_journey_on_cpu(tmp_path, ml100k_data_root):
    """Train, then the four indices of the trained checkpoint: the script's real path with TRAINER=cpu."""
    out = tmp_path / "outputs"
    res = _run(["scripts/launch_gpu.sh", "logger=none", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
                "trainer.enable_progress_bar=false", "eval.progress=false", f"paths.data_dir={ml100k_data_root}"],
               timeout=1200, TRAINER="cpu", RECSYS_OUTPUTS=str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    run = Path(re.search(r"^run: (.+)$", res.stdout, re.M).group(1))
    assert {p.name for p in (run / "index").iterdir()} == {"flat", "ivf_flat", "ivf_pq", "hnsw"}


def test_bench_dlrm_runs_on_cpu():
    res = _run([sys.executable, "scripts/bench_dlrm.py", "--rows", "256", "--batch", "64", "--steps", "2", "--warmup", "1",
                "--hash-size", "100", "--dim", "8", "--device", "cpu"], MASTER_PORT=_free_port())
    assert res.returncode == 0, res.stderr[-2000:]
    assert '"device": "cpu"' in res.stdout


# ---- scripts/gpu_smoke.sh -------------------------------------------------------------------


def test_smoke_arguments():
    listed = _run(["scripts/gpu_smoke.sh", "--list"]).stdout.split()
    assert listed == ["versions", "fbgemm", "faiss", "pytest_gpu", "data", "two_tower", "dlrm_table_wise",
                      "dlrm_row_wise", "two_tower_sharded", "vllm", "ddp"]
    for bad in (["--bogus"], ["--only", "nope"], ["--device", "tpu"]):
        res = _run(["scripts/gpu_smoke.sh", *bad])
        assert res.returncode == 2 and res.stderr.strip(), bad
    docs = (ROOT / "docs" / "gpu.md").read_text()
    assert all(f"`{name}`" in docs for name in listed), "docs/gpu.md must describe every check"


def _smoke(tmp_path, only: str, **env) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    res = _run(["scripts/gpu_smoke.sh", "--device", "cpu", "--only", only, "--out", str(tmp_path / "smoke")], timeout=1500, **env)
    return res, {name: s for s, name in re.findall(r"^(PASS|FAIL|SKIP)\s+(\S+)", res.stdout, re.M)}


def test_smoke_cpu_fallbacks_of_the_quick_checks(tmp_path):
    res, status = _smoke(tmp_path, "versions,fbgemm,faiss,pytest_gpu,vllm")
    assert status == {"versions": "PASS", "fbgemm": "PASS", "faiss": "PASS", "pytest_gpu": "SKIP", "vllm": "SKIP"}, res.stdout
    assert res.returncode == 0 and "3 passed, 0 failed, 2 skipped" in res.stdout


def test_smoke_on_cuda_without_a_gpu_stops_at_once_with_the_reason(tmp_path):
    """The default --device cuda on this CPU box: one line that says what to check, no check runs."""
    res = _run(["scripts/gpu_smoke.sh", "--out", str(tmp_path / "smoke")])
    assert res.returncode == 1 and not re.search(r"^(PASS|FAIL|SKIP) ", res.stdout, re.M), res.stdout
    assert "torch sees no CUDA device" in res.stderr and "nvidia-smi" in res.stderr and "--device cpu" in res.stderr


def test_smoke_pytest_checks_fail_when_every_test_was_skipped(tmp_path):
    """pytest_gpu / vllm use pytest_ran: all skipped (no GPU, no vllm) is FAIL, never PASS; a pass is PASS."""
    (tmp_path / "test_skips.py").write_text("import pytest\n\ndef test_a():\n    pytest.skip('vllm is not installed')\n")
    (tmp_path / "test_runs.py").write_text("def test_b():\n    assert True\n")
    body = re.search(r"^pytest_ran\(\) \{.*?^\}", (ROOT / "scripts" / "gpu_smoke.sh").read_text(), re.M | re.S).group(0)
    def ran(test: str) -> subprocess.CompletedProcess:
        return _run(["bash", "-c", f'{body}\npytest_ran "$1"', "_", str(tmp_path / test)], PY=sys.executable, OUT=str(tmp_path))
    skipped, passed = ran("test_skips.py"), ran("test_runs.py")
    assert skipped.returncode == 1 and "every one was skipped" in skipped.stdout and "vllm is not installed" in skipped.stdout
    assert passed.returncode == 0, passed.stdout


def test_versions_check_names_the_missing_device_before_pip_noise():
    res = _run([sys.executable, "scripts/gpu_checks.py", "versions", "--device", "cuda"])
    assert res.returncode == 1 and res.stderr.strip().splitlines()[-1].startswith("FAILED: torch sees no CUDA device")


def test_smoke_reports_a_failing_check(tmp_path):
    """A broken interpreter makes every check FAIL with its log, and the exit status 1."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text("#!/bin/sh\necho 'no such module' >&2\nexit 3\n")
    (fake / "python").chmod(0o755)
    res, status = _smoke(tmp_path, "versions", PYTHON=str(fake / "python"))
    assert status == {"versions": "FAIL"} and res.returncode == 1
    assert "exit 3" in res.stdout and "no such module" in res.stdout


@pytest.mark.slow
def test_smoke_cpu_fallbacks_of_the_training_checks(tmp_path):
    """Data, a two-tower epoch + IVF-PQ index, the sharded DLRM (table/row-wise, save + resume exact),
    the sharded two-tower and Lightning DDP: 2 gloo processes each, few steps."""
    res, status = _smoke(tmp_path, "data,two_tower,dlrm_table_wise,dlrm_row_wise,two_tower_sharded,ddp",
                         SMOKE_TRAIN_ARGS="trainer.limit_train_batches=3")
    assert set(status.values()) == {"PASS"} and len(status) == 6, res.stdout + res.stderr[-2000:]
    smoke = tmp_path / "smoke"
    assert "two_tower/index/index.json: built_on=cpu" in (smoke / "two_tower.log").read_text()  # index.json, not a log line
    assert (smoke / "prepare" / ".hydra").is_dir()  # the data step's Hydra output stays under --out
