"""Builds a request's :class:`UserContext` from the canonical tables and live feedback.

Long-term profile: the user's interactions (item_idx oldest first) and
demographics from the users table. Short-term: the session items the request
carries. Negative feedback: interactions with ``value <= negative_threshold``
(a 1-2 star rating) plus items the user skipped or rated low through the
serving API (``add_feedback``), so a dislike takes effect on the next request,
before any retraining.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd

from recsys.core.candidates import Constraints, UserContext
from recsys.data.splits import chronological


class ContextBuilder:
    """Args:
        interactions: what counts as the users' history (train for offline
            evaluation, every interaction when serving).
        users: the users table (``user_idx``, ``user_id``, demographic columns).
        negative_threshold: ratings at or below it are negative feedback (None: none are).
    """

    DEMOGRAPHICS_SKIP = ("user_idx", "user_id")

    def __init__(self, interactions: pd.DataFrame, users: pd.DataFrame | None = None,
                 negative_threshold: float | None = 2.0):
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
        self._demo: dict[int, dict] = {}
        self._by_id: dict[str, int] = {}
        if users is not None:
            cols = [c for c in users.columns if c not in self.DEMOGRAPHICS_SKIP]
            for row in users.itertuples(index=False):
                d = row._asdict()
                self._demo[int(d["user_idx"])] = {c: _plain(d[c]) for c in cols}
                self._by_id[str(d["user_id"])] = int(d["user_idx"])
        self._live_items: dict[int, list[int]] = defaultdict(list)
        self._live_negative: dict[int, set[int]] = defaultdict(set)

    def user_idx(self, user_id: str) -> int | None:
        """Map an external user id to user_idx; None for a user the tables do not know."""
        return self._by_id.get(str(user_id))

    def knows(self, user_idx: int | None) -> bool:
        return user_idx is not None and 0 <= user_idx < self.n_users

    def add_feedback(self, user_idx: int, item: int, positive: bool, consumed: bool = True) -> None:
        """Live feedback: a consumed item joins the history; a negative one is never shown again."""
        if consumed:
            self._live_items[user_idx].append(int(item))
        if not positive:
            self._live_negative[user_idx].add(int(item))

    def build(self, user_idx: int | None, session=(), constraints: Constraints | None = None,
              query: str | None = None, onboarding_categories=(), demographics: dict | None = None) -> UserContext:
        """A full context; an unknown ``user_idx`` becomes a cold-start context (user_idx None)."""
        if not self.knows(user_idx):
            user_idx = None
        history = np.zeros(0, np.int64)
        negative = np.zeros(0, np.int64)
        demo = {}
        if user_idx is not None:
            s, e = self._starts[user_idx], self._ends[user_idx]
            history = np.concatenate([self._items[s:e], np.asarray(self._live_items.get(user_idx, []), np.int64)])
            neg = set(self._live_negative.get(user_idx, set()))
            if self.negative_threshold is not None:
                neg |= set(self._items[s:e][self._values[s:e] <= self.negative_threshold].tolist())
            negative = np.asarray(sorted(neg), np.int64)
            demo = dict(self._demo.get(user_idx, {}))
        demo.update(demographics or {})
        return UserContext(user_idx=user_idx, history=history, session=np.asarray(list(session), np.int64),
                           demographics=demo, negative_items=negative, constraints=constraints or Constraints(),
                           query=query, onboarding_categories=list(onboarding_categories))


def _plain(v):
    """numpy scalars -> Python (demographics go into JSON responses and prompts)."""
    return v.item() if hasattr(v, "item") else v
