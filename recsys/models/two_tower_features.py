"""Static user/item features of the two-tower model, turned into KeyedJaggedTensors.

Item and user side features do not change during training, so they are
kept once as buffers (they move with the model to its device and are saved
in the checkpoint, so a checkpoint alone can embed the whole catalogue) and
looked up per batch:

    ItemFeatures.kjt(items (B,))                 -> KJT item | categories | year_bucket
    ItemFeatures.text(items (B,))                -> (B, 384) MiniLM text embedding
    UserFeatures.kjt(users (B,), history, session) -> KJT user | history | session | <demo>

Vocabularies come from ``DatasetMeta.vocabularies`` when the prepared dataset
has them and are otherwise built (sorted) from the tables themselves.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from recsys.data.history import History
from recsys.data.schema import DataError, DatasetMeta


def year_bucket(year: int) -> str:
    """Decade bucket of a release year; ``unknown`` for a missing year (-1)."""
    return "unknown" if year is None or year < 0 else f"{int(year) // 10 * 10}s"


def _csr(lists: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(x) for x in lists], dtype=torch.long)
    offsets = torch.zeros(len(lists) + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(lengths, 0)
    values = torch.tensor([v for x in lists for v in x], dtype=torch.long)
    return offsets, values


def _gather_jagged(offsets: torch.Tensor, values: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of a CSR (offsets, values) -> (values of those rows concatenated, lengths (B,))."""
    starts, ends = offsets[rows], offsets[rows + 1]
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return values[:0], lengths
    seg = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), lengths)
    pos = torch.arange(total, device=rows.device) - (torch.cumsum(lengths, 0) - lengths)[seg]
    return values[starts[seg] + pos], lengths


def _kjt(keys: list[str], parts: list[tuple[torch.Tensor, torch.Tensor]]):
    from torchrec import KeyedJaggedTensor

    return KeyedJaggedTensor.from_lengths_sync(
        keys=keys,
        values=torch.cat([v.long() for v, _ in parts]),
        lengths=torch.cat([ln.long() for _, ln in parts]),
    )


class ItemFeatures(nn.Module):
    """Per-item categories (CSR), year bucket and text embedding, as buffers.

    cat_offsets (N+1,), cat_values (nnz,), year (N,), text (N, T) float32.
    """

    def __init__(self, cat_offsets: torch.Tensor, cat_values: torch.Tensor, year: torch.Tensor,
                 text: torch.Tensor | None, n_categories: int, n_year_buckets: int) -> None:
        super().__init__()
        self.register_buffer("cat_offsets", cat_offsets.long())
        self.register_buffer("cat_values", cat_values.long())
        self.register_buffer("year", year.long())
        self.register_buffer("text_emb", text.float() if text is not None else torch.zeros(len(year), 0))
        self.n_categories = n_categories
        self.n_year_buckets = n_year_buckets

    @property
    def n_items(self) -> int:
        return int(self.year.numel())

    @property
    def text_dim(self) -> int:
        return int(self.text_emb.shape[1])

    def kjt(self, items: torch.Tensor):
        """items (B,) item_idx -> KJT with keys item, categories, year_bucket."""
        items = items.long().to(self.year.device)
        ones = torch.ones_like(items)
        cats = _gather_jagged(self.cat_offsets, self.cat_values, items)
        return _kjt(["item", "categories", "year_bucket"], [(items, ones), cats, (self.year[items], ones)])

    def text(self, items: torch.Tensor) -> torch.Tensor | None:
        """items (B,) -> (B, T) text embeddings, or None when the model has no text input."""
        return self.text_emb[items.long().to(self.year.device)] if self.text_dim else None

    @classmethod
    def from_tables(cls, items: pd.DataFrame, meta: DatasetMeta, text: np.ndarray | None = None) -> "ItemFeatures":
        items = items.sort_values("item_idx")
        if len(items) != meta.n_items or not np.array_equal(items["item_idx"].to_numpy(), np.arange(meta.n_items)):
            raise DataError(f"items table has {len(items)} rows; expected item_idx 0..{meta.n_items - 1} (meta.json)")
        cat_vocab = meta.vocabularies.get("categories") or sorted({c for cs in items["categories"] for c in cs})
        cat_id = {c: i for i, c in enumerate(cat_vocab)}
        cat_lists = [[cat_id[c] for c in cs if c in cat_id] for cs in items["categories"]]
        years = [year_bucket(int(y)) for y in items["year"]]
        year_vocab = sorted(set(years))
        year_id = {y: i for i, y in enumerate(year_vocab)}
        offsets, values = _csr(cat_lists)
        if text is not None and text.shape[0] != meta.n_items:
            raise DataError(f"item text embeddings have {text.shape[0]} rows; expected {meta.n_items}")
        return cls(offsets, values, torch.tensor([year_id[y] for y in years]),
                   torch.as_tensor(text) if text is not None else None, max(len(cat_vocab), 1), len(year_vocab))

    @classmethod
    def from_dir(cls, dataset_dir: str | Path, meta: DatasetMeta, use_text: bool = True) -> "ItemFeatures":
        """Reads ``items.parquet`` and (optionally) ``item_text_emb.npy`` of a prepared dataset."""
        dataset_dir = Path(dataset_dir)
        items = pd.read_parquet(dataset_dir / "items.parquet")
        text = None
        emb_path = dataset_dir / "item_text_emb.npy"
        if use_text:
            if emb_path.exists():
                text = np.load(emb_path).astype(np.float32)
            else:
                # Documented fallback: the item tower runs on id + categories + year only.
                warnings.warn(f"{emb_path} not found: item tower built without text embeddings", stacklevel=2)
        return cls.from_tables(items, meta, text)


