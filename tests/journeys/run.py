"""Running README commands the way a user does, in a scratch copy of the checkout.

``Scratch`` is a fresh copy of the checkout's files (what a clone has; no data/, outputs/ or
.venv/) with ``.venv`` linked to the environment that runs the suite, so the README's relative
paths (``data/ml100k``, ``outputs/train/...``) land in the scratch area, never in the repo. Every
command is run by bash in that directory with the venv activated, as the README says.

The suite changes a README command in exactly these ways (``as_run``):

- training commands get ``SHORT`` appended (``python -m recsys.train``, also inside ``--retrain "..."``;
  ``make run``/``make serve`` through ``TRAIN_ARGS``; ``scripts/run_baselines.py`` after ``--``), a sweep
  also ``SHORT_SWEEP``: the same text every time, so "the same command again" stays the same command;
- servers get a free port (``port=N``; ``make serve`` through ``SERVE_ARGS``) and client lines that port
  instead of 8000;
- ``make`` gets ``-o .venv/.installed``: the environment running the suite is the one ``make setup``
  made (``make test`` made it before pytest started); the suite never reinstalls it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

# The README's "try any training command in a minute" override (it says so in these words).
SHORT = "trainer.max_epochs=2 trainer.limit_train_batches=10"
SHORT_SWEEP = "hydra.sweeper.n_trials=2"
README_PORT = 8000
# never copied: build outputs and what the commands under test write themselves
TOP_NOT_COPIED = {".git", ".venv", "data", "outputs", "multirun", "logs", "wandb", "artifacts", ".cache", ".whl"}
NOT_COPIED = {"__pycache__", ".pytest_cache", ".hypothesis"}
# a user's own settings that would send the commands' outputs elsewhere
CLEARED_ENV = ("RECSYS_DATA", "RECSYS_OUTPUTS", "PROJECT_ROOT", "RECSYS_SERVE_CONFIG", "VIRTUAL_ENV", "PYTHONHOME")


def as_run(text: str, port: int | None = None) -> str:
    """The command the suite runs for the README command ``text`` (see the module docstring)."""
    words = text.split()
    if words[:3] == ["python", "-m", "recsys.train"]:
        text += f" {SHORT}" + (f" {SHORT_SWEEP}" if "-m" in words[3:] else "")
    text = re.sub(r'--retrain "(python -m recsys\.train [^"]*)"', rf'--retrain "\1 {SHORT}"', text)
    if words[:2] == ["python", "scripts/run_baselines.py"]:
        text += f" {'' if '--' in words else '-- '}{SHORT}"
    if words[:1] == ["make"]:
        text = f"make -o .venv/.installed {text[5:]}"
        if {"run", "serve"} & set(words[1:]):
            text += f' TRAIN_ARGS="{SHORT}"'
    if port is not None:
        if words[:3] == ["python", "-m", "recsys.serve"]:
            text += f" port={port}"
        elif words[:1] == ["make"] and "serve" in words:
            text += f' SERVE_ARGS="port={port}"'
        text = text.replace(f"localhost:{README_PORT}", f"localhost:{port}")
    return text


def is_server(text: str) -> bool:
    words = text.split()
    return words[:3] == ["python", "-m", "recsys.serve"] or (words[:1] == ["make"] and "serve" in words)


@dataclass
class Result:
    command: str
    returncode: int
    stdout: str
    stderr: str
    wall_s: float

    def report(self, start: str) -> list[str]:
        """stdout from the first line starting with ``start`` (Hydra's console log shares stdout)."""
        lines = self.stdout.splitlines()
        at = next((i for i, ln in enumerate(lines) if ln.startswith(start)), None)
        assert at is not None, f"no line starting {start!r} in the output of {self.command}:\n{self.stdout[-3000:]}"
        return lines[at:]

    def __str__(self) -> str:
        return f"$ {self.command}\n(exit {self.returncode}, {self.wall_s:.1f} s)\n{self.stdout[-3000:]}\n{self.stderr[-4000:]}"


class Scratch:
    """A scratch checkout at ``root``: the repo's files copied, ``.venv`` -> the suite's environment."""

    def __init__(self, root: Path, venv: Path | None = None):
        self.root = Path(root)
        venv = Path(venv or (sys.prefix if sys.prefix != sys.base_prefix else ROOT / ".venv"))
        if not (venv / "bin" / "activate").is_file():
            raise RuntimeError(f"the journeys need the venv `make setup` makes (no {venv}/bin/activate)")
        shutil.copytree(ROOT, self.root, symlinks=True, ignore=_not_copied)
        (self.root / ".venv").symlink_to(venv)
        env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
        # what `. .venv/bin/activate` does, for the commands run after the README's activation line;
        # PYTHONPATH: the copy's package, as an editable install in a real clone points at the clone
        env.update(VIRTUAL_ENV=str(self.root / ".venv"), PATH=f"{self.root / '.venv' / 'bin'}:{env.get('PATH', '')}",
                   PYTHONPATH=str(self.root), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", WANDB_MODE="offline")
        self.env = env
        self.times: list[tuple[str, float]] = []  # (command as run, wall seconds), in order

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def popen(self, command: str, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env: dict | None = None):
        """``bash -c command`` in its own process group (so a kill reaches every process it started)."""
        return subprocess.Popen(["bash", "-o", "pipefail", "-c", command], cwd=self.root, env=env or self.env,
                                stdout=stdout, stderr=stderr, text=True, start_new_session=True)

    def run(self, command: str, timeout: float = 900, check: bool = True, env: dict | None = None) -> Result:
        t0 = time.perf_counter()
        proc = self.popen(command, env=env)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            out, err = proc.communicate()
            raise AssertionError(f"timed out after {timeout} s: {command}\n{out[-2000:]}\n{err[-3000:]}") from None
        res = Result(command, proc.returncode, out, err, time.perf_counter() - t0)
        self.times.append((command, res.wall_s))
        if check:
            assert res.returncode == 0, str(res)
        return res


def _not_copied(folder: str, names: list[str]) -> list[str]:
    top = Path(folder) == ROOT
    return [n for n in names if n in NOT_COPIED or n.endswith(".egg-info") or (top and n in TOP_NOT_COPIED)]


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


class Server:
    """A README serve command (``python -m recsys.serve ...`` or ``make serve``) running in the background,
    as in a user's second terminal; ``stop`` is the user's Ctrl-C (SIGINT to the whole group)."""

    def __init__(self, scratch: Scratch, command: str, port: int, log: Path):
        self.scratch, self.command, self.port, self.log = scratch, command, port, Path(log)
        self.base = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.ready_s: float | None = None

    def start(self, timeout: float = 600) -> "Server":
        import httpx

        t0 = time.perf_counter()
        with open(self.log, "w") as f:
            self.proc = self.scratch.popen(self.command, stdout=f, stderr=subprocess.STDOUT)
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.command} exited with {self.proc.returncode}:\n{self.output()[-5000:]}")
            try:
                if httpx.get(self.base + "/health", timeout=2.0).status_code == 200:
                    self.ready_s = time.perf_counter() - t0
                    self.scratch.times.append((self.command + "  (until /health answers)", self.ready_s))
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        self.stop()
        raise AssertionError(f"{self.command}: no /health after {timeout} s:\n{self.output()[-5000:]}")

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        kill_group(self.proc, signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            kill_group(self.proc)
            self.proc.wait()
