"""The feedback store's interface: what every server process shares (served requests, the feedback log).

Three tables, the same in every backend (``sqlite.py``, ``postgres.py``)::

    requests(request_id PK, user_id, user_idx NULL, items (JSON list of item_idx), created_at)
    events(event_id PK growing, request_id, user_id, user_idx NULL, item_idx, event, value NULL, created_at)
           UNIQUE (request_id, item_idx, event)
    sessions(session_id PK, state (text: a conversation's state), updated_at)

``sessions`` holds the conversation state every worker reads (``recsys.serve.sessions``):
a session older than ``session_ttl_s`` is never read, and each process's writer
prunes expired sessions and all but the ``max_sessions`` most recent ones every
``session_prune_every`` session writes (so the table holds at most ``max_sessions``
plus that many per process). A session write commits without an fsync, like a
request record: it is visible to every process once its future resolves.

``events`` is an append-only log, and it is the shared state: whatever a worker
learns online (bandit posteriors, live profiles) is the fold of the log in
``event_id`` order (``recsys.serve.shared``).

Writes: group commit. Each process has one writer thread; callers enqueue a
unit (one request record, or the events of one HTTP call) and wait. The writer
takes what is queued within ``commit_window_ms`` (at most ``max_batch``
units), writes them all in one transaction (PostgreSQL: pipelined, one round
trip per batch) and commits once; then every waiter of the batch is answered.
If the batch fails, it is redone with a savepoint per unit, so a failing unit
fails alone and the events of one unit are all or none. A batch holding events commits durably (SQLite
``synchronous=FULL``, PostgreSQL ``synchronous_commit=on``: the log is
fsynced), so an acknowledged event survives ``kill -9`` and power loss. A batch
of request records only commits without an fsync: the log is sequential, so
it becomes durable with the next durable commit, which precedes any
acknowledged event that refers to it.

Idempotence: an event whose (request_id, item_idx, event) is stored already is
not written again; its caller gets the stored event's id and value (``new=False``).

Ordering: event ids grow in commit order (SQLite has one writer at a time;
PostgreSQL writers take a transaction-scoped advisory lock before inserting),
so a reader who has seen id n has seen every committed event <= n and
``events_after(n)`` is a complete tail of the log.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import Future
from dataclasses import dataclass
from typing import NamedTuple

import pandas as pd

EVENT_TYPES = ("impression", "click", "rating", "skip", "dwell")
EVENT_COLUMNS = ("event_id", "request_id", "user_id", "user_idx", "item_idx", "event", "value", "created_at")


@dataclass
class Event:
    """One feedback event to append (``created_at`` defaults to the commit's wall clock)."""

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


class StoredEvent(NamedTuple):
    """A row of ``events`` (fields in ``EVENT_COLUMNS`` order)."""

    event_id: int
    request_id: str
    user_id: str | None
    user_idx: int | None
    item_idx: int
    event: str
    value: float | None
    created_at: float


class Appended(NamedTuple):
    """What an append returns per event: the stored id, whether this call wrote it, and the stored value
    (for ``new=False`` the first event's, which stands: a repeat with another value changes nothing)."""

    event_id: int
    new: bool
    value: float | None = None


class _Unit(NamedTuple):
    kind: str  # "request" | "events" | "session"
    rows: list[tuple]
    future: Future


_STOP = object()
_UPSERT_SESSION = ("INSERT INTO sessions (session_id, state, updated_at) VALUES (?, ?, ?) ON CONFLICT (session_id) "
                   "DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at")


class Store(ABC):
    """Args:
        commit_window_ms: how long the writer waits for more units after the first of a batch.
        max_batch: the most units one transaction commits.
        readers: the most read connections this process keeps open.
        session_ttl_s: a conversation session not written for this long is expired.
        max_sessions: the sessions kept by a prune (the most recently written).
        session_prune_every: session writes of this process between prunes.
    """

    param = "?"  # the backend's placeholder in SQL written here

    def __init__(self, commit_window_ms: float = 2.0, max_batch: int = 1000, readers: int = 4,
                 session_ttl_s: float = 86_400.0, max_sessions: int = 100_000, session_prune_every: int = 100):
        if commit_window_ms < 0 or max_batch < 1 or readers < 1:
            raise ValueError("need commit_window_ms >= 0, max_batch >= 1, readers >= 1")
        if session_ttl_s <= 0 or max_sessions < 1 or session_prune_every < 1:
            raise ValueError("need session_ttl_s > 0, max_sessions >= 1, session_prune_every >= 1")
        self.window_s, self.max_batch = commit_window_ms / 1e3, int(max_batch)
        self.session_ttl_s, self.max_sessions = float(session_ttl_s), int(max_sessions)
        self.session_prune_every, self._session_writes = int(session_prune_every), 0
        self.last_committed_id = 0  # the highest event id this process's commits returned
        self._queue: queue.Queue = queue.Queue()
        self._idle: list = []
        self._n_readers, self._max_readers = 0, int(readers)
        self._readers_cv = threading.Condition()
        self._closed = False
        self._writer = threading.Thread(target=self._run, name=f"{type(self).__name__}-writer", daemon=True)

    def _start(self) -> None:
        """Subclasses call this once their schema exists."""
        self._writer.start()

    # ---- backend hooks -----------------------------------------------------------------
    @abstractmethod
    def _connect(self, writer: bool):
        """A new connection (the writer's, or a reader's in autocommit mode)."""

    @abstractmethod
    def _begin(self, cur, durable: bool) -> None:
        """Open the batch's transaction (durable: its commit is fsynced)."""

    @abstractmethod
    def _insert_events(self, cur, rows: list[tuple]) -> list[Appended]:
        """Insert events rows (request_id, user_id, user_idx, item_idx, event, value, created_at), in order;
        a row whose (request_id, item_idx, event) exists already (or appears earlier in ``rows``) gets that id."""

    def _insert_requests(self, cur, rows: list[tuple]) -> None:
        cur.executemany(self._sql("INSERT INTO requests VALUES (?, ?, ?, ?, ?)"), rows)

    # ---- writes ------------------------------------------------------------------------
    def submit_request(self, request_id: str, user_id: str | None, user_idx: int | None, items) -> Future:
        """Record a served list; the future resolves once it is committed (visible to every process)."""
        row = (request_id, user_id, user_idx, json.dumps([int(i) for i in items]), time.time())
        return self._submit("request", [row])

    def submit_events(self, events: list[Event]) -> Future:
        """Append events as one unit (all or none); resolves to ``list[Appended]`` once durable."""
        now = time.time()
        rows = [(e.request_id, e.user_id, e.user_idx, int(e.item_idx), e.event, e.value, e.created_at or now)
                for e in events]
        return self._submit("events", rows)

    def submit_session(self, session_id: str, state: str | None) -> Future:
        """Write (``state`` None: delete) a conversation session; resolves once committed (visible to all)."""
        return self._submit("session", [(session_id, state, time.time())])

    def log_request(self, request_id: str, user_id: str | None, user_idx: int | None, items) -> None:
        self.submit_request(request_id, user_id, user_idx, items).result()

    def append_many(self, events: list[Event]) -> list[int]:
        """Append events in one unit; returns their ids once durable (a duplicate gets the stored id)."""
        return [a.event_id for a in self.submit_events(events).result()]

    def append(self, event: Event) -> int:
        return self.append_many([event])[0]

    def _submit(self, kind: str, rows: list[tuple]) -> Future:
        if self._closed:
            raise RuntimeError("the feedback store is closed")
        fut: Future = Future()
        self._queue.put(_Unit(kind, rows, fut))
        return fut

    def _run(self) -> None:
        conn = None
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            batch, deadline = [first], time.monotonic() + self.window_s
            while len(batch) < self.max_batch:
                try:
                    unit = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if unit is _STOP:
                    stop = True
                    break
                batch.append(unit)
            try:
                conn = conn or self._connect(writer=True)
                results = self._commit_batch(conn, batch)
            except Exception as e:  # the whole batch failed (I/O error, lock timeout, lost connection)
                for u in batch:
                    u.future.set_exception(e)
                with contextlib.suppress(Exception):
                    conn.close()
                conn = None
                continue
            for u, res in zip(batch, results):
                (u.future.set_exception if isinstance(res, Exception) else u.future.set_result)(res)
        if conn is not None:
            conn.close()
        while True:  # a unit that raced ``close`` is refused, never left waiting
            try:
                unit = self._queue.get_nowait()
            except queue.Empty:
                return
            if unit is not _STOP:
                unit.future.set_exception(RuntimeError("the feedback store is closed"))

    def _commit_batch(self, conn, batch: list[_Unit]) -> list:
        """-> one result per unit (None for a request, list[Appended] for events, or the unit's exception)."""
        try:
            results = self._transaction(conn, batch, isolate=False)
        except Exception:  # redo unit by unit: only a unit that fails on its own is refused
            results = self._transaction(conn, batch, isolate=True)
        ids = [a.event_id for r in results if isinstance(r, list) for a in r]
        if ids:
            self.last_committed_id = max(self.last_committed_id, *ids)
        return results

    def _transaction(self, conn, batch: list[_Unit], isolate: bool) -> list:
        cur = conn.cursor()
        self._begin(cur, durable=any(u.kind == "events" for u in batch))
        try:
            if not isolate:
                results = self._write(cur, batch)
            else:
                results = []
                for u in batch:
                    cur.execute("SAVEPOINT unit")
                    try:
                        results += self._write(cur, [u])
                    except Exception as e:  # this unit only (a duplicate request id, a bad row)
                        cur.execute("ROLLBACK TO SAVEPOINT unit")
                        results.append(e)
                    cur.execute("RELEASE SAVEPOINT unit")
            cur.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                cur.execute("ROLLBACK")
            raise
        return results

    def _write(self, cur, units: list[_Unit]) -> list:
        requests = [r for u in units if u.kind == "request" for r in u.rows]
        if requests:
            self._insert_requests(cur, requests)
        sessions = {r[0]: r for u in units if u.kind == "session" for r in u.rows}  # the last write of each wins
        if sessions:
            self._write_sessions(cur, list(sessions.values()))
        appended = iter(self._insert_events(cur, [r for u in units if u.kind == "events" for r in u.rows]))
        return [[next(appended) for _ in u.rows] if u.kind == "events" else None for u in units]

    def _write_sessions(self, cur, rows: list[tuple]) -> None:
        """Upsert (or delete, state None) sessions rows (session_id, state, updated_at); prune now and then."""
        put = [r for r in rows if r[1] is not None]
        if put:
            cur.executemany(self._sql(_UPSERT_SESSION), put)
        gone = [(r[0],) for r in rows if r[1] is None]
        if gone:
            cur.executemany(self._sql("DELETE FROM sessions WHERE session_id = ?"), gone)
        self._session_writes += len(rows)
        if self._session_writes >= self.session_prune_every:
            self._session_writes = 0
            cur.execute(self._sql("DELETE FROM sessions WHERE updated_at < ?"), (time.time() - self.session_ttl_s,))
            cur.execute(self._sql("DELETE FROM sessions WHERE updated_at < (SELECT updated_at FROM sessions "
                                  "ORDER BY updated_at DESC LIMIT 1 OFFSET ?)"), (self.max_sessions - 1,))

    # ---- reads -------------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql if self.param == "?" else sql.replace("?", self.param)

    @contextlib.contextmanager
    def _reader(self):
        """A read connection from this process's small pool."""
        with self._readers_cv:
            while not self._idle and self._n_readers >= self._max_readers:
                self._readers_cv.wait()
            if self._idle:
                conn = self._idle.pop()
            else:
                conn, self._n_readers = None, self._n_readers + 1
        try:
            conn = conn or self._connect(writer=False)
        except BaseException:
            with self._readers_cv:
                self._n_readers -= 1
                self._readers_cv.notify()
            raise
        try:
            yield conn
        except BaseException:  # a broken connection is dropped, not reused
            with contextlib.suppress(Exception):
                conn.close()
            with self._readers_cv:
                self._n_readers -= 1
                self._readers_cv.notify()
            raise
        with self._readers_cv:
            self._idle.append(conn)
            self._readers_cv.notify()

    def _fetch(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._reader() as conn:
            cur = conn.cursor()
            cur.execute(self._sql(sql), params)
            return cur.fetchall()

    def request(self, request_id: str) -> dict | None:
        """The served request's record, or None if no committed request has this id."""
        rows = self._fetch("SELECT request_id, user_id, user_idx, items, created_at FROM requests WHERE request_id = ?",
                           (request_id,))
        if not rows:
            return None
        r = rows[0]
        return dict(request_id=r[0], user_id=r[1], user_idx=r[2], items=json.loads(r[3]), created_at=r[4])

    def events_after(self, after_id: int = 0, limit: int = 10_000) -> list[StoredEvent]:
        """Up to ``limit`` committed events with ``event_id > after_id``, oldest first."""
        rows = self._fetch(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE event_id > ? ORDER BY event_id LIMIT ?",
                           (int(after_id), int(limit)))
        return [StoredEvent(*r) for r in rows]

    def events(self, since_id: int = 0) -> pd.DataFrame:
        """Every event with ``event_id > since_id``, oldest first (columns ``EVENT_COLUMNS``)."""
        rows, last = [], since_id
        while chunk := self.events_after(last, 50_000):
            rows += chunk
            last = chunk[-1].event_id
        return pd.DataFrame(rows, columns=list(EVENT_COLUMNS))

    def session(self, session_id: str) -> str | None:
        """A conversation session's state, or None when there is none or it has expired."""
        rows = self._fetch("SELECT state FROM sessions WHERE session_id = ? AND updated_at >= ?",
                           (session_id, time.time() - self.session_ttl_s))
        return rows[0][0] if rows else None

    def count_sessions(self) -> int:
        return int(self._fetch("SELECT COUNT(*) FROM sessions")[0][0])

    def count(self) -> int:
        return int(self._fetch("SELECT COUNT(*) FROM events")[0][0])

    def event_ids(self) -> set[int]:
        return {r[0] for r in self._fetch("SELECT event_id FROM events")}

    def close(self) -> None:
        """Commit what is queued, stop the writer, close every connection."""
        if self._closed:
            return
        self._closed = True
        if self._writer.is_alive():
            self._queue.put(_STOP)
            self._writer.join()
        with self._readers_cv:
            for conn in self._idle:
                conn.close()
            self._idle.clear()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
