"""Builds a request's :class:`UserContext` from the canonical tables and live feedback.

Long-term profile: the user's interactions (item_idx oldest first) and
demographics from the users table. Short-term: the session items the request
carries. Negative feedback: interactions with ``value <= negative_threshold``
(a 1-2 star rating) plus items the user skipped or rated low through the
serving API, so a dislike takes effect on the next request, before any
retraining.

Live feedback is kept in a :class:`LiveProfiles` keyed by the *external*
``user_id`` string, so a user the tables do not know (a new user) has a live
profile too: their clicks and good ratings become their history (they seed the
candidate sources), their skips and low ratings their negative items. The
server replays the stored events into it at start-up (``replay``), so an
acknowledged skip stays effective after a restart. ``LiveProfiles`` is the
in-memory default; a store-backed implementation with the same four methods
can replace it for several workers (``ContextBuilder(live=...)``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import pandas as pd

from recsys.core.candidates import Constraints, UserContext
from recsys.data.splits import chronological


def event_polarity(event: str, value: float | None, negative_threshold: float | None) -> bool | None:
    """What a feedback event means for a profile: True consumed/liked, False disliked, None nothing.

    A click is consumption; a skip is a dislike; a rating is liked above the
    negative threshold and disliked at or below it; impressions and dwell times
    say nothing about taste (a dwell only rewards the bandit).
    """
    if event == "click":
        return True
    if event == "skip":
        return False
    if event == "rating" and value is not None:
        return negative_threshold is None or float(value) > negative_threshold
    return None


class LiveProfiles:
    """In-memory live feedback per external user id (the default; not shared between processes).

    Interface (what a store-backed replacement implements):
        add(user_id, item_idx, polarity)  polarity True = liked/consumed, False = disliked
        positives(user_id) -> (P,) int64 item_idx, in feedback order
        negatives(user_id) -> (Q,) int64 item_idx, sorted
        replay(events)     events: rows with user_id, item_idx, event, value (``FeedbackStore.events()``)

    A later event for the same item wins: a skip after a click removes the item
    from the positives, a good rating after a skip from the negatives.
    """

    def __init__(self, negative_threshold: float | None = 2.0) -> None:
        self.negative_threshold = negative_threshold
        self._pos: dict[str, dict[int, None]] = defaultdict(dict)  # insertion-ordered set
        self._neg: dict[str, set[int]] = defaultdict(set)

    def add(self, user_id: str | None, item_idx: int, polarity: bool | None) -> None:
        if user_id is None or polarity is None:
            return
        uid, item = str(user_id), int(item_idx)
        if polarity:
            self._pos[uid].pop(item, None)
            self._pos[uid][item] = None
            self._neg[uid].discard(item)
        else:
            self._neg[uid].add(item)
            self._pos[uid].pop(item, None)

    def positives(self, user_id: str | None) -> np.ndarray:
        if user_id is None or str(user_id) not in self._pos:
            return np.zeros(0, np.int64)
        return np.fromiter(self._pos[str(user_id)], np.int64)

    def negatives(self, user_id: str | None) -> np.ndarray:
        if user_id is None or str(user_id) not in self._neg:
            return np.zeros(0, np.int64)
        return np.asarray(sorted(self._neg[str(user_id)]), np.int64)

    def replay(self, events: pd.DataFrame | Iterable) -> int:
        """Apply stored events oldest first (``FeedbackStore.events()`` order) -> how many changed a profile."""
        rows = events.itertuples(index=False) if isinstance(events, pd.DataFrame) else events
        n = 0
        for r in rows:
            value = None if r.value is None or pd.isna(r.value) else float(r.value)
            polarity = event_polarity(r.event, value, self.negative_threshold)
            user_id = None if r.user_id is None or (isinstance(r.user_id, float) and pd.isna(r.user_id)) else r.user_id
            if polarity is not None and user_id is not None:
                self.add(user_id, int(r.item_idx), polarity)
                n += 1
        return n


class ContextBuilder:
    """Args:
        interactions: what counts as the users' history (train for offline
            evaluation, every interaction when serving).
        users: the users table (``user_idx``, ``user_id``, demographic columns).
        negative_threshold: ratings at or below it are negative feedback (None: none are).
        live: the live-feedback store (default: a new in-memory :class:`LiveProfiles`).
    """

    DEMOGRAPHICS_SKIP = ("user_idx", "user_id")

    def __init__(self, interactions: pd.DataFrame, users: pd.DataFrame | None = None,
                 negative_threshold: float | None = 2.0, live: LiveProfiles | None = None):
        df = chronological(interactions)
        u = df["user_idx"].to_numpy(np.int64)
        self._items = df["item_idx"].to_numpy(np.int64)
        self._values = df["value"].to_numpy(np.float32)
        # CSR over user_idx: rows of user u are [starts[u], ends[u])
        n = int(u.max()) + 1 if len(u) else 0
        if users is not None and len(users):
            n = max(n, int(users["user_idx"].max()) + 1)
        self._starts = np.searchsorted(u, np.arange(n), side="left")
        self._ends = np.searchsorted(u, np.arange(n), side="right")
        self.n_users = n
        self.negative_threshold = negative_threshold
        self.live = live if live is not None else LiveProfiles(negative_threshold)
        self._demo: dict[int, dict] = {}
        self._by_id: dict[str, int] = {}
        self._id_of: dict[int, str] = {}
        if users is not None:
            cols = [c for c in users.columns if c not in self.DEMOGRAPHICS_SKIP]
            for row in users.itertuples(index=False):
                d = row._asdict()
                # an unknown value (a refreshed dataset's new user) is absent, not NaN: "age unknown"
                self._demo[int(d["user_idx"])] = {c: v for c in cols if (v := _plain(d[c])) is not None and v != "unknown"}
                self._by_id[str(d["user_id"])] = int(d["user_idx"])
                self._id_of[int(d["user_idx"])] = str(d["user_id"])

    def user_idx(self, user_id: str) -> int | None:
        """Map an external user id to user_idx; None for a user the tables do not know."""
        return self._by_id.get(str(user_id))

    def user_id(self, user_idx: int | None) -> str | None:
        """The external id of a known user_idx (None when unknown)."""
        return None if user_idx is None else self._id_of.get(int(user_idx))

    def knows(self, user_idx: int | None) -> bool:
        return user_idx is not None and 0 <= user_idx < self.n_users

    def add_feedback(self, user_id: str | None, item: int, positive: bool) -> None:
        """Live feedback by external user id: a liked item joins the history, a disliked one is never shown again."""
        self.live.add(user_id, item, positive)

    def build(self, user_idx: int | None, session=(), constraints: Constraints | None = None,
              query: str | None = None, onboarding_categories=(), demographics: dict | None = None,
              user_id: str | None = None) -> UserContext:
        """A full context; an unknown ``user_idx`` becomes a cold-start context (user_idx None).

        ``user_id`` names the live profile of a user the tables do not know; for a
        known ``user_idx`` its own external id is used.
        """
        if not self.knows(user_idx):
            user_idx = None
        key = self.user_id(user_idx) if user_idx is not None else user_id
        live_pos, live_neg = self.live.positives(key), self.live.negatives(key)
        history, neg, demo = np.zeros(0, np.int64), set(live_neg.tolist()), {}
        if user_idx is not None:
            s, e = self._starts[user_idx], self._ends[user_idx]
            history = self._items[s:e]
            if self.negative_threshold is not None:
                low = set(history[self._values[s:e] <= self.negative_threshold].tolist())
                neg |= low - set(live_pos.tolist())  # a live "liked" overrides an old low rating
            demo = dict(self._demo.get(user_idx, {}))
        # (np.isin costs ~50 us even on empty input, and most requests have no live positives; a copy either
        # way: the context must never be a view into the table)
        history = np.concatenate([history, live_pos[~np.isin(live_pos, history)]]) if len(live_pos) else history.copy()
        demo.update(demographics or {})
        return UserContext(user_idx=user_idx, history=history, session=np.asarray(list(session), np.int64),
                           demographics=demo, negative_items=np.asarray(sorted(neg), np.int64),
                           constraints=constraints or Constraints(), query=query,
                           onboarding_categories=list(onboarding_categories))


def _plain(v):
    """numpy scalars -> Python (demographics go into JSON responses and prompts); NaN / NA -> None."""
    v = v.item() if hasattr(v, "item") else v
    return None if v is None or (isinstance(v, float) and v != v) or v is pd.NA else v
