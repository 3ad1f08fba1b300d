"""Lightning DataModules over a prepared dataset and one split.

- ``InteractionDataModule``: (user, item) training pairs with uniform random
  negatives, for pairwise/pointwise models (BPR, NCF, DLRM-style scorers).
- ``SequenceDataModule``: time-ordered user histories for sequential models
  (SASRec, BERT4Rec-style): padded sequences and next-item targets.

Both take ``dataset`` (a ``Dataset`` or a prepared directory) and ``split`` (a
``Split`` or its name), expose ``dataset``, ``split`` and ``meta``, and keep
``num_workers=0`` by default (the CI box has 2 shared cores).

Negatives are drawn once per epoch from ``numpy.random.default_rng((seed,
epoch))`` where ``epoch`` is the one Lightning passes to the sampler's
``set_epoch``: the same seed gives the same batches, and a run resumed from a
checkpoint at epoch k draws exactly what an uninterrupted run draws at epoch k
(``tests/test_train.py`` kills a run and checks the final metrics match).

Under DDP Lightning wraps the training sampler in its ``DistributedSamplerWrapper``,
whose ``set_epoch`` forwards to ours (pytorch-lightning 2.6; pinned by
``tests/distributed/test_lightning_ddp.py``): every rank builds the same epoch and
takes every W-th ready-made batch after the wrapper's own (seed, epoch) permutation,
so a global step sees W batches of ``batch_size`` rows.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as TorchDataset

from recsys.data.history import training_windows
from recsys.data.schema import Dataset, Split
from recsys.data.splits import chronological


def _resolve(dataset, split, dataset_dir=None) -> tuple[Dataset, Split]:
    from recsys.data.io import load_dataset, load_split

    if not isinstance(dataset, Dataset):
        dataset_dir = dataset if dataset is not None else dataset_dir
        dataset = load_dataset(dataset_dir)
    if not isinstance(split, Split):
        if dataset_dir is None:
            raise ValueError("split given by name needs dataset_dir (or pass dataset as a directory)")
        split = load_split(dataset_dir, split)
    return dataset, split


def sample_negatives(rng: np.random.Generator, users: np.ndarray, n_items: int, n_neg: int,
                     seen: np.ndarray | None = None, max_rounds: int = 10) -> np.ndarray:
    """(B, n_neg) uniform item ids; with ``seen`` (sorted ``user * n_items + item`` keys) resample hits.

    Rejection is vectorised and bounded (``max_rounds``): for a user who has seen
    almost the whole catalogue a few collisions may remain, which is harmless for
    training and avoids an unbounded loop.
    """
    neg = rng.integers(0, n_items, size=(len(users), n_neg), dtype=np.int64)
    if seen is None or len(seen) == 0:
        return neg
    for _ in range(max_rounds):
        keys = users[:, None] * n_items + neg
        pos = np.searchsorted(seen, keys).clip(max=len(seen) - 1)
        hit = seen[pos] == keys
        if not hit.any():
            break
        neg[hit] = rng.integers(0, n_items, size=int(hit.sum()), dtype=np.int64)
    return neg


def _chunk(cols: dict[str, np.ndarray], batch_size: int) -> list[dict]:
    """Cut equal-length columns into dict batches of tensors (copies: pandas arrays may be read-only)."""
    n = len(next(iter(cols.values())))
    return [{k: torch.from_numpy(np.array(v[s : s + batch_size])) for k, v in cols.items()} for s in range(0, n, batch_size)]


class _EpochBatches(TorchDataset):
    """Map-style: item i is batch i of epoch ``self.epoch``; ``make(epoch)`` builds an epoch's batches once."""

    def __init__(self, make: Callable[[int], list[dict]], n_batches: int, epoch: int = 0) -> None:
        self.make, self.n_batches, self.epoch = make, n_batches, epoch
        self._built: tuple[int, list[dict]] | None = None

    def __len__(self) -> int:
        # Known up front, so Lightning shows real progress bars and epoch lengths.
        return self.n_batches

    def __getitem__(self, i: int) -> dict:
        if self._built is None or self._built[0] != self.epoch:
            self._built = (self.epoch, self.make(self.epoch))
        return self._built[1][i]


