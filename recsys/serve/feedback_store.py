"""Durable, append-only store of served requests and feedback events (SQLite, WAL).

An event is acknowledged (``append`` returns its id) only after its
transaction committed with ``synchronous=FULL``: in WAL mode that fsyncs the
log on every commit, so an acknowledged event survives a ``kill -9`` of the
process and a power cut. (Any committed transaction survives a ``kill -9`` of
the process alone, since SQLite has written it to the OS; the fsync is for
power loss.) Writers are serialised by a lock (one connection,
many server threads); readers (the refresh job, another process) open their
own connection and see every committed event.

Tables::

    requests(request_id TEXT PK, user_id TEXT, user_idx INT NULL, items TEXT (JSON list of item_idx), created_at REAL)
    events(event_id INTEGER PK AUTOINCREMENT, request_id TEXT, user_id TEXT, user_idx INT NULL,
           item_idx INT, event TEXT, value REAL NULL, created_at REAL)
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

EVENT_TYPES = ("impression", "click", "rating", "skip", "dwell")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY, user_id TEXT, user_idx INTEGER, items TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL, user_id TEXT, user_idx INTEGER,
    item_idx INTEGER NOT NULL, event TEXT NOT NULL, value REAL, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS events_user ON events(user_idx);
"""


@dataclass
class Event:
    request_id: str
    user_id: str | None
    user_idx: int | None
    item_idx: int
    event: str
    value: float | None = None
    created_at: float | None = None

    def __post_init__(self) -> None:
        if self.event not in EVENT_TYPES:
            raise ValueError(f"unknown event type {self.event!r}; expected one of {EVENT_TYPES}")


class FeedbackStore:
    """Args:
        path: the SQLite file (created with its directory); ``:memory:`` for tests that need no durability.
        busy_timeout_s: how long a writer waits for another process's lock before failing.
    """

    def __init__(self, path: str | Path, busy_timeout_s: float = 30.0):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # autocommit mode (isolation_level=None): transactions are explicit BEGIN/COMMIT below
        self._conn = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")  # fsync the WAL on every commit: acked == on disk
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _write(self, sql: str, rows: list[tuple], durable: bool = True) -> list[int]:
        with self._lock:
            cur = self._conn.cursor()
            # FULL fsyncs the WAL at this commit; NORMAL leaves it to the next FULL commit, which
            # persists everything before it too (the WAL is one sequential file)
            cur.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            cur.execute("BEGIN IMMEDIATE")
            try:
                ids = []
                for r in rows:
                    cur.execute(sql, r)
                    ids.append(cur.lastrowid)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            return ids

    # ---- writes (return only after commit) -------------------------------------------------
    def log_request(self, request_id: str, user_id: str | None, user_idx: int | None, items) -> None:
        """Record a served list, so feedback can be checked against (and joined with) it.

        Not fsynced on its own (it is on the hot path of every recommendation): it becomes
        durable with the next acknowledged event, which is always later than the request it
        refers to, so no durable event ever points at a lost request.
        """
        self._write("INSERT INTO requests VALUES (?, ?, ?, ?, ?)",
                    [(request_id, user_id, user_idx, json.dumps([int(i) for i in items]), time.time())], durable=False)

    def append(self, event: Event) -> int:
        """Append one event; returns its id once it is durable."""
        return self.append_many([event])[0]

    def append_many(self, events: list[Event]) -> list[int]:
        """Append events in one transaction (all or none); returns their ids once durable."""
        now = time.time()
        rows = [(e.request_id, e.user_id, e.user_idx, int(e.item_idx), e.event, e.value, e.created_at or now) for e in events]
        return self._write("INSERT INTO events (request_id, user_id, user_idx, item_idx, event, value, created_at) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    # ---- reads -----------------------------------------------------------------------------
    def request(self, request_id: str) -> dict | None:
        with self._lock:
            row = self._conn.execute("SELECT request_id, user_id, user_idx, items, created_at FROM requests "
                                     "WHERE request_id = ?", (request_id,)).fetchone()
        if row is None:
            return None
        return dict(request_id=row[0], user_id=row[1], user_idx=row[2], items=json.loads(row[3]), created_at=row[4])

    def events(self, since_id: int = 0) -> pd.DataFrame:
        """Every event with ``event_id > since_id``, oldest first."""
        with self._lock:
            return pd.read_sql_query("SELECT * FROM events WHERE event_id > ? ORDER BY event_id", self._conn,
                                     params=(since_id,))

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def event_ids(self) -> set[int]:
        with self._lock:
            return {r[0] for r in self._conn.execute("SELECT event_id FROM events")}
