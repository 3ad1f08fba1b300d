"""Ranker training lists: the serving pipeline's candidates for history prefixes, labelled by the next item.

Labels come from inside the training part only. Per user, by time (a stable sort, the order
the serving ``ContextBuilder`` reads histories in)::

    split.train:  [ ... inner ... | h_1 h_2 ... h_n ]     n = n_holdout cut-offs
    request j:    history = inner + h_1..h_{j-1},  label = h_j   (j = 1..n)

The candidate sources (two-tower, ItemKNN, popularity, ...) and the feature statistics are
fitted on ``inner`` only, so no label was seen by anything that produced the candidates.
``split.valid`` and ``split.test`` are never read (tested). Validation lists use the serving
configuration instead: history = train, sources fitted on train, label = the valid item.

A request's context is the one the serving ``ContextBuilder`` builds for the same history:
the items it rated at or below ``negative_threshold`` are its ``negative_items`` (they never
seed a source: ``recsys.retrieval.sources.positive_history``), so the candidates a list is
trained on are the candidates served for that history.

A list holds the top ``n_rank`` merged candidates of one request, in merged order, with the
features of ``recsys.ranking.features``; training keeps the lists whose label was retrieved.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from recsys.core.candidates import UserContext
from recsys.data.splits import chronological
from recsys.ranking.features import RankerFeatures, RankerRows, RankerTensors


@dataclass
class Request:
    """One ranking request of the training data: a user's history prefix, its next item, and the
    prefix's negative items (sorted)."""

    user: int
    history: np.ndarray
    label: int
    negatives: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


class NegativeRatings:
    """The items each user rated at or below ``threshold`` (None: no rating is negative), so that a
    history given as an item array gets the ``negative_items`` the serving ``ContextBuilder`` gives it."""

    def __init__(self, interactions: pd.DataFrame, threshold: float | None = 2.0) -> None:
        low = interactions.iloc[:0] if threshold is None else interactions[interactions["value"] <= threshold]
        self._low = {int(u): np.unique(g.to_numpy(np.int64)) for u, g in low.groupby("user_idx")["item_idx"]}

    def of(self, user: int, history: np.ndarray) -> np.ndarray:
        """(P,) sorted: the items of ``history`` that ``user`` rated low."""
        low = self._low.get(int(user))
        history = np.asarray(history, np.int64)
        return np.zeros(0, np.int64) if low is None else np.unique(history[np.isin(history, low)])


def user_sequences(interactions: pd.DataFrame) -> dict[int, np.ndarray]:
    """user_idx -> items, oldest first (stable by time: same-second rows keep their table order)."""
    df = chronological(interactions)
    u, it = df["user_idx"].to_numpy(np.int64), df["item_idx"].to_numpy(np.int64)
    cut = np.flatnonzero(np.diff(u)) + 1
    return {int(g[0]): s for g, s in zip(np.split(u, cut), np.split(it, cut)) if len(g)}


def holdout_requests(train: pd.DataFrame, n_holdout: int, min_history: int = 5, max_users: int | None = None,
                     seed: int = 0, negative_threshold: float | None = 2.0) -> tuple[pd.DataFrame, list[Request]]:
    """(inner interactions, requests) for ``n_holdout`` cut-offs per user (see the module docstring).

    Users with fewer than ``min_history + n_holdout`` training items keep them all in inner.
    ``max_users`` samples that many users' requests (seeded; quick runs); their inner part is unchanged.
    ``negative_threshold``: as the serving ``ContextBuilder``'s (``NegativeRatings``).
    """
    if n_holdout < 1:
        raise ValueError(f"n_holdout must be >= 1, got {n_holdout}")
    df = chronological(train).reset_index(drop=True)
    u = df["user_idx"].to_numpy(np.int64)
    n = df.groupby("user_idx")["item_idx"].transform("size").to_numpy()
    rev = df.groupby("user_idx").cumcount(ascending=False).to_numpy()
    held = (n >= min_history + n_holdout) & (rev < n_holdout)
    inner = df[~held].reset_index(drop=True)
    seqs = user_sequences(df)
    users = np.unique(u[held])
    if max_users is not None and max_users < len(users):
        users = np.sort(np.random.default_rng(seed).choice(users, size=max_users, replace=False))
    low = NegativeRatings(df, negative_threshold)
    requests = []
    for x in users.tolist():
        seq = seqs[x]
        for j in range(len(seq) - n_holdout, len(seq)):
            requests.append(Request(x, seq[:j], int(seq[j]), low.of(x, seq[:j])))
    return inner, requests


