"""Run an entry point the way a user does: ``python -m <module> <overrides>`` in a subprocess.

    run_module(["recsys.train", "experiment=ml100k/seq_dlrm"], cwd=tmp_path)   # -> CompletedProcess

The environment is the test's own plus the repository on PYTHONPATH, one OpenMP thread, W&B offline
and no model hub; a non-zero exit fails the test with the command and the tails of its output.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_module(args: list[str], cwd, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(args)}\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    return p
