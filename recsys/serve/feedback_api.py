"""Feedback routes: only for what was served, once per (request, item, event), acknowledged when durable.

    POST /feedback          FeedbackEvent  -> FeedbackAck
    POST /feedback/batch    FeedbackBatch  -> FeedbackAck (all events or none)

An event is accepted when

- its ``request_id`` names a served list (404 otherwise), recorded by
  ``ServedRequests.log`` in the store before the list was returned, so every
  worker can check it;
- its item was in that list (404 for an unknown item id, 422 for a known item
  that was not served in that request);
- ``user_id``, if the body has one, is the user the list was served to (422
  otherwise): the stored user is always the request record's, never the body's;
- its request id has a token for every event of the call (429 with
  ``Retry-After`` otherwise, and nothing of the call is stored): a token bucket
  of ``burst`` events refilled at ``rate_per_s`` per request id and worker; a
  batch takes one token per event, so one with more events for a request id
  than ``burst`` is always refused (split it). Per worker, by choice (not
  shared through the store): with N workers a request id can get up to N times
  that; the unique key bounds what is stored in any case (at most one event
  per item and type).

Errors name the field, and in a batch the event's position
(``events[2].item_id: not found in the catalogue``), never an id the caller sent.

Accepted events go to the store's group commit as one unit; the reply waits
for the durable commit without holding a thread. A (request, item, event) that
is stored already is not stored again: the ack carries the stored event's id
and ``new: false`` (a client's retry after a lost reply is therefore safe); one
that carried another value (a re-rating) gets a ``notes`` entry saying the
first value stands. Nothing is applied to the recommender here: every worker applies the log in
order (``recsys.serve.shared``), this one before its next recommendation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import OrderedDict

from fastapi import APIRouter, HTTPException
from starlette.concurrency import run_in_threadpool

from recsys.serve.errors import safe_text
from recsys.serve.schemas import FeedbackAck, FeedbackBatch, FeedbackEvent
from recsys.serve.stores import Event, Store

log = logging.getLogger(__name__)


class ServedRequests:
    """Served-list records: written to the store, and cached (they never change once written).

    Args:
        store: the feedback store.
        cache_size: how many records this worker keeps in memory (least recently used dropped).
    """

    def __init__(self, store: Store, cache_size: int = 50_000):
        self.store, self.cache_size = store, int(cache_size)
        self._cache: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()

    def _keep(self, record: dict) -> None:
        with self._lock:
            self._cache[record["request_id"]] = record
            self._cache.move_to_end(record["request_id"])
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def log(self, request_id: str, user_id: str | None, user_idx: int | None, items) -> None:
        """Record a served list; returns once the record is committed (visible to every worker)."""
        items = [int(i) for i in items]
        with self._unavailable():
            self.store.log_request(request_id, user_id, user_idx, items)
        self._keep(dict(request_id=request_id, user_id=user_id, user_idx=user_idx, items=items))

    async def log_async(self, request_id: str, user_id: str | None, user_idx: int | None, items) -> None:
        """``log`` without holding a thread: the event loop waits for the group commit."""
        items = [int(i) for i in items]
        with self._unavailable():
            await asyncio.wrap_future(self.store.submit_request(request_id, user_id, user_idx, items))
        self._keep(dict(request_id=request_id, user_id=user_id, user_idx=user_idx, items=items))

    @contextlib.contextmanager
    def _unavailable(self):
        try:
            yield
        except Exception as e:  # without the record no feedback could refer to the list: do not serve it
            log.error("served list not recorded: %s: %s", type(e).__name__, safe_text(e))
            raise HTTPException(503, "the feedback store is unavailable; retry") from None

    def cached(self, request_id: str) -> dict | None:
        with self._lock:
            return self._cache.get(request_id)

    def get(self, request_id: str) -> dict | None:
        """The record (cache, then store), or None for a request id no worker served."""
        record = self.cached(request_id)
        if record is None:
            record = self.store.request(request_id)
            if record is not None:
                self._keep(record)
        return record


class RateLimiter:
    """Token bucket per key: ``burst`` tokens, refilled at ``rate_per_s``; the ``max_keys`` most recent kept.

    Every event takes one token, whether it came alone or in a batch: a call is granted only if its
    request id has a token for each of its events, and takes them all (or none).
    """

    def __init__(self, rate_per_s: float = 20.0, burst: int = 200, max_keys: int = 100_000):
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("feedback rate_per_s must be > 0 and burst >= 1")
        self.rate, self.burst, self.max_keys = float(rate_per_s), float(burst), int(max_keys)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str, n: int = 1) -> float:
        """Take ``n`` tokens -> 0.0 if granted, else the seconds until they would be (for ``n`` over the
        burst, which is never granted: until the bucket is full)."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            granted = tokens >= n
            self._buckets[key] = (tokens - n if granted else tokens, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return 0.0 if granted else max((min(n, self.burst) - tokens) / self.rate, 1e-3)


def _at(where: str, i: int | None, field: str) -> str:
    """The location of ``field`` of event ``i``: ``item_id`` (one event) or ``events[3].item_id`` (a batch)."""
    return field if i is None else f"{where}[{i}].{field}"


def feedback_router(recommender, served: ServedRequests, limiter: RateLimiter) -> APIRouter:
    router = APIRouter()

    def to_event(ev: FeedbackEvent, i: int | None) -> Event:
        # errors name the field (and the event's position in a batch), never the ids the caller sent
        record = served.get(ev.request_id)
        if record is None:
            raise HTTPException(404, f"{_at('events', i, 'request_id')}: not found (no list was served with it)")
        j = recommender.item_idx(ev.item_id)
        if j is None:
            raise HTTPException(404, f"{_at('events', i, 'item_id')}: not found in the catalogue")
        if j not in record["items"]:
            raise HTTPException(422, f"{_at('events', i, 'item_id')}: not served in that request")
        if ev.user_id is not None and ev.user_id != record["user_id"]:
            raise HTTPException(422, f"{_at('events', i, 'user_id')}: not the user that request was served to")
        return Event(ev.request_id, record["user_id"], record["user_idx"], j, ev.event, ev.value)

    def to_events(events: list[FeedbackEvent], batch: bool) -> list[Event]:
        return [to_event(ev, i if batch else None) for i, ev in enumerate(events)]

    def take_tokens(events: list[FeedbackEvent], batch: bool) -> None:
        """One token per event from its request id's bucket (429 + Retry-After when they are not all there)."""
        first: dict[str, int] = {}
        count: dict[str, int] = {}
        for i, ev in enumerate(events):
            first.setdefault(ev.request_id, i)
            count[ev.request_id] = count.get(ev.request_id, 0) + 1
        for rid, n in count.items():
            wait = limiter.take(rid, n)
            if wait > 0:
                where = _at("events", first[rid] if batch else None, "request_id")
                detail = (f"{where}: {n} events for one request_id in one call, more than the burst of "
                          f"{int(limiter.burst)}; send them in smaller batches" if n > limiter.burst else
                          f"{where}: too much feedback for this request_id ({n} events, rate "
                          f"{limiter.rate:g}/s, burst {int(limiter.burst)}); retry later")
                raise HTTPException(429, detail, headers={"Retry-After": str(max(1, math.ceil(wait)))})

    async def accept(events: list[FeedbackEvent], batch: bool = False) -> FeedbackAck:
        # served records this worker holds need no store read, so no thread either
        if all(served.cached(ev.request_id) is not None for ev in events):
            rows = to_events(events, batch)
        else:
            rows = await run_in_threadpool(to_events, events, batch)
        take_tokens(events, batch)
        try:
            appended = await asyncio.wrap_future(served.store.submit_events(rows))
        except Exception as e:  # the store refused the whole batch (I/O error, lock timeout): nothing acknowledged
            log.error("feedback not stored: %s: %s", type(e).__name__, safe_text(e))
            raise HTTPException(503, "the feedback store is unavailable; the events were not stored") from None
        # idempotent on (request, item, event): a repeat with another value changes nothing, and says so
        notes = [f"{_at('events', i if batch else None, 'value')}: this (request, item, event) is stored already "
                 f"with value {a.value:g}; the first value stands, this one was not stored"
                 for i, (a, row) in enumerate(zip(appended, rows))
                 if not a.new and a.value is not None and row.value != a.value]
        return FeedbackAck(event_ids=[a.event_id for a in appended], new=[a.new for a in appended], notes=notes)

    @router.post("/feedback", response_model=FeedbackAck)
    async def feedback(ev: FeedbackEvent) -> FeedbackAck:
        return await accept([ev])

    @router.post("/feedback/batch", response_model=FeedbackAck)
    async def feedback_batch(batch: FeedbackBatch) -> FeedbackAck:
        return await accept(batch.events, batch=True)

    return router
