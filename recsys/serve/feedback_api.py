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
- its request id has tokens left (429 with ``Retry-After``): a token bucket of
  ``burst`` events refilled at ``rate_per_s`` per request id and worker, so
  with N workers a request id can get at most N times that; the unique key
  bounds what is stored in any case (at most one event per item and type).

Accepted events go to the store's group commit as one unit; the reply waits
for the durable commit without holding a thread. A (request, item, event) that
is stored already is not stored again: the ack carries the stored event's id
and ``new: false`` (a client's retry after a lost reply is therefore safe).
Nothing is applied to the recommender here: every worker applies the log in
order (``recsys.serve.shared``), this one before its next recommendation.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict

from fastapi import APIRouter, HTTPException
from starlette.concurrency import run_in_threadpool

from recsys.serve.limits import safe_text
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
        try:
            self.store.log_request(request_id, user_id, user_idx, items)
        except Exception as e:  # without the record no feedback could refer to the list: do not serve it
            log.error("served list not recorded: %s: %s", type(e).__name__, safe_text(e))
            raise HTTPException(503, "the feedback store is unavailable; retry") from None
        self._keep(dict(request_id=request_id, user_id=user_id, user_idx=user_idx, items=items))

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
    """Token bucket per key: ``burst`` tokens, refilled at ``rate_per_s``; the ``max_keys`` most recent kept."""

    def __init__(self, rate_per_s: float = 20.0, burst: int = 200, max_keys: int = 100_000):
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("feedback rate_per_s must be > 0 and burst >= 1")
        self.rate, self.burst, self.max_keys = float(rate_per_s), float(burst), int(max_keys)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str, n: int = 1) -> float:
        """Take ``n`` tokens -> 0.0 if granted, else the seconds until they would be."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            wait = 0.0 if tokens >= n else (min(n, self.burst) - tokens) / self.rate
            self._buckets[key] = (tokens - n if wait == 0.0 else tokens, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return wait


def feedback_router(recommender, served: ServedRequests, limiter: RateLimiter) -> APIRouter:
    router = APIRouter()

    def to_event(ev: FeedbackEvent) -> Event:
        record = served.get(ev.request_id)
        if record is None:
            raise HTTPException(404, f"unknown request_id {ev.request_id!r}")
        j = recommender.item_idx(ev.item_id)
        if j is None:
            raise HTTPException(404, f"unknown item_id {ev.item_id!r}")
        if j not in record["items"]:
            raise HTTPException(422, f"item_id {ev.item_id!r} was not served in request {ev.request_id!r}")
        if ev.user_id is not None and ev.user_id != record["user_id"]:
            raise HTTPException(422, f"user_id does not match the user request {ev.request_id!r} was served to")
        return Event(ev.request_id, record["user_id"], record["user_idx"], j, ev.event, ev.value)

    def to_events(events: list[FeedbackEvent]) -> list[Event]:
        return [to_event(ev) for ev in events]

    async def accept(events: list[FeedbackEvent]) -> FeedbackAck:
        # served records this worker holds need no store read, so no thread either
        if all(served.cached(ev.request_id) is not None for ev in events):
            rows = to_events(events)
        else:
            rows = await run_in_threadpool(to_events, events)
        per_request: dict[str, int] = {}
        for ev in events:
            per_request[ev.request_id] = per_request.get(ev.request_id, 0) + 1
        for rid, n in per_request.items():
            wait = limiter.take(rid, n)
            if wait > 0:
                raise HTTPException(429, f"too much feedback for request {rid!r}; retry later",
                                    headers={"Retry-After": str(max(1, round(wait)))})
        try:
            appended = await asyncio.wrap_future(served.store.submit_events(rows))
        except Exception as e:  # the store refused the whole batch (I/O error, lock timeout): nothing acknowledged
            log.error("feedback not stored: %s: %s", type(e).__name__, safe_text(e))
            raise HTTPException(503, "the feedback store is unavailable; the events were not stored") from None
        return FeedbackAck(event_ids=[a.event_id for a in appended], new=[a.new for a in appended])

    @router.post("/feedback", response_model=FeedbackAck)
    async def feedback(ev: FeedbackEvent) -> FeedbackAck:
        return await accept([ev])

    @router.post("/feedback/batch", response_model=FeedbackAck)
    async def feedback_batch(batch: FeedbackBatch) -> FeedbackAck:
        return await accept(batch.events)

    return router
