"""The feedback store on PostgreSQL (psycopg 3): several hosts' workers share one database.

    feedback_db: postgresql://recsys@db.internal:5432/recsys       # password: PGPASSWORD or ~/.pgpass

The URL must not carry a password: Hydra writes the config (and the command
line's overrides) into the run's ``.hydra/`` directory, so libpq's own
environment (``PGPASSWORD``, ``PGPASSFILE``/``~/.pgpass``, ``PGUSER``...)
supplies it.

Same tables and semantics as the SQLite store (``base.Store``). Event ids come
from a sequence, which hands out numbers at insert time, not at commit; so
every transaction that inserts events first takes one transaction-scoped
advisory lock (``pg_advisory_xact_lock``): inserts and commits of events are
serialised, ids grow in commit order, and a reader's tail (``events_after``)
never skips an id that commits later. With group commit a transaction is a
whole batch, so the lock is taken a few hundred times a second at most.
A batch of request records only commits with ``synchronous_commit = off``.
"""

from __future__ import annotations

from recsys.serve.stores.base import Appended, Store

_LOCK_KEY = 0x7265637379  # the advisory lock that orders event inserts ("recsy")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY, user_id TEXT, user_idx BIGINT, items TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    event_id BIGSERIAL PRIMARY KEY, request_id TEXT NOT NULL, user_id TEXT, user_idx BIGINT,
    item_idx BIGINT NOT NULL, event TEXT NOT NULL, value DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL, CONSTRAINT events_once UNIQUE (request_id, item_idx, event));
CREATE INDEX IF NOT EXISTS events_user ON events(user_idx);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY, state TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_age ON sessions(updated_at);
"""
_INSERT = ("INSERT INTO events (request_id, user_id, user_idx, item_idx, event, value, created_at) "
           "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (request_id, item_idx, event) DO NOTHING RETURNING event_id")
_EXISTING = "SELECT event_id, value FROM events WHERE request_id = %s AND item_idx = %s AND event = %s"


def check_conninfo(url: str) -> str:
    """-> ``url``; refuses one that carries a password (it would be written to ``.hydra/``)."""
    from psycopg.conninfo import conninfo_to_dict

    if "password" in conninfo_to_dict(url):
        raise ValueError("the PostgreSQL URL carries a password, which Hydra would write into the run's .hydra/ "
                         "directory: remove it and set PGPASSWORD or a ~/.pgpass entry instead")
    return url


class PostgresStore(Store):
    """Args:
        url: a libpq connection string or ``postgresql://`` URL without a password.
        connect_timeout_s: how long a connection attempt may take.
        **kw: ``commit_window_ms``, ``max_batch``, ``readers`` (see ``base.Store``).
    """

    param = "%s"

    def __init__(self, url: str, connect_timeout_s: float = 10.0, **kw):
        super().__init__(**kw)
        self.url, self.connect_timeout_s = check_conninfo(url), float(connect_timeout_s)
        conn = self._connect(writer=True)
        try:
            with conn.transaction():  # workers starting together create the tables once
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                conn.execute(_SCHEMA)
        finally:
            conn.close()
        self._start()

    def _connect(self, writer: bool):
        import psycopg

        return psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(self.connect_timeout_s)),
                               application_name=f"recsys-{'writer' if writer else 'reader'}")

    def _begin(self, cur, durable: bool) -> None:
        cur.execute("BEGIN")
        # explicit either way: a server configured with synchronous_commit=off must not weaken the ack
        cur.execute(f"SET LOCAL synchronous_commit = {'on' if durable else 'off'}")
        if durable:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))

    def _insert_events(self, cur, rows: list[tuple]) -> list[Appended]:
        if not rows:
            return []
        cur.executemany(_INSERT, rows, returning=True)  # pipelined: one round trip for the batch
        ids = []
        while True:
            got = cur.fetchone()
            ids.append(None if got is None else int(got[0]))
            if not cur.nextset():
                break
        out = []
        for row, event_id in zip(rows, ids):
            if event_id is None:  # stored already (or earlier in this batch): the stored id, one query each
                cur.execute(_EXISTING, (row[0], row[3], row[4]))
                stored_id, value = cur.fetchone()
                out.append(Appended(int(stored_id), False, value))
            else:
                out.append(Appended(event_id, True, row[5]))
        return out
