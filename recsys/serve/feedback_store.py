"""Where callers import the feedback store from (``recsys.serve.stores`` holds the backends).

``FeedbackStore(path)`` is the embedded SQLite store (``stores.sqlite.SQLiteStore``);
``open_store(path_or_url)`` picks SQLite or PostgreSQL from its argument. Both
implement ``stores.base.Store``: group-committed, idempotent appends, a tail of
the event log in commit order (see that module for the exact semantics).
"""

from recsys.serve.stores import EVENT_COLUMNS, EVENT_TYPES, Appended, Event, Store, StoredEvent, open_store
from recsys.serve.stores.sqlite import SQLiteStore as FeedbackStore

__all__ = ["EVENT_COLUMNS", "EVENT_TYPES", "Appended", "Event", "FeedbackStore", "Store", "StoredEvent", "open_store"]
