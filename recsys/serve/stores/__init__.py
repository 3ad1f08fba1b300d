"""Feedback stores behind one interface (``base.Store``): SQLite (embedded default) and PostgreSQL.

    open_store("outputs/serve/feedback.sqlite")            # a path: SQLite, WAL
    open_store("postgresql://recsys@db:5432/recsys")       # a URL: PostgreSQL (password from PGPASSWORD)
"""

from __future__ import annotations

from pathlib import Path

from recsys.serve.stores.base import EVENT_COLUMNS, EVENT_TYPES, Appended, Event, Store, StoredEvent

__all__ = ["EVENT_COLUMNS", "EVENT_TYPES", "Appended", "Event", "Store", "StoredEvent", "open_store"]


def open_store(target: str | Path, **kw) -> Store:
    """A ``postgresql://``/``postgres://`` URL opens a ``PostgresStore``, anything else a ``SQLiteStore`` path.

    ``kw``: ``commit_window_ms``, ``max_batch``, ``readers`` and the backend's own options.
    """
    if str(target).startswith(("postgresql://", "postgres://")):
        from recsys.serve.stores.postgres import PostgresStore

        return PostgresStore(str(target), **kw)
    from recsys.serve.stores.sqlite import SQLiteStore

    return SQLiteStore(target, **kw)
