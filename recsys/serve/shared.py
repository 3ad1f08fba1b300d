"""What the server's workers share, and how one worker keeps its copy current.

The shared state is the feedback store: served-request records (read per
feedback call) and the event log. Everything learned online (the exploration
bandit's posteriors, the users' live profiles) is the fold of that log in
``event_id`` order, and every worker holds that fold for its own requests:
``SharedState`` reads the log's tail (``Store.events_after``) and applies it
through the recommender's feedback API (``Recommender.observe``), oldest first,
each event exactly once per worker. So N workers, whichever of them took a
click, converge on the same posteriors and profiles, and a restarted worker
rebuilds them at start-up (``catch_up``, the replay of the whole log) before it
serves.

Staleness bound (``fresh``, called before each recommendation): a worker
catches up whenever its own process has committed events it has not applied
(so a client that got an ack and asks the same worker again sees its
feedback), and otherwise at most ``max_staleness_s`` after its last catch-up:
a request sees every event that any worker acknowledged at least
``max_staleness_s`` (plus one catch-up's duration) before the request began.

Concurrency inside a worker: requests run the pipeline without a global lock;
the only lock is the one a stage that learns online (has an ``update``: the
bandit) holds while it samples or updates, microseconds. Sources, filters on
the caller's constraints, ranking and diversity run concurrently. Live-profile
updates are single container operations on CPython (atomic under the GIL), so
a concurrent request sees a profile before or after an event, never a broken one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from itertools import groupby

from recsys.pipeline.context import event_polarity
from recsys.serve.stores import Store, StoredEvent


class SerializedStage:
    """A pipeline stage that learns online, with its sampling and updates under one lock.

    Transparent otherwise: attributes, and the signature ``inspect`` finds (through
    ``__wrapped__``), are the stage's own.
    """

    def __init__(self, stage, lock: threading.Lock):
        self.__wrapped__, self._lock = stage, lock

    def __call__(self, *args, **kwargs):
        with self._lock:
            return self.__wrapped__(*args, **kwargs)

    def update(self, *args, **kwargs):
        with self._lock:
            return self.__wrapped__.update(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.__wrapped__, name)


def serialize_learning_stages(pipeline, lock: threading.Lock) -> list[str]:
    """Wrap every stage of ``pipeline`` that has an ``update`` in :class:`SerializedStage` -> their names."""
    names = [n for n, s in pipeline.stages.items() if hasattr(s, "update") and not isinstance(s, SerializedStage)]
    for n in names:
        pipeline.stages[n] = SerializedStage(pipeline.stages[n], lock)
    return names


def reward_and_polarity(event: str, value: float | None, negative_threshold: float,
                        dwell_click_s: float) -> tuple[float, bool | None]:
    """-> (bandit reward in {0, 1}, profile effect: ``event_polarity``, the one definition)."""
    polarity = event_polarity(event, value, negative_threshold)
    if event == "click":
        return 1.0, polarity
    if event == "rating":
        return float(value >= 4.0), polarity
    if event == "dwell":
        return float(value >= dwell_click_s), polarity
    return 0.0, polarity  # impression, skip


def observe_events(recommender, negative_threshold: float = 2.0, dwell_click_s: float = 30.0
                   ) -> Callable[[list[StoredEvent]], None]:
    """-> ``apply(events)``: feeds stored events, in order, to ``recommender.observe`` (one call per run of a user).

    ``observe`` updates the bandit and the user's ``LiveProfiles`` (by the external user id, so a user the
    tables do not know has a live profile too).
    """

    def apply(events: list[StoredEvent]) -> None:
        for (user_idx, user_id), run in groupby(events, key=lambda e: (e.user_idx, e.user_id)):
            run = list(run)
            effects = [reward_and_polarity(e.event, e.value, negative_threshold, dwell_click_s) for e in run]
            recommender.observe(user_idx, [e.item_idx for e in run], [r for r, _ in effects], [p for _, p in effects],
                                user_id=user_id)

    return apply


class SharedState:
    """One worker's fold of the store's event log (see the module docstring).

    Args:
        store: the feedback store every worker writes to.
        apply: ``apply(events)`` folds events (oldest first) into this worker's state.
        max_staleness_s: the longest a request may go without a catch-up.
        chunk: events read per query.
    """

    def __init__(self, store: Store, apply: Callable[[list[StoredEvent]], None], max_staleness_s: float = 0.05,
                 chunk: int = 10_000):
        if max_staleness_s < 0:
            raise ValueError(f"max_staleness_s must be >= 0, got {max_staleness_s}")
        self.store, self.apply = store, apply
        self.max_staleness_s, self.chunk = float(max_staleness_s), int(chunk)
        self.cursor = 0  # the highest event id applied here
        self.applied = 0
        self._last = float("-inf")
        self._catching_up = threading.RLock()

    def _due(self) -> bool:
        return (self.store.last_committed_id > self.cursor
                or time.monotonic() - self._last >= self.max_staleness_s)

    def fresh(self) -> None:
        """Catch up if this worker has committed unapplied events or the last catch-up is too old."""
        if self._due():
            with self._catching_up:
                if self._due():  # another thread may have just done it
                    self.catch_up()

    def catch_up(self) -> int:
        """Apply every committed event after ``cursor`` -> how many were applied."""
        with self._catching_up:
            started, n = time.monotonic(), 0
            while events := self.store.events_after(self.cursor, self.chunk):
                self.apply(events)
                self.cursor = events[-1].event_id
                n += len(events)
                if len(events) < self.chunk:
                    break
            self._last, self.applied = started, self.applied + n
            return n
