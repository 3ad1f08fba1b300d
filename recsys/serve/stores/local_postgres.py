"""A throwaway PostgreSQL server in a temporary directory, for tests and benchmarks of ``PostgresStore``.

    with LocalPostgres() as pg:          # initdb + pg_ctl start on a free loopback port
        store = PostgresStore(pg.url)    # postgresql://recsys@127.0.0.1:<port>/postgres (trust auth, loopback)

``LocalPostgres.missing()`` says why none can be started (no ``initdb``/``pg_ctl``
on PATH), so a test can skip with that reason. initdb refuses to run as root:
as root the server runs as the ``postgres`` system user (``runuser``), in a
directory handed to that user. The server is real (fsync on, WAL, the
default isolation), only its data and its lifetime are temporary.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from recsys.serve.process import free_port


class LocalPostgres:
    """Args:
        run_as: the system user for a root caller (ignored otherwise).
        start_timeout_s: how long ``pg_ctl start`` may wait for the server.
    """

    def __init__(self, run_as: str = "postgres", start_timeout_s: int = 60):
        self.run_as, self.start_timeout_s = run_as, int(start_timeout_s)
        self.port = free_port()
        self.dir: Path | None = None
        self.url = f"postgresql://recsys@127.0.0.1:{self.port}/postgres"

    @staticmethod
    def missing() -> str | None:
        """None when a server can be started, else the reason it cannot."""
        absent = [b for b in ("initdb", "pg_ctl") if shutil.which(b) is None]
        if absent:
            return f"PostgreSQL binaries not on PATH: {', '.join(absent)} (install PostgreSQL 15)"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root and there is no 'postgres' user to run the server as"
            if shutil.which("runuser") is None:
                return "running as root without runuser to drop privileges"
        return None

    def _run(self, *cmd: str) -> None:
        if os.geteuid() == 0:
            cmd = ("runuser", "-u", self.run_as, "--", *cmd)
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr[-2000:] or out.stdout[-2000:]}")

    def start(self) -> "LocalPostgres":
        reason = self.missing()
        if reason:
            raise RuntimeError(reason)
        self.dir = Path(tempfile.mkdtemp(prefix="recsys-pg-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam(self.run_as)
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        data = self.dir / "data"
        self._run("initdb", "-D", str(data), "-U", "recsys", "--auth=trust", "-E", "UTF8", "--no-instructions")
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        self._run("pg_ctl", "-D", str(data), "-o", opts, "-l", str(self.dir / "server.log"), "-w",
                  "-t", str(self.start_timeout_s), "start")
        return self

    def stop(self) -> None:
        if self.dir is None:
            return
        try:
            self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> "LocalPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
