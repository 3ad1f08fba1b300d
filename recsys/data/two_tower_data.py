"""Next-item training examples for the two-tower model.

Each training interaction (u, i at position t of u's time-ordered train
sequence) is one example whose input is u's history *before* t (the last
``max_history`` items), as in Covington et al. 2016: the model never sees the
target in its own input, which matches the leave-one-out evaluation
(predict the next item from everything earlier).

A batch is ``TwoTowerBatch(users (B,), items (B,), history: History)``; the
model turns it into KeyedJaggedTensors with its feature tables.

``window_stride`` (the sequential user tower, SASRec-style): rows are windows
of a user's train sequence instead (``history.training_windows``), ``history``
the window's inputs and ``items`` (B, L) the next item at every position,
right-aligned with the tower's left-padded output (-1 = no target there), so
one causal pass trains on up to L next items.
Validation batches hold the valid item as target and the whole train
history as input, as the evaluator does.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from recsys.data.history import History, training_windows
from recsys.data.schema import Dataset, Split
from recsys.data.splits import chronological


class TwoTowerBatch(NamedTuple):
    users: torch.Tensor  # (B,)
    items: torch.Tensor  # (B,) positive (target) items; (B, L) next item per position in window rows (-1 none)
    history: History  # B bags, oldest first


class _Sequences:
    """All users' train items in one flat array sorted by (user, time)."""

    def __init__(self, train: pd.DataFrame, n_users: int) -> None:
        df = chronological(train)
        self.user = df["user_idx"].to_numpy(np.int64)
        self.item = df["item_idx"].to_numpy(np.int64)
        self.start = np.searchsorted(self.user, np.arange(n_users), side="left")  # (n_users,)
        self.end = np.searchsorted(self.user, np.arange(n_users), side="right")

    def window(self, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Concatenated item[starts[b]:ends[b]] and the offsets (B+1,)."""
        lengths = ends - starts
        offsets = np.zeros(len(starts) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(lengths)
        if offsets[-1] == 0:
            return np.zeros(0, np.int64), offsets
        seg = np.repeat(np.arange(len(starts)), lengths)
        pos = np.arange(offsets[-1]) - offsets[:-1][seg]
        return self.item[starts[seg] + pos], offsets


class TwoTowerDataModule(pl.LightningDataModule):
    """Args: dataset/split (as ``recsys.train`` passes them), batch size, history length.
    window_stride: None = one row per train interaction; an int = window rows (module docstring;
    0 = each user's last window only, s > 0 = every transition once).
    """

    def __init__(self, dataset: Dataset, split: Split, batch_size: int = 512, max_history: int = 50,
                 val_batch_size: int = 1024, num_workers: int = 0, seed: int = 0, window_stride: int | None = None) -> None:
        super().__init__()
        if batch_size < 2:
            raise ValueError("batch_size must be >= 2: in-batch negatives need other rows")
        self.dataset, self.split = dataset, split
        self.batch_size, self.val_batch_size = batch_size, val_batch_size
        self.max_history, self.num_workers, self.seed = max_history, num_workers, seed
        self.n_users, self.n_items = dataset.meta.n_users, dataset.meta.n_items
        self.seq = _Sequences(split.train, self.n_users)
        self.windows = None if window_stride is None else training_windows(self.seq.end - self.seq.start, max_history, window_stride)

    @property
    def item_counts(self) -> torch.Tensor:
        """(N,) number of train interactions per item (the logQ correction's popularity)."""
        return torch.as_tensor(np.bincount(self.seq.item, minlength=self.n_items), dtype=torch.float32)

    def _train_collate(self, rows: list[int]) -> TwoTowerBatch:
        g = np.asarray(rows, dtype=np.int64)  # positions in the flat sequence
        users = self.seq.user[g]
        starts = np.maximum(self.seq.start[users], g - self.max_history)
        items, offsets = self.seq.window(starts, g)
        return TwoTowerBatch(torch.as_tensor(users), torch.as_tensor(self.seq.item[g]),
                             History(torch.as_tensor(users), torch.as_tensor(offsets), torch.as_tensor(items)))

    def _window_collate(self, rows: list[int]) -> TwoTowerBatch:
        r = np.asarray(rows, dtype=np.int64)
        user, start, end, first = (a[r] for a in self.windows)  # user = row of training_windows = user_idx
        base = self.seq.start[user]
        items, offsets = self.seq.window(base + start, base + end)  # inputs (nnz,), (B+1,)
        n = end - start
        seg = np.repeat(np.arange(len(r)), n)
        k = np.arange(offsets[-1]) - offsets[:-1][seg]  # transition index inside the window
        counted = start[seg] + k >= first[seg]
        targets = np.full((len(r), self.max_history), -1, dtype=np.int64)
        col = self.max_history - n[seg] + k  # right-aligned, as the tower left-pads its input
        targets[seg[counted], col[counted]] = self.seq.item[(base + start)[seg] + k + 1][counted]
        return TwoTowerBatch(torch.as_tensor(user), torch.as_tensor(targets),
                             History(torch.as_tensor(user), torch.as_tensor(offsets), torch.as_tensor(items)))

    def _eval_collate(self, rows: list[int]) -> TwoTowerBatch:
        r = np.asarray(rows, dtype=np.int64)
        users, targets = self._val_users[r], self._val_items[r]
        ends = self.seq.end[users]
        # Full train history for masking consumed items; the model keeps its last max_history.
        items, offsets = self.seq.window(self.seq.start[users], ends)
        return TwoTowerBatch(torch.as_tensor(users), torch.as_tensor(targets),
                             History(torch.as_tensor(users), torch.as_tensor(offsets), torch.as_tensor(items)))

    def train_dataloader(self) -> DataLoader:
        gen = torch.Generator().manual_seed(self.seed)
        n, collate = (len(self.seq.item), self._train_collate) if self.windows is None else (len(self.windows[0]), self._window_collate)
        # drop_last: a tiny last batch gives a noisy in-batch softmax with few negatives
        return DataLoader(range(n), batch_size=self.batch_size, shuffle=True, generator=gen,
                          collate_fn=collate, num_workers=self.num_workers, drop_last=n > self.batch_size)

    def val_dataloader(self) -> DataLoader:
        valid = self.split.valid
        self._val_users = valid["user_idx"].to_numpy(np.int64)
        self._val_items = valid["item_idx"].to_numpy(np.int64)
        return DataLoader(range(len(valid)), batch_size=self.val_batch_size, shuffle=False,
                          collate_fn=self._eval_collate, num_workers=self.num_workers)