def stage_requests(history: pd.DataFrame, targets: pd.DataFrame, max_users: int | None = None, seed: int = 0,
                   negative_threshold: float | None = 2.0) -> list[Request]:
    """One request per user of ``targets`` (e.g. ``split.valid``): history = the user's ``history`` rows."""
    seqs = user_sequences(history)
    tg = chronological(targets).drop_duplicates("user_idx")
    users, items = tg["user_idx"].to_numpy(np.int64), tg["item_idx"].to_numpy(np.int64)
    if max_users is not None and max_users < len(users):
        keep = np.sort(np.random.default_rng(seed).choice(len(users), size=max_users, replace=False))
        users, items = users[keep], items[keep]
    low = NegativeRatings(history, negative_threshold)
    out = []
    for x, i in zip(users.tolist(), items.tolist()):
        seq = seqs.get(x, np.zeros(0, np.int64))
        out.append(Request(x, seq, int(i), low.of(x, seq)))
    return out


def context_of(user: int, history: np.ndarray, negatives: np.ndarray | None = None) -> UserContext:
    """The request context the ranker's training and evaluation build (no session, no query)."""
    neg = np.zeros(0, np.int64) if negatives is None else np.asarray(negatives, np.int64)
    return UserContext(user_idx=int(user), history=np.asarray(history, np.int64), negative_items=neg)


@dataclass
class RankerLists:
    """Q candidate lists: rows (R), labels (R,) float32, offsets (Q+1,), and per list its user and label item."""

    rows: RankerRows
    labels: np.ndarray
    offsets: np.ndarray
    users: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __post_init__(self) -> None:
        self._t: RankerTensors | None = None

    @property
    def tensors(self) -> RankerTensors:
        if self._t is None:
            self._t = self.rows.tensors()
        return self._t

    def retrieved(self) -> np.ndarray:
        """(Q,) bool: the list contains its label."""
        return np.add.reduceat(self.labels, self.offsets[:-1]) > 0 if len(self) else np.zeros(0, bool)

    def select(self, spec, of) -> "RankerLists":
        """The same lists with only ``spec``'s columns (see ``RankerRows.select``)."""
        return RankerLists(self.rows.select(spec, of), self.labels, self.offsets, self.users, self.targets)

    def collate(self, lists) -> tuple:
        """Lists -> (dense (R, F_d), KJT, labels (R,), seg (R,), pos (R,)): the LitRanker's batch."""
        lists = np.asarray(lists, np.int64)
        starts, lengths = self.offsets[lists], np.diff(self.offsets)[lists]
        from recsys.ranking.features import gather_ranges

        idx = gather_ranges(starts, lengths)
        seg = np.repeat(np.arange(len(lists)), lengths)
        pos = idx - np.repeat(starts, lengths)
        dense, kjt = self.tensors.batch(torch.from_numpy(idx))
        return dense, kjt, torch.from_numpy(self.labels[idx]), torch.from_numpy(seg), torch.from_numpy(pos)

    def loader(self, lists_per_batch: int, shuffle: bool, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        return torch.utils.data.DataLoader(range(len(self)), batch_size=lists_per_batch, shuffle=shuffle, generator=g,
                                           collate_fn=self.collate)


def build_lists(generator, features: RankerFeatures, requests: list[Request], n_items: int, require_positive: bool,
                progress: bool = False, desc: str = "ranker lists") -> RankerLists:
    """Run the candidate ``generator`` (a no-stage ``Pipeline``) for every request and compute its rows."""
    parts, labels, lengths, users, targets = [], [], [], [], []
    for r in tqdm(requests, desc=desc, disable=not progress, leave=False):
        ctx = context_of(r.user, r.history, r.negatives)
        rows = features.compute(ctx, generator(ctx, n_items))
        y = (rows.items == r.label).astype(np.float32)
        if len(rows) == 0 or (require_positive and not y.any()):
            continue
        parts.append(rows), labels.append(y), lengths.append(len(rows)), users.append(r.user), targets.append(r.label)
    if not parts:
        raise ValueError(f"{desc}: no candidate list{' contains its label' if require_positive else ''} "
                         f"({len(requests)} requests); more sources or a larger n_rank would help")
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return RankerLists(RankerRows.concat(parts), np.concatenate(labels), offsets, np.asarray(users, np.int64), np.asarray(targets, np.int64))