class UserFeatures(nn.Module):
    """Per-user demographic ids as a buffer ``demo`` (n_users, F_demo), -1 = unknown."""

    def __init__(self, names: list[str], demo: torch.Tensor, cardinalities: list[int],
                 max_history: int = 50, session_len: int = 0) -> None:
        super().__init__()
        self.names = list(names)
        self.cardinalities = list(cardinalities)
        self.register_buffer("demo", demo.long())
        self.max_history = max_history
        self.session_len = session_len

    @property
    def demographics(self) -> dict[str, int]:
        return dict(zip(self.names, self.cardinalities))

    def kjt(self, users: torch.Tensor, history: History, session: History | None = None):
        """users (B,) user_idx (-1 = unknown user), history (B bags), session (B bags) -> KJT.

        The history keeps the last ``max_history`` items; the session bag is
        ``session`` if given, else the last ``session_len`` history items.
        """
        dev = self.demo.device
        users = users.long().to(dev)
        known = users >= 0
        hist = history.last(self.max_history) if self.max_history else history
        keys = ["user", "history"]
        parts = [(users[known], known.long()), (hist.items.to(dev), hist.lengths.to(dev))]
        if self.session_len > 0:
            sess = (session if session is not None else history).last(self.session_len)
            keys.append("session")
            parts.append((sess.items.to(dev), sess.lengths.to(dev)))
        safe = users.clamp(min=0)
        for j, name in enumerate(self.names):
            v = self.demo[safe, j]
            ok = known & (v >= 0)
            keys.append(name)
            parts.append((v[ok], ok.long()))
        return _kjt(keys, parts)

    @classmethod
    def from_tables(cls, users: pd.DataFrame, meta: DatasetMeta, features: list[str] | None = None,
                    max_history: int = 50, session_len: int = 0) -> "UserFeatures":
        users = users.sort_values("user_idx")
        if features is None:
            features = list(meta.user_features) or [c for c in users.columns if c not in ("user_idx", "user_id", "zip_code")]
        missing = [f for f in features if f not in users.columns]
        if missing:
            raise DataError(f"users table lacks demographic columns {missing}; has {list(users.columns)}")
        demo = torch.full((meta.n_users, len(features)), -1, dtype=torch.long)
        idx = torch.tensor(users["user_idx"].to_numpy(np.int64))
        cards = []
        for j, f in enumerate(features):
            vals = users[f].astype(str).to_numpy()
            vocab = [str(v) for v in meta.vocabularies.get(f, [])] or sorted(set(vals))
            vid = {v: i for i, v in enumerate(vocab)}
            demo[idx, j] = torch.tensor([vid.get(v, -1) for v in vals], dtype=torch.long)
            cards.append(len(vocab))
        return cls(features, demo, cards, max_history, session_len)

    @classmethod
    def from_dir(cls, dataset_dir: str | Path, meta: DatasetMeta, **kwargs) -> "UserFeatures":
        path = Path(dataset_dir) / "users.parquet"
        if not path.exists():
            raise DataError(f"{path}: users table not found")
        return cls.from_tables(pd.read_parquet(path), meta, **kwargs)
