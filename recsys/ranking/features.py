"""Ranking features for MovieLens candidates: sparse ids/attributes and dense signals from earlier stages.

A candidate row is (user_idx, item_idx, source, retriever_score, retriever_rank).
``RankingFeatures`` turns R rows into the DLRM's inputs:

    sparse  KeyedJaggedTensor, one key per sparse feature, R bags each:
              user, item, gender, occupation, age_bucket  one id per row
              categories                                  a bag (1-6 genres)
              year_bucket, source                         one id per row
    dense   (R, F_d) float32, in ``dense_features`` order:
              retriever_score   the retriever's score, z-normalised within the user's list
              retriever_rank    log1p(rank in the retriever's list)
              itemknn_score     log1p(ItemKNN score of the item for the user's history)
              item_popularity   log1p(interactions of the item)
              item_recency      log1p(days since the item's last interaction)
              user_activity     log1p(length of the user's history)

Item statistics (popularity, recency, ItemKNN) come from the interactions the
caller declares visible (``fit_context``): the inner training part while
building training data, the training part at evaluation time; user activity
and ItemKNN scores come from the history passed with the rows. Nothing reads
validation or test interactions unless the caller passes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from recsys.data.history import History
from recsys.data.schema import Dataset, DataError, Split

SOURCES = ("retriever", "popularity", "both", "random")
USER_ATTRIBUTES = ("gender", "occupation", "age_bucket")
DEFAULT_SPARSE = ("user", "item", "gender", "occupation", "age_bucket", "categories", "year_bucket", "source")
DEFAULT_DENSE = ("retriever_score", "retriever_rank", "itemknn_score", "item_popularity", "item_recency", "user_activity")
CANDIDATE_COLUMNS = ("user_idx", "item_idx", "source", "retriever_score", "retriever_rank")


@dataclass
class FeatureContext:
    """Item statistics of the visible interactions, and the ItemKNN model fitted on them."""

    popularity: np.ndarray  # (N,) interaction counts
    last_seen: np.ndarray  # (N,) last interaction timestamp, -1 if never
    now: int  # latest visible timestamp
    itemknn: object  # fitted recsys.models.itemknn.ItemKNN


def _ids(values: pd.Series, vocab: list[str], what: str) -> np.ndarray:
    index = {v: i for i, v in enumerate(vocab)}
    missing = sorted(set(values.astype(str)) - set(index))
    if missing:
        raise DataError(f"users/items table: {what} values {missing[:5]} are not in meta.vocabularies[{what!r}]")
    return np.array([index[str(v)] for v in values], dtype=np.int64)


class RankingFeatures:
    """Feature builder for one prepared dataset (see module docstring for the features).

    Args:
        dataset: the canonical tables; attribute vocabularies come from its meta.
        sparse_features / dense_features: which features to emit, in order.
        itemknn_k: neighbours per item of the ItemKNN feature model.
    """

    def __init__(self, dataset: Dataset, sparse_features=DEFAULT_SPARSE, dense_features=DEFAULT_DENSE, itemknn_k: int = 50) -> None:
        unknown = [f for f in sparse_features if f not in DEFAULT_SPARSE] + [f for f in dense_features if f not in DEFAULT_DENSE]
        if unknown:
            raise ValueError(f"unknown ranking features {unknown}; sparse: {DEFAULT_SPARSE}, dense: {DEFAULT_DENSE}")
        if not sparse_features or not dense_features:
            raise ValueError("the ranker needs at least one sparse and one dense feature")
        self.meta = dataset.meta
        self.sparse_features, self.dense_features = list(sparse_features), list(dense_features)
        self.itemknn_k = itemknn_k
        vocab = self.meta.vocabularies
        users = dataset.users.sort_values("user_idx")
        items = dataset.items.sort_values("item_idx")
        self._user_attr = {a: _ids(users[a], vocab[a], a) for a in USER_ATTRIBUTES if a in self.sparse_features}
        self._year = _ids(items["year_bucket"], vocab["year_bucket"], "year_bucket") if "year_bucket" in self.sparse_features else None
        # Item genres as CSR (offsets, values) so a batch gathers bags without Python loops.
        cat_index = {c: i for i, c in enumerate(vocab.get("categories", []))}
        cats = [[cat_index[c] for c in cs] for cs in items["categories"]]
        self._cat_offsets = np.concatenate([[0], np.cumsum([len(c) for c in cats])]).astype(np.int64)
        self._cat_values = np.array([c for cs in cats for c in cs], dtype=np.int64)

    def cardinalities(self) -> dict[str, int]:
        """Table rows per sparse feature, in ``sparse_features`` order."""
        sizes = {"user": self.meta.n_users, "item": self.meta.n_items, "source": len(SOURCES)}
        return {f: sizes[f] if f in sizes else self.meta.cardinality(f) for f in self.sparse_features}

    def fit_context(self, dataset: Dataset, visible: pd.DataFrame) -> FeatureContext:
        """Item statistics and ItemKNN from ``visible`` interactions only."""
        from recsys.models.itemknn import ItemKNN

        n = self.meta.n_items
        items = visible["item_idx"].to_numpy()
        pop = np.bincount(items, minlength=n).astype(np.float64)
        last = np.full(n, -1, dtype=np.int64)
        np.maximum.at(last, items, visible["timestamp"].to_numpy().astype(np.int64))
        empty = visible.iloc[:0]
        knn = ItemKNN(self.meta, k=self.itemknn_k).fit(dataset, Split("visible", visible, empty, empty))
        return FeatureContext(pop, last, int(visible["timestamp"].max()), knn)

    def _dense(self, rows: pd.DataFrame, history: History, ctx: FeatureContext) -> np.ndarray:
        u = rows["user_idx"].to_numpy()
        it = rows["item_idx"].to_numpy()
        pos = {int(x): b for b, x in enumerate(history.users.tolist())}
        missing = set(np.unique(u).tolist()) - set(pos)
        if missing:
            raise ValueError(f"history lacks users {sorted(missing)[:5]} of the candidate rows")
        row_b = np.array([pos[int(x)] for x in u], dtype=np.int64)
        cols = []
        for f in self.dense_features:
            if f == "retriever_score":
                s = rows["retriever_score"].to_numpy(np.float64)
                g = rows.groupby("user_idx")["retriever_score"]
                mu, sd = g.transform("mean").to_numpy(), g.transform("std").fillna(0).to_numpy()
                cols.append((s - mu) / (sd + 1e-6))  # retriever scales differ; within-list order is what carries over
            elif f == "retriever_rank":
                cols.append(np.log1p(rows["retriever_rank"].to_numpy(np.float64)))
            elif f == "itemknn_score":
                knn = ctx.itemknn.score(history).numpy()  # (B, N)
                cols.append(np.log1p(np.maximum(knn[row_b, it], 0.0)))
            elif f == "item_popularity":
                cols.append(np.log1p(ctx.popularity[it]))
            elif f == "item_recency":
                last = ctx.last_seen[it]
                days = np.where(last >= 0, (ctx.now - last) / 86400.0, 10 * 365.0)  # never seen: "very old"
                cols.append(np.log1p(np.maximum(days, 0.0)))
            elif f == "user_activity":
                cols.append(np.log1p(history.lengths.numpy()[row_b].astype(np.float64)))
        dense = np.stack(cols, axis=1).astype(np.float32)
        if not np.isfinite(dense).all():
            raise ValueError(f"non-finite dense ranking features in columns {[f for f, ok in zip(self.dense_features, np.isfinite(dense).all(0)) if not ok]}")
        return dense

    def _sparse(self, rows: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """feature -> (values, lengths) over the R rows."""
        u = rows["user_idx"].to_numpy().astype(np.int64)
        it = rows["item_idx"].to_numpy().astype(np.int64)
        ones = np.ones(len(rows), dtype=np.int64)
        out = {}
        for f in self.sparse_features:
            if f == "user":
                out[f] = (u, ones)
            elif f == "item":
                out[f] = (it, ones)
            elif f in USER_ATTRIBUTES:
                out[f] = (self._user_attr[f][u], ones)
            elif f == "year_bucket":
                out[f] = (self._year[it], ones)
            elif f == "source":
                src = {s: i for i, s in enumerate(SOURCES)}
                out[f] = (np.array([src[s] for s in rows["source"]], dtype=np.int64), ones)
            elif f == "categories":
                lengths = self._cat_offsets[it + 1] - self._cat_offsets[it]
                out[f] = (self._cat_values[gather_ranges(self._cat_offsets[it], lengths)], lengths)
        return out

    def transform(self, rows: pd.DataFrame, history: History, ctx: FeatureContext) -> "RankingTensors":
        """Candidate rows -> tensors; ``history`` holds (at least) every user of ``rows``."""
        missing = [c for c in CANDIDATE_COLUMNS if c not in rows.columns]
        if missing:
            raise ValueError(f"candidate rows lack columns {missing}")
        labels = torch.tensor(rows["label"].to_numpy(np.float32)) if "label" in rows else torch.zeros(len(rows))
        sparse = {f: (torch.as_tensor(v), torch.as_tensor(l)) for f, (v, l) in self._sparse(rows).items()}
        return RankingTensors(torch.as_tensor(self._dense(rows, history, ctx)), sparse, labels)


def gather_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(s, s + l)`` over rows, vectorised."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    shift = np.repeat(starts - (ends - lengths), lengths)
    return np.arange(total, dtype=np.int64) + shift


@dataclass
class RankingTensors:
    """R rows of ranker input: dense (R, F_d), sparse feature -> (values, lengths (R,)), labels (R,)."""

    dense: torch.Tensor
    sparse: dict[str, tuple[torch.Tensor, torch.Tensor]]
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.numel())

    def batch(self, idx: torch.Tensor):
        """(dense (B, F_d), KeyedJaggedTensor with B bags per key, labels (B,)) of rows ``idx``."""
        from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

        idx = torch.as_tensor(idx, dtype=torch.long)
        values, lengths = [], []
        for v, l in self.sparse.values():
            offsets = torch.zeros(l.numel() + 1, dtype=torch.long)
            offsets[1:] = torch.cumsum(l, 0)
            bl = l[idx]
            values.append(v[torch.as_tensor(gather_ranges(offsets[idx].numpy(), bl.numpy()))])
            lengths.append(bl)
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=list(self.sparse), values=torch.cat(values), lengths=torch.cat(lengths).int()
        )
        return self.dense[idx], kjt, self.labels[idx]
