"""The embedded feedback store: one SQLite file in WAL mode, shared by the workers of one host.

Every process opens the file itself: one writer connection (the group-commit
thread of ``base.Store``) and a few readers. WAL lets readers run beside the
writer; writers of different processes take turns on SQLite's write lock
(``BEGIN IMMEDIATE``, waiting up to ``busy_timeout_s``), and since each
transaction carries a whole batch the turns are few. ``synchronous=FULL`` on a
batch with events fsyncs the WAL at its commit; ``NORMAL`` on a batch of
request records only leaves the fsync to the next FULL commit.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path

from recsys.serve.stores.base import Appended, Store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY, user_id TEXT, user_idx INTEGER, items TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL, user_id TEXT, user_idx INTEGER,
    item_idx INTEGER NOT NULL, event TEXT NOT NULL, value REAL, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS events_user ON events(user_idx);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY, state TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_age ON sessions(updated_at);
"""
_UNIQUE = "CREATE UNIQUE INDEX IF NOT EXISTS events_once ON events(request_id, item_idx, event)"
_INSERT = ("INSERT INTO events (request_id, user_id, user_idx, item_idx, event, value, created_at) "
           "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (request_id, item_idx, event) DO NOTHING")
_EXISTING = "SELECT event_id, value FROM events WHERE request_id = ? AND item_idx = ? AND event = ?"


class SQLiteStore(Store):
    """Args:
        path: the SQLite file (created with its directory); ``:memory:`` for a private
            in-process database (tests that need no durability).
        busy_timeout_s: how long a writer waits for another process's write lock.
        **kw: ``commit_window_ms``, ``max_batch``, ``readers`` (see ``base.Store``).
    """

    def __init__(self, path: str | Path, busy_timeout_s: float = 30.0, **kw):
        super().__init__(**kw)
        self.path, self.busy_timeout_s = str(path), float(busy_timeout_s)
        if self.path == ":memory:":  # one named in-memory database shared by this store's connections
            self._target, self._uri = f"file:recsys-{uuid.uuid4().hex}?mode=memory&cache=shared", True
        else:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._target, self._uri = self.path, False
        self._keepalive = self._connect(writer=True)  # also keeps a :memory: database alive
        if not self._uri:
            self._enable_wal()
        self._keepalive.executescript(_SCHEMA)
        try:
            self._keepalive.execute(_UNIQUE)
        except sqlite3.IntegrityError as e:
            n = self._keepalive.execute("SELECT COUNT(*) - COUNT(DISTINCT request_id || ' ' || item_idx || ' ' || event) "
                                        "FROM events").fetchone()[0]
            raise RuntimeError(f"{self.path}: {n} duplicate (request_id, item_idx, event) events written before "
                               "feedback became idempotent; serve with a new feedback_db (this one stays readable "
                               "by the refresh job)") from e
        self._start()

    def _enable_wal(self) -> None:
        """``PRAGMA journal_mode=WAL``, retried: two processes opening a new file at once can get "database is
        locked" from it at once, without SQLite's busy handler waiting (the switch needs the file to itself)."""
        deadline = time.monotonic() + self.busy_timeout_s
        while True:
            try:
                self._keepalive.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _connect(self, writer: bool):
        # autocommit mode (isolation_level=None): transactions are the explicit BEGIN/COMMIT of base.Store
        conn = sqlite3.connect(self._target, timeout=self.busy_timeout_s, isolation_level=None,
                               check_same_thread=False, uri=self._uri)
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
        return conn

    def _begin(self, cur, durable: bool) -> None:
        cur.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        cur.execute("BEGIN IMMEDIATE")

    def _insert_events(self, cur, rows: list[tuple]) -> list[Appended]:
        out = []  # row by row: an in-process call each, and lastrowid names the row
        for row in rows:
            cur.execute(_INSERT, row)
            if cur.rowcount == 1:
                out.append(Appended(int(cur.lastrowid), True, row[5]))
            else:
                event_id, value = cur.execute(_EXISTING, (row[0], row[3], row[4])).fetchone()
                out.append(Appended(int(event_id), False, value))
        return out

    def close(self) -> None:
        super().close()
        self._keepalive.close()
