"""Filtering (implicit threshold, k-core) and the three split protocols.

All functions take and return interaction tables with the canonical columns
``user_idx item_idx timestamp value``.

The order of a user's interactions is owned by ``chronological``: by
timestamp, and same-second ties in the order of the rows as the reader saw
them (the source file's order; a stable sort by time), as RecBole and the
SASRec reference preprocessing do. Every step between the reader and the
split keeps that row order (implicit threshold and k-core are boolean
masks, ``canonical.reindex`` sorts stably, parquet keeps rows in order), and
every split part is written in its split's order, so a history built from
the parts (``History.from_interactions``, sequences, contexts) reads the
same order. ``tie_break="item_idx"`` (the rule before) breaks ties by
ascending item_idx instead; on ML-100K, where item_idx correlates with
popularity, it makes the test item the least popular of its tie.

- ``leave_one_out``: per user, the last interaction is test and the second
  last valid (SASRec, BERT4Rec, LlamaRec protocol). Users with fewer than 3
  interactions keep everything in train.
- ``temporal``: one global cut by timestamp quantiles; nothing in train is
  later than anything in valid, nor valid later than test.
- ``random_ratio``: a seeded random split of rows.

Each returns a ``Split`` whose ``name`` (argument ``name``, default ``loo`` /
``temporal`` / ``random``) names its directory ``splits/<name>/``, which is
what ``load_split(dir, name)`` and configs (``data.split.name``) refer to.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.data.schema import DataError, Split


def implicit(inter: pd.DataFrame, threshold: float = 0.0) -> pd.DataFrame:
    """Keep interactions with ``value >= threshold`` (e.g. 4 for "liked" on 1-5 stars)."""
    return inter[inter["value"] >= threshold].reset_index(drop=True)


def kcore(inter: pd.DataFrame, k: int = 5, item_k: int | None = None) -> pd.DataFrame:
    """Iteratively drop users with < ``k`` and items with < ``item_k`` (default ``k``) interactions.

    Removing an item can push a user below k and vice versa, so we repeat until
    nothing changes; the result satisfies both bounds at once (or is empty).
    """
    item_k = k if item_k is None else item_k
    if k <= 1 and item_k <= 1:
        return inter.reset_index(drop=True)
    df = inter
    while True:
        ucount = df.groupby("user_idx")["item_idx"].transform("size")
        icount = df.groupby("item_idx")["user_idx"].transform("size")
        keep = (ucount >= k) & (icount >= item_k)
        if keep.all():
            return df.reset_index(drop=True)
        df = df[keep]


TIE_BREAKS = ("row", "item_idx")


def chronological(inter: pd.DataFrame, tie_break: str = "row") -> pd.DataFrame:
    """``inter`` ordered by (user_idx, timestamp); same-timestamp rows in their current row order.

    The one per-user order of the project (module docstring). It is stable, so
    a table already in this order comes back unchanged, and a concatenation
    ``train, valid`` keeps the validation item after same-second train items.
    ``tie_break="item_idx"``: ties by ascending item_idx instead. The index is
    kept (as ``sort_values`` keeps it); callers reset it where they need to.
    """
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
    keys = [inter["timestamp"].to_numpy(), inter["user_idx"].to_numpy()]  # np.lexsort: last key first
    if tie_break == "item_idx":
        keys.insert(0, inter["item_idx"].to_numpy())
    return inter.iloc[np.lexsort(keys)]  # np.lexsort is a stable sort


def _ordered(inter: pd.DataFrame, tie_break: str = "row") -> pd.DataFrame:
    return chronological(inter, tie_break).reset_index(drop=True)


def leave_one_out(inter: pd.DataFrame, min_len: int = 3, name: str = "loo", tie_break: str = "row") -> Split:
    """Last interaction per user -> test, second last -> valid, the rest -> train.

    Users with fewer than ``min_len`` (default 3) interactions stay entirely in
    train: with one or two items there is nothing left to learn from.
    ``tie_break`` (``row`` default, or ``item_idx``) orders same-second
    interactions (``chronological``); the parts are returned in that order.
    """
    df = _ordered(inter, tie_break)
    n = df.groupby("user_idx")["item_idx"].transform("size").to_numpy()
    # Position from the end within each user: 0 = most recent.
    rev = df.groupby("user_idx").cumcount(ascending=False).to_numpy()
    eligible = n >= min_len
    test = eligible & (rev == 0)
    valid = eligible & (rev == 1)
    train = ~(test | valid)
    return Split(name, df[train].reset_index(drop=True), df[valid].reset_index(drop=True), df[test].reset_index(drop=True))


def temporal(inter: pd.DataFrame, valid_frac: float = 0.1, test_frac: float = 0.1, name: str = "temporal") -> Split:
    """Global cut: the latest ``test_frac`` of interactions (by time) -> test, the ``valid_frac`` before -> valid.

    Cut points are timestamp quantiles; rows at a cut timestamp go to the earlier
    part, so train <= valid <= test in time holds strictly at the boundaries.
    Valid/test may contain users or items unseen in train (the realistic setting).
    """
    if not (0 <= valid_frac and 0 <= test_frac and valid_frac + test_frac < 1):
        raise ValueError(f"need 0 <= valid_frac, test_frac and valid_frac + test_frac < 1; got {valid_frac}, {test_frac}")
    df = _ordered(inter)
    ts = df["timestamp"].to_numpy()
    t_valid = np.quantile(ts, 1 - valid_frac - test_frac, method="lower")
    t_test = np.quantile(ts, 1 - test_frac, method="lower")
    train = ts <= t_valid
    test = ts > t_test
    valid = ~train & ~test
    return Split(name, df[train].reset_index(drop=True), df[valid].reset_index(drop=True), df[test].reset_index(drop=True))


def random_ratio(inter: pd.DataFrame, valid_frac: float = 0.1, test_frac: float = 0.1, seed: int = 0, name: str = "random") -> Split:
    """Seeded random row split (the same ``seed`` gives the same split)."""
    if not (0 <= valid_frac and 0 <= test_frac and valid_frac + test_frac < 1):
        raise ValueError(f"need 0 <= valid_frac, test_frac and valid_frac + test_frac < 1; got {valid_frac}, {test_frac}")
    df = _ordered(inter)
    perm = np.random.default_rng(seed).permutation(len(df))
    n_test, n_valid = int(round(test_frac * len(df))), int(round(valid_frac * len(df)))
    part = np.zeros(len(df), dtype=np.int8)  # 0 train, 1 valid, 2 test
    part[perm[:n_test]] = 2
    part[perm[n_test : n_test + n_valid]] = 1
    return Split(name, *(df[part == p].reset_index(drop=True) for p in (0, 1, 2)))


def check_split(split: Split) -> None:
    """Raise ``DataError`` if any (user, item, timestamp) row is in two parts of ``split``.

    Vectorised (duplicate detection over the concatenated parts, each
    de-duplicated first) so it is cheap on tens of millions of rows.
    """
    cols = ["user_idx", "item_idx", "timestamp"]
    parts = {p: split.part(p)[cols].drop_duplicates().assign(part=p) for p in ("train", "valid", "test")}
    both = pd.concat(parts.values(), ignore_index=True)
    dup = both[both.duplicated(cols, keep=False)]
    if len(dup):
        pairs = dup.groupby(cols)["part"].agg(lambda s: " and ".join(sorted(set(s), key=("train", "valid", "test").index)))
        first = pairs.iloc[0]
        raise DataError(f"split {split.name!r}: {len(pairs)} interactions are in more than one part (e.g. both {first})")
