"""Run ``python -m recsys.serve`` as a subprocess on loopback (load tests, fuzzing, durability tests).

    with ServerProcess(["paths.data_dir=data", "workers=2"], log_path=Path("server.err")) as srv:
        srv.wait_ready()
        httpx.get(srv.base + "/health")
        srv.kill_workers(1)            # kill -9 one worker; uvicorn's supervisor starts a new one

The server gets a free loopback port and ``OMP_NUM_THREADS=1``; on exit every
process of it (supervisor and workers) is stopped, with SIGKILL if SIGTERM is
not enough within 20 s.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    """uvicorn's workers among ``pid``'s children: multiprocessing "spawn" children (not the resource tracker)."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
        if ppid == pid and b"spawn_main" in cmdline:
            out.append(int(proc.name))
    return sorted(out)


class ServerProcess:
    """Args:
        overrides: ``configs/serve.yaml`` overrides (``port`` is added).
        log_path: where the server's stderr goes (appended).
        port: the port (default: a free one).
        stdout_path: where its stdout goes (appended; default: discarded).
    """

    def __init__(self, overrides: list[str], log_path: Path, port: int | None = None, stdout_path: Path | None = None):
        self.overrides, self.log_path = list(overrides), Path(log_path)
        self.stdout_path = None if stdout_path is None else Path(stdout_path)
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        # a port picked here can be taken by another process before the server binds it (free_port closes its
        # socket): wait_ready then restarts on a new one, a given port is never changed
        self._auto_port, self._rebinds, self._log_start = port is None, 3, 0

    def start(self) -> "ServerProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        cmd = [sys.executable, "-m", "recsys.serve", *self.overrides, f"port={self.port}"]
        with open(self.log_path, "ab") as err, open(self.stdout_path or os.devnull, "ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err,
                                         env={**os.environ, "OMP_NUM_THREADS": "1"})
        return self

    def wait_ready(self, timeout: float = 240.0, workers: int = 1) -> float:
        """Seconds until ``/health`` answered from ``workers`` distinct processes (X-Log-Id names them)."""
        import httpx

        t0, seen = time.time(), set()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                if self._auto_port and self._rebinds > 0 and self._lost_port_race():
                    self._rebinds -= 1
                    self.port = free_port()
                    self.base = f"http://127.0.0.1:{self.port}"
                    self.start()
                    continue
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                r = httpx.get(self.base + "/health", timeout=2.0)  # a new connection each time: any worker may answer
                if r.status_code == 200:
                    seen.add(r.headers.get("x-log-id", "0-").split("-")[0])
                    if len(seen) >= workers:
                        return time.time() - t0
                    continue
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready after {timeout} s ({len(seen)} of {workers} workers answered)")

    def _lost_port_race(self) -> bool:
        """Did this start's server exit because its port was taken? (uvicorn: "[Errno 98] Address already in use",
        or "... error while attempting to bind on address (...): address already in use")"""
        with open(self.log_path, "rb") as f:
            f.seek(self._log_start)
            return b"address already in use" in f.read().lower()

    def worker_pids(self) -> list[int]:
        return _children(self.proc.pid) if self.proc is not None else []

    def kill_workers(self, n: int | None = None) -> list[int]:
        """``kill -9`` ``n`` workers (all when None) -> their pids; the supervisor replaces them."""
        pids = self.worker_pids()[:n]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        return pids

    def kill_all(self) -> list[int]:
        """``kill -9`` the supervisor and every worker at once (the whole server dies) -> pids."""
        pids = [self.proc.pid, *self.worker_pids()]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        return pids

    def stop(self) -> None:
        if self.proc is None:
            return
        workers = self.worker_pids()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in workers:  # orphans of a supervisor that was killed
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
