"""The canonical dataset: three tables, a metadata file, and a split.

Every reader (MovieLens, synthetic, ...) produces these tables and everything
downstream reads only them, so a new dataset is one reader.

On disk (``<root>/<name>/``)::

    interactions.parquet   user_idx:int64 item_idx:int64 timestamp:int64 value:float32
                           (timestamp: seconds, 0..MAX_TIMESTAMP; value: finite)
    items.parquet          item_idx:int64 item_id:str title:str year:int32 (-1 unknown)
                           categories:list<str> text:str available:bool age_rating:int16
    users.parquet          user_idx:int64 user_id:str + demographic columns (age:int16, ...)
    meta.json              DatasetMeta: cardinalities and feature vocabularies
    splits/<split>/{train,valid,test}.parquet   subsets of interactions

Indices are contiguous from 0 (``user_idx`` in [0, n_users), ``item_idx`` in
[0, n_items)); the original ids are kept as strings in ``user_id``/``item_id``.
Models take their sizes from ``meta.json``, never from YAML.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from recsys.core.errors import UserError

INTERACTION_COLUMNS = ("user_idx", "item_idx", "timestamp", "value")
ITEM_COLUMNS = ("item_idx", "item_id", "title", "year", "categories", "text", "available", "age_rating")
USER_COLUMNS = ("user_idx", "user_id")
SPLIT_PARTS = ("train", "valid", "test")


# Timestamps are int64 seconds since 1970-01-01 UTC. A raw file's timestamp must lie in
# (0, MAX_TIMESTAMP]: 0 or less is a missing value or a wrapped integer, and anything after
# 2100-01-01 is not a real event (milliseconds mistaken for seconds, or garbage).
# Prepared tables may hold 0 (hand-made and generated data start there).
MAX_TIMESTAMP = 4_102_444_800  # 2100-01-01T00:00:00Z


class DataError(UserError, ValueError):
    """Bad input data: the message names the file (and line, where there is one)."""


@dataclass
class DatasetMeta:
    """What a model needs to know about a prepared dataset.

    ``vocabularies`` maps a categorical feature name (``categories``,
    ``gender``, ``occupation``, ``age_bucket``, ``year_bucket``...) to its
    ordered list of values; the index in that list is the feature's id.
    """

    name: str
    n_users: int
    n_items: int
    n_interactions: int
    vocabularies: dict[str, list[str]] = field(default_factory=dict)
    user_features: list[str] = field(default_factory=list)
    source: str = ""
    implicit_threshold: float | None = None
    extra: dict = field(default_factory=dict)

    def cardinality(self, feature: str) -> int:
        """Number of distinct ids of a feature (``user``/``item`` or a vocabulary)."""
        if feature in ("user", "user_idx"):
            return self.n_users
        if feature in ("item", "item_idx"):
            return self.n_items
        return len(self.vocabularies[feature])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "DatasetMeta":
        path = Path(path)
        if not path.exists():
            raise DataError(f"{path}: metadata file not found; run `python -m recsys.data.prepare` first")
        return cls(**json.loads(path.read_text()))


@dataclass
class Dataset:
    """The three canonical tables plus metadata (all in memory)."""

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    meta: DatasetMeta


@dataclass
class Split:
    """Disjoint train/valid/test interaction tables of one protocol.

    ``name`` is the protocol (``loo``, ``temporal``, ``random``). For
    leave-one-out, valid and test hold at most one row per user.
    """

    name: str
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame

    def __post_init__(self) -> None:
        # the name is a directory under splits/: a path ("../x") would write outside the dataset
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(self.name)) or ".." in str(self.name):
            raise ValueError(f"split name {self.name!r}: use letters, digits, '_', '-', '.' "
                             "(it names the directory splits/<name>/)")

    def part(self, stage: str) -> pd.DataFrame:
        if stage not in SPLIT_PARTS:
            raise ValueError(f"unknown split part {stage!r}; expected one of {SPLIT_PARTS}")
        return getattr(self, stage)

    def history_for(self, stage: str) -> pd.DataFrame:
        """Interactions a model may see when predicting ``stage``.

        valid -> train; test -> train + valid (the validation item is known by
        test time, as in the leave-one-out protocol of SASRec and LlamaRec).
        """
        if stage == "train":
            return self.train
        if stage == "valid":
            return self.train
        if stage == "test":
            return pd.concat([self.train, self.valid], ignore_index=True)
        raise ValueError(f"unknown split part {stage!r}")
