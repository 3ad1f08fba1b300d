"""User histories as a jagged (CSR) structure.

A ``History`` holds, for B users, their item indices ordered by time,
flattened: ``items[offsets[b]:offsets[b+1]]`` is user b's history. This is
the layout a torchrec ``KeyedJaggedTensor`` takes for one key (values +
offsets), so towers consume it without copies.

    users    (B,)     int64 user_idx
    offsets  (B+1,)   int64, offsets[0] == 0, non-decreasing
    items    (nnz,)   int64 item_idx, oldest first within a user
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from recsys.data.splits import chronological


@dataclass
class History:
    users: torch.Tensor
    offsets: torch.Tensor
    items: torch.Tensor

    def __len__(self) -> int:
        return int(self.users.numel())

    @property
    def lengths(self) -> torch.Tensor:
        """(B,) number of items per user."""
        return self.offsets[1:] - self.offsets[:-1]

    def of(self, b: int) -> torch.Tensor:
        """Items of the b-th user, oldest first."""
        return self.items[self.offsets[b] : self.offsets[b + 1]]

    def last(self, n: int) -> "History":
        """Keep only each user's n most recent items (a short-term session)."""
        lengths = self.lengths.clamp(max=n)
        starts = self.offsets[1:] - lengths
        idx = torch.cat([torch.arange(s, e) for s, e in zip(starts.tolist(), self.offsets[1:].tolist())]) if len(self) else self.items[:0]
        offsets = torch.zeros(len(self) + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(lengths, 0)
        return History(self.users, offsets, self.items[idx.long()] if idx.numel() else self.items[:0])

    def extend(self, other: "History") -> "History":
        """Row b = this row b's items followed by ``other``'s row b (e.g. history + the request's session)."""
        if len(other) != len(self):
            raise ValueError(f"cannot extend {len(self)} histories with {len(other)}")
        return History.from_lists(self.users.tolist(), [torch.cat([self.of(b), other.of(b).to(self.items.device)]).tolist()
                                                        for b in range(len(self))])

    def to(self, device) -> "History":
        return History(self.users.to(device), self.offsets.to(device), self.items.to(device))

    def padded(self, max_len: int, pad: int = -1) -> torch.Tensor:
        """(B, max_len) most recent items, right-aligned, left-padded with ``pad``."""
        out = torch.full((len(self), max_len), pad, dtype=torch.long)
        for b in range(len(self)):
            h = self.of(b)[-max_len:]
            if h.numel():
                out[b, max_len - h.numel():] = h
        return out

    @classmethod
    def from_lists(cls, users, lists) -> "History":
        lengths = [len(x) for x in lists]
        offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(lengths)
        items = np.concatenate([np.asarray(x, dtype=np.int64) for x in lists]) if lists and offsets[-1] else np.zeros(0, np.int64)
        return cls(torch.as_tensor(np.asarray(users, dtype=np.int64)), torch.as_tensor(offsets), torch.as_tensor(items))

    @classmethod
    def from_interactions(cls, interactions: pd.DataFrame, users=None) -> "History":
        """Build histories for ``users`` (default: every user present) from an interaction table.

        Users with no interactions get an empty history (cold start). Items are in
        ``splits.chronological`` order (time, same-second ties by row order).
        """
        df = chronological(interactions)
        if users is None:
            users = np.unique(df["user_idx"].to_numpy())
        users = np.asarray(users, dtype=np.int64)
        u = df["user_idx"].to_numpy()
        it = df["item_idx"].to_numpy().astype(np.int64)
        starts = np.searchsorted(u, users, side="left")
        ends = np.searchsorted(u, users, side="right")
        lengths = ends - starts
        offsets = np.zeros(len(users) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(lengths)
        if offsets[-1]:
            idx = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])
            items = it[idx]
        else:
            items = np.zeros(0, dtype=np.int64)
        return cls(torch.as_tensor(users), torch.as_tensor(offsets), torch.as_tensor(items))


def training_windows(lengths: np.ndarray, max_len: int, stride: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cut sequences into next-item training windows of at most ``max_len`` transitions.

    A sequence s of length n has transitions j = 0..n-2 (input s[j], target
    s[j + 1]). A window is the transitions [start, end) of one sequence; its
    targets count from ``first`` on. ``stride=0``: one window per sequence, its
    last ``max_len`` transitions (earlier ones never targets). ``stride=s > 0``:
    windows end every s transitions back from the last one and count only their
    last s targets (the earliest window all of its own), so every transition is
    a target exactly once, in the window where it has the longest context (at
    least ``max_len - s`` items before it).

    lengths (U,) sequence lengths -> (row (R,) sequence index, start (R,), end (R,), first (R,)).
    """
    if max_len < 1 or not 0 <= stride <= max_len:
        raise ValueError(f"need max_len >= 1 and 0 <= stride <= max_len; got {max_len}, {stride}")
    rows, starts, ends, firsts = [], [], [], []
    for r, n in enumerate(np.asarray(lengths, dtype=np.int64) - 1):
        for e in ([n] if stride == 0 else range(n, 0, -stride)) if n >= 1 else []:
            start = max(0, e - max_len)
            earliest = stride == 0 or e - stride <= 0
            rows.append(r)
            starts.append(start)
            ends.append(e)
            firsts.append(start if earliest else max(start, e - stride))
    as_arr = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
    return as_arr(rows), as_arr(starts), as_arr(ends), as_arr(firsts)