class _EpochSampler(Sampler[int]):
    """Batch indices 0..n-1 of one epoch, and the epoch they belong to.

    Lightning calls ``set_epoch(k)`` at the start of epoch k, including the first
    epoch after a resume from a checkpoint, so a resumed run draws what an
    uninterrupted run draws. The epoch is read when a batch is built, not when
    the iterator is made: on resume Lightning makes the iterator before it calls
    ``set_epoch``. Without a trainer, each new pass advances the epoch.
    """

    def __init__(self, batches: _EpochBatches, start_epoch: int) -> None:
        self.batches, self._next, self._driven = batches, start_epoch, False
        batches.epoch = start_epoch

    def set_epoch(self, epoch: int) -> None:
        self._driven = True
        self.batches.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[int]:
        if not self._driven:
            self.batches.epoch, self._next = self._next, self._next + 1
        return iter(range(len(self.batches)))


class _Base(pl.LightningDataModule):
    def __init__(self, dataset, split, dataset_dir=None, batch_size: int = 1024, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        self.dataset, self.split = _resolve(dataset, split, dataset_dir)
        self.meta = self.dataset.meta
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self._epochs_drawn = 0

    def _loader(self, make: Callable[[int], list[dict]], n_rows: int, fixed_epoch: int | None = None) -> DataLoader:
        """A loader of ready-made batches. Training loaders follow the epoch (see ``_EpochSampler``);
        evaluation loaders pass ``fixed_epoch`` so their batches never change."""
        n_batches = -(-n_rows // self.batch_size)
        if fixed_epoch is not None:
            return DataLoader(_EpochBatches(make, n_batches, fixed_epoch), batch_size=None, num_workers=self.num_workers)
        batches = _EpochBatches(make, n_batches)
        sampler = _EpochSampler(batches, start_epoch=self._epochs_drawn)
        self._epochs_drawn += 1  # outside Lightning, each new loader is the next epoch
        return DataLoader(batches, sampler=sampler, batch_size=None, num_workers=self.num_workers)


class InteractionDataModule(_Base):
    """Training pairs with ``num_negatives`` uniform negatives per positive.

    Batches (train and val)::

        user       (B,)         int64 user_idx
        item       (B,)         int64 positive item_idx
        neg_items  (B, n_neg)   int64 uniform negatives (not in the user's train items)
        timestamp  (B,)         int64
        value      (B,)         float32 rating / interaction value

    Rows are reshuffled every epoch; val uses the valid part with fixed negatives.
    """

    def __init__(self, dataset, split, dataset_dir=None, batch_size: int = 1024, num_negatives: int = 1,
                 exclude_seen: bool = True, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__(dataset, split, dataset_dir, batch_size, seed, num_workers)
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
        self.num_negatives, self.exclude_seen = num_negatives, exclude_seen
        train = self.split.train
        n = self.meta.n_items
        self._seen = np.unique(train["user_idx"].to_numpy() * n + train["item_idx"].to_numpy()) if exclude_seen else None

    def _batches(self, df: pd.DataFrame, epoch: int, shuffle: bool) -> list[dict]:
        rng = np.random.default_rng((self.seed, epoch))
        order = rng.permutation(len(df)) if shuffle else np.arange(len(df))
        users = df["user_idx"].to_numpy(np.int64)[order]
        neg = sample_negatives(rng, users, self.meta.n_items, self.num_negatives, self._seen)
        cols = {
            "user": users, "item": df["item_idx"].to_numpy(np.int64)[order], "neg_items": neg,
            "timestamp": df["timestamp"].to_numpy(np.int64)[order], "value": df["value"].to_numpy(np.float32)[order],
        }
        return _chunk(cols, self.batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader(lambda e: self._batches(self.split.train, e, shuffle=True), len(self.split.train))

    def val_dataloader(self) -> DataLoader:
        # A fixed pseudo-epoch so validation negatives never change between epochs.
        return self._loader(lambda e: self._batches(self.split.valid, e, shuffle=False), len(self.split.valid), fixed_epoch=2**31)


class SequenceDataModule(_Base):
    """User histories as padded sequences with next-item targets (SASRec, Kang & McAuley 2018).

    Item ids are shifted by +1 so that 0 means padding: a model's item table
    needs ``meta.n_items + 1`` rows and must map its outputs back with ``-1``.
    Sequences are left-padded (the most recent item is at the right end, index
    L-1) and keep a user's last ``max_len`` items.

    Train rows: with ``window_stride=0`` one row per user with >= 2 train items
    (the last ``max_len`` transitions; earlier ones are never targets). With
    ``window_stride=s > 0`` every transition is a target once: windows of
    ``max_len`` transitions end every ``s`` positions back from the last one, and
    a window's targets are only its last ``s`` (the earliest window keeps all), so
    each target is counted where it has the longest context (at least
    ``max_len - s`` items), close to RecBole's one-example-per-prefix training at
    ``max_len / s`` times fewer rows. Batches::

        user    (B,)     int64 user_idx
        seq     (B, L)   int64 item_idx + 1 of positions 0..n-2, 0 = padding
        target  (B, L)   int64 item_idx + 1 of the next item at each position, 0 = none
        neg     (B, L)   int64 uniform negative + 1 per target position (0 where target is 0)

    Val/test batches (users with a valid/test item; history = ``split.history_for``)::

        user (B,)  seq (B, L)  target (B,) the held-out item_idx + 1
    """

    def __init__(self, dataset, split, dataset_dir=None, max_len: int = 50, batch_size: int = 128,
                 seed: int = 0, num_workers: int = 0, window_stride: int = 0) -> None:
        super().__init__(dataset, split, dataset_dir, batch_size, seed, num_workers)
        if max_len < 1 or not 0 <= window_stride <= max_len:
            raise ValueError(f"need max_len >= 1 and 0 <= window_stride <= max_len; got {max_len}, {window_stride}")
        self.max_len, self.window_stride = max_len, window_stride
        self._rows: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @staticmethod
    def _by_user(df: pd.DataFrame) -> tuple[np.ndarray, list[np.ndarray]]:
        df = chronological(df)
        users, starts = np.unique(df["user_idx"].to_numpy(), return_index=True)
        items = np.split(df["item_idx"].to_numpy(np.int64) + 1, starts[1:])
        return users.astype(np.int64), items

    def _pad(self, seqs: list[np.ndarray]) -> np.ndarray:
        """(B, L) right-aligned last ``max_len`` entries of each sequence, left-padded with 0."""
        out = np.zeros((len(seqs), self.max_len), dtype=np.int64)
        for b, s in enumerate(seqs):
            s = s[-self.max_len :]
            if len(s):
                out[b, self.max_len - len(s) :] = s
        return out

    def train_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(users (R,), seq (R, L), target (R, L)) of the training windows (built once; see the class docstring)."""
        if self._rows is None:
            users, seqs = self._by_user(self.split.train)
            row, start, end, first = training_windows(np.array([len(s) for s in seqs]), self.max_len, self.window_stride)
            inputs = [seqs[r][a:e] for r, a, e in zip(row, start, end)]
            # transition j predicts s[j + 1]; targets before `first` belong to another window (0 = none)
            targets = [np.where(np.arange(a, e) >= f, seqs[r][a + 1 : e + 1], 0) for r, a, e, f in zip(row, start, end, first)]
            self._rows = (users[row], self._pad(inputs), self._pad(targets))
        return self._rows

    def _train_batches(self, epoch: int) -> list[dict]:
        rng = np.random.default_rng((self.seed, epoch))
        users, seq, target = self.train_rows()
        # Negatives for each target position (SASRec's BCE loss), avoiding the user's train items.
        seen = np.unique(self.split.train["user_idx"].to_numpy() * self.meta.n_items + self.split.train["item_idx"].to_numpy())
        neg = sample_negatives(rng, np.repeat(users, self.max_len), self.meta.n_items, 1, seen).reshape(len(users), self.max_len) + 1
        neg[target == 0] = 0
        order = rng.permutation(len(users))
        cols = {"user": users[order], "seq": seq[order], "target": target[order], "neg": neg[order]}
        return _chunk(cols, self.batch_size)

    def eval_batches(self, stage: str) -> list[dict]:
        """Batches for ``valid``/``test``: each user's history before the held-out item, and that item."""
        held = self.split.part(stage).sort_values("user_idx", kind="stable")
        h_users, h_seqs = self._by_user(self.split.history_for(stage))
        lookup = dict(zip(h_users.tolist(), h_seqs))
        users = held["user_idx"].to_numpy(np.int64)
        seq = self._pad([lookup.get(int(u), np.zeros(0, np.int64)) for u in users])
        target = held["item_idx"].to_numpy(np.int64) + 1
        return _chunk({"user": users, "seq": seq, "target": target}, self.batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._train_batches, len(self.train_rows()[0]))

    def val_dataloader(self) -> DataLoader:
        return self._loader(lambda e: self.eval_batches("valid"), len(self.split.valid), fixed_epoch=0)

    def test_dataloader(self) -> DataLoader:
        return self._loader(lambda e: self.eval_batches("test"), len(self.split.test), fixed_epoch=0)

