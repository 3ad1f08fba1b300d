"""The ranker's feature contract: declared once, computed from ``(UserContext, Candidates)``.

Training examples (``recsys.ranking.data``) and the serving rank stage
(``recsys.pipeline.rank``) both call :meth:`RankerFeatures.compute` on the merged candidate list
of the serving pipeline's sources, so a training row and a serving row of the same (user,
history, candidates) are the same numbers (tested). The ranker sees the top ``n_rank`` merged
candidates, in merged order (the stage must come right after the merger).

Sparse keys (pooled, one torchrec table each; sizes from the dataset's ``meta.json``; id 0 of
the user-side tables is "unknown", for cold users)::

    user        user_idx + 1                    item         item_idx
    gender / occupation / age_bucket            vocabulary id + 1
    categories  the item's genres (a bag)       year_bucket  vocabulary id + 1
    sources     which candidate sources proposed the item (a bag over ``sources``)

With ``din`` two more keys feed the DIN arch (``recsys.models.dlrm.DINArch``): ``din_item``
(the candidate) and ``din_history`` (the last ``history_len`` history items, every row).

Dense features, in :func:`dense_names` order (K rows, float32)::

    <s>_score, <s>_rank, <s>_proposed  per source s: score z-scored over the items s proposed
                                        in this list (absent: the lowest of them), log1p(rank)
                                        (absent: log1p(its list length)), 0/1
    merged_rank, merged_score          log1p(position in the merged list), RRF score x 100
    item_popularity, item_trend        log1p(visible interactions), log1p(30-day-half-life count)
    item_recency, item_age             log1p(days since the item's last / first interaction)
    user_activity, user_mainstream     log1p(history length), mean item_popularity of the history
    pop_gap, genre_match, year_gap     candidate vs. history: popularity difference, genre
                                        overlap with the recent history, |year - mean year| / 10
    att_<m>_{max,last,recent,mean}     attention of the candidate over the last history_len
                                        items (DIN-style, Zhou et al. 2018, with a fixed
                                        similarity): max, most recent item, 0.8^age-weighted
                                        mean, mean; m = knn (ItemKNN cosine, Sarwar et al. 2001)
                                        or text (MiniLM text embeddings)

Item statistics come from the interactions the caller declares visible: the inner training
part while building training examples, the training part when validating and serving offline,
every interaction when serving live. "Now" is the last visible timestamp.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch

from recsys.core.candidates import Candidates, UserContext
from recsys.data.schema import Dataset, Split
from recsys.models.dlrm import DIN_HISTORY, DIN_ITEM
from recsys.pipeline.catalog import ItemCatalog

USER_ATTRIBUTES = ("gender", "occupation", "age_bucket")
SPARSE = ("user", "item", *USER_ATTRIBUTES, "categories", "year_bucket", "sources")
PER_SOURCE = ("score", "rank", "proposed")
SHARED_DENSE = ("merged_rank", "merged_score", "item_popularity", "item_trend", "item_recency", "item_age",
                "user_activity", "user_mainstream", "pop_gap", "genre_match", "year_gap")
ATTENTION = tuple(f"att_{m}_{a}" for m in ("knn", "text") for a in ("max", "last", "recent", "mean"))
DAY = 86400.0


def dense_names(sources) -> list[str]:
    """Every dense feature the contract can emit for these candidate sources, in canonical order."""
    return [f"{s}_{f}" for s in sources for f in PER_SOURCE] + list(SHARED_DENSE) + list(ATTENTION)


@dataclass
class FeatureSpec:
    """What the ranker reads; saved with the ranker (JSON) so serving computes the same features.

    sources: the pipeline's candidate source names (their ``<s>_score``/``<s>_rank`` features).
    sparse: pooled sparse keys (subset of :data:`SPARSE`). dense: dense features (None = all of
    :func:`dense_names`). n_rank: merged candidates the ranker sees. history_len: recent items
    for attention and DIN. din: emit the DIN keys. knn_k / knn_shrink: the attention ItemKNN.
    """

    sources: list[str]
    sparse: list[str] = field(default_factory=lambda: ["gender", "occupation", "age_bucket", "categories", "year_bucket", "sources"])
    dense: list[str] | None = None
    n_rank: int = 200
    history_len: int = 20
    din: bool = False
    knn_k: int = 100
    knn_shrink: float = 10.0

    def __post_init__(self) -> None:
        self.sources, self.sparse = list(self.sources), list(self.sparse)
        self.dense = dense_names(self.sources) if self.dense is None else list(self.dense)
        bad = [f for f in self.sparse if f not in SPARSE] + [f for f in self.dense if f not in dense_names(self.sources)]
        if bad:
            raise ValueError(f"unknown ranker features {bad}; sparse: {list(SPARSE)}, dense: {dense_names(self.sources)}")
        if not self.sources or not self.sparse or not self.dense:
            raise ValueError("the ranker needs at least one source, one sparse and one dense feature")
        if self.n_rank < 1 or self.history_len < 1:
            raise ValueError(f"n_rank and history_len must be >= 1, got {self.n_rank}, {self.history_len}")

    def to_dict(self) -> dict:
        return asdict(self)

    def narrows(self, other: "FeatureSpec") -> bool:
        """True when this spec's rows are a column subset of ``other``'s (same candidates and history)."""
        same = (self.sources, self.n_rank, self.history_len, self.knn_k, self.knn_shrink) == (
            other.sources, other.n_rank, other.history_len, other.knn_k, other.knn_shrink)
        return same and set(self.sparse) <= set(other.sparse) and set(self.dense) <= set(other.dense) and (other.din or not self.din)

    def sparse_keys(self) -> list[str]:
        """Every KJT key of a row, in order: the pooled keys, then the DIN keys."""
        return self.sparse + ([DIN_ITEM, DIN_HISTORY] if self.din else [])


@dataclass
class RankerRows:
    """K rows of ranker input: dense (K, F_d) float32, sparse key -> (values, lengths (K,)), items (K,)."""

    items: np.ndarray
    dense: np.ndarray
    sparse: dict[str, tuple[np.ndarray, np.ndarray]]

    def __len__(self) -> int:
        return len(self.items)

    @classmethod
    def concat(cls, parts: list["RankerRows"]) -> "RankerRows":
        keys = list(parts[0].sparse)
        return cls(np.concatenate([p.items for p in parts]), np.concatenate([p.dense for p in parts]),
                   {k: (np.concatenate([p.sparse[k][0] for p in parts]), np.concatenate([p.sparse[k][1] for p in parts]))
                    for k in keys})

    def select(self, spec: FeatureSpec, of: FeatureSpec) -> "RankerRows":
        """The columns of ``spec`` from rows computed for the wider ``of`` (``spec.narrows(of)``)."""
        cols = [of.dense.index(f) for f in spec.dense]
        return RankerRows(self.items, self.dense[:, cols], {k: self.sparse[k] for k in spec.sparse_keys()})

    def tensors(self) -> "RankerTensors":
        return RankerTensors(torch.from_numpy(self.dense), {k: (torch.from_numpy(v), torch.from_numpy(l)) for k, (v, l) in self.sparse.items()})


@dataclass
class RankerTensors:
    """:class:`RankerRows` as tensors, with row gathering into model batches."""

    dense: torch.Tensor
    sparse: dict[str, tuple[torch.Tensor, torch.Tensor]]

    def __post_init__(self) -> None:
        self._offsets = {k: torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(l, 0)]) for k, (_, l) in self.sparse.items()}

    def __len__(self) -> int:
        return int(self.dense.shape[0])

    def batch(self, idx: torch.Tensor | None = None):
        """(dense (B, F_d), KeyedJaggedTensor with B bags per key) of rows ``idx`` (None = all)."""
        from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

        if idx is None:
            idx = torch.arange(len(self))
        values, lengths = [], []
        for k, (v, l) in self.sparse.items():
            bl = l[idx]
            values.append(v[torch.from_numpy(gather_ranges(self._offsets[k][idx].numpy(), bl.numpy()))])
            lengths.append(bl)
        kjt = KeyedJaggedTensor.from_lengths_sync(keys=list(self.sparse), values=torch.cat(values), lengths=torch.cat(lengths).int())
        return self.dense[idx], kjt


def gather_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(s, s + l)`` over rows, vectorised."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    return np.arange(total, dtype=np.int64) + np.repeat(starts - (ends - lengths), lengths)


def _zscore(x: np.ndarray, ok: np.ndarray) -> np.ndarray:
    if not ok.any():
        return np.zeros_like(x)
    v = x[ok]
    z = (x - v.mean()) / (v.std() + 1e-6)
    return np.where(ok, z, z[ok].min())


class RankerFeatures:
    """The contract for one dataset and one set of visible interactions.

    Args:
        spec: which features (see :class:`FeatureSpec`).
        dataset: the canonical tables (users' attributes, items' genres and years, meta).
        visible: the interactions the item statistics and the attention ItemKNN come from.
        text_emb: (N, D) item text embeddings, needed by the ``att_text_*`` features.
    """

    def __init__(self, spec: FeatureSpec, dataset: Dataset, visible: pd.DataFrame, text_emb: np.ndarray | None = None) -> None:
        self.spec, self.meta = spec, dataset.meta
        n = self.meta.n_items
        vocab = self.meta.vocabularies
        users = dataset.users.sort_values("user_idx")
        self._user_attr = {}
        for a in USER_ATTRIBUTES:
            index = {v: i + 1 for i, v in enumerate(vocab.get(a, []))}
            col = users[a].astype(str) if a in users.columns else pd.Series([""] * len(users))
            self._user_attr[a] = np.array([index.get(v, 0) for v in col], np.int64)  # (U,)
        self._attr_index = {a: {v: i + 1 for i, v in enumerate(vocab.get(a, []))} for a in USER_ATTRIBUTES}
        self.catalog = ItemCatalog.from_items(dataset.items)
        ybucket = {v: i + 1 for i, v in enumerate(vocab.get("year_bucket", []))}
        items = dataset.items.sort_values("item_idx")
        self._year_bucket = np.array([ybucket.get(str(v), 0) for v in items.get("year_bucket", [""] * n)], np.int64)
        n_cat = len(self.catalog.categories)
        self._genres = np.zeros((n, max(n_cat, 1)), np.float32)  # (N, C) multi-hot
        rows = np.repeat(np.arange(n), np.diff(self.catalog.cat_offsets))
        self._genres[rows, self.catalog.cat_ids] = 1.0
        self._year = self.catalog.year.astype(np.float64)
        self._source_index = {s: i for i, s in enumerate(spec.sources)}
        self._fit_visible(dataset, visible)
        need_text = any(f.startswith("att_text") for f in spec.dense)
        if need_text and text_emb is None:
            raise ValueError("att_text_* features need item text embeddings (prepare with data.text_embeddings=true) "
                             "or drop them from the ranker's dense features")
        self._text = None if text_emb is None or not need_text else (
            np.asarray(text_emb, np.float32) / np.maximum(np.linalg.norm(text_emb, axis=1, keepdims=True), 1e-12))

    def _fit_visible(self, dataset: Dataset, visible: pd.DataFrame) -> None:
        n = self.meta.n_items
        it, ts = visible["item_idx"].to_numpy(np.int64), visible["timestamp"].to_numpy(np.int64)
        self.now = int(ts.max()) if len(ts) else 0
        self._log_pop = np.log1p(np.bincount(it, minlength=n)).astype(np.float64)
        trend = np.bincount(it, weights=np.exp2(-(self.now - ts) / (30 * DAY)), minlength=n)
        self._log_trend = np.log1p(trend)
        last, first = np.full(n, ts.min() if len(ts) else 0, np.int64), np.full(n, self.now, np.int64)
        np.maximum.at(last, it, ts)
        np.minimum.at(first, it, ts)
        self._recency = np.log1p(np.maximum(self.now - last, 0) / DAY)
        self._age = np.log1p(np.maximum(self.now - first, 0) / DAY)
        self._knn = None
        if any(f.startswith("att_knn") for f in self.spec.dense):
            from recsys.models.itemknn import ItemKNN

            empty = visible.iloc[:0]
            knn = ItemKNN(self.meta, k=self.spec.knn_k, shrink=self.spec.knn_shrink).fit(dataset, Split("visible", visible, empty, empty))
            self._knn = knn.sim.tocsr()  # (N, N), row h -> its top-k neighbours

    def cardinalities(self) -> dict[str, int]:
        """Table rows per pooled sparse key, in ``spec.sparse`` order."""
        v = self.meta.vocabularies
        sizes = {"user": self.meta.n_users + 1, "item": self.meta.n_items, "categories": max(len(self.catalog.categories), 1),
                 "year_bucket": len(v.get("year_bucket", [])) + 1, "sources": len(self.spec.sources),
                 **{a: len(v.get(a, [])) + 1 for a in USER_ATTRIBUTES}}
        return {f: sizes[f] for f in self.spec.sparse}

    def with_spec(self, spec: FeatureSpec) -> "RankerFeatures":
        """The same fitted statistics under a narrower spec (``spec.narrows(self.spec)``)."""
        if not spec.narrows(self.spec):
            raise ValueError("with_spec needs a spec whose features are a subset of this one's")
        import copy

        out = copy.copy(self)
        out.spec = spec
        return out

    @property
    def num_dense(self) -> int:
        return len(self.spec.dense)

    # ---- the contract -------------------------------------------------------------------
    def compute(self, ctx: UserContext, cands: Candidates) -> RankerRows:
        """Rows of the top ``n_rank`` of ``cands`` (merged order) for the request ``ctx``."""
        c = cands.head(self.spec.n_rank)
        hist = np.concatenate([np.asarray(ctx.history, np.int64), np.asarray(ctx.session, np.int64)])
        recent = hist[-self.spec.history_len:]
        dense = self._dense(c, hist, recent)
        return RankerRows(c.items.copy(), dense, self._sparse(ctx, c, recent))

    def _dense(self, c: Candidates, hist: np.ndarray, recent: np.ndarray) -> np.ndarray:
        k, it = len(c), c.items
        cols: dict[str, np.ndarray] = {}
        for s in self.spec.sources:
            score = np.asarray(c.features.get(f"{s}_score", np.full(k, np.nan)), np.float64)
            rank = np.asarray(c.features.get(f"{s}_rank", np.full(k, -1)), np.float64)
            ok = (rank >= 0) & np.isfinite(score)
            cols[f"{s}_score"] = _zscore(np.nan_to_num(score), ok)
            cols[f"{s}_rank"] = np.log1p(np.where(ok, rank, rank[ok].max() + 1 if ok.any() else 0))
            cols[f"{s}_proposed"] = ok.astype(np.float64)
        cols["merged_rank"] = np.log1p(np.arange(k, dtype=np.float64))
        cols["merged_score"] = 100.0 * c.scores.astype(np.float64)
        cols["item_popularity"], cols["item_trend"] = self._log_pop[it], self._log_trend[it]
        cols["item_recency"], cols["item_age"] = self._recency[it], self._age[it]
        mainstream = float(self._log_pop[hist].mean()) if len(hist) else 0.0
        cols["user_activity"] = np.full(k, np.log1p(len(hist)))
        cols["user_mainstream"] = np.full(k, mainstream)
        cols["pop_gap"] = self._log_pop[it] - mainstream
        g = self._genres[it]  # (K, C)
        profile = self._genres[recent].mean(0) if len(recent) else np.zeros(g.shape[1], np.float32)
        cols["genre_match"] = (g @ profile) / np.maximum(g.sum(1), 1.0)
        years = self._year[recent][self._year[recent] > 0]
        cols["year_gap"] = np.where(self._year[it] > 0, np.abs(self._year[it] - years.mean()) / 10.0, 0.0) if len(years) else np.zeros(k)
        for m in ("knn", "text"):
            if any(f.startswith(f"att_{m}") for f in self.spec.dense):
                cols.update(self._attention(m, it, recent))
        return np.stack([cols[f] for f in self.spec.dense], axis=1).astype(np.float32)

    def _attention(self, m: str, it: np.ndarray, recent: np.ndarray) -> dict[str, np.ndarray]:
        """Similarities of each candidate to the recent items (K, L) -> four summaries (K,) each."""
        if len(recent) == 0:
            return {f"att_{m}_{a}": np.zeros(len(it)) for a in ("max", "last", "recent", "mean")}
        if m == "knn":
            sim = self._knn[recent][:, it].toarray().T.astype(np.float64)  # (K, L)
        else:
            sim = (self._text[it] @ self._text[recent].T).astype(np.float64)  # (K, L)
        w = 0.8 ** np.arange(len(recent))[::-1]  # the most recent item weighs 1
        return {f"att_{m}_max": sim.max(1), f"att_{m}_last": sim[:, -1], f"att_{m}_recent": sim @ w / w.sum(),
                f"att_{m}_mean": sim.mean(1)}

    def _user_attribute(self, ctx: UserContext, a: str) -> int:
        if ctx.user_idx is not None and 0 <= ctx.user_idx < len(self._user_attr[a]):
            return int(self._user_attr[a][ctx.user_idx])
        return self._attr_index[a].get(str(ctx.demographics.get(a, "")), 0)

    def _sparse(self, ctx: UserContext, c: Candidates, recent: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        k, it = len(c), c.items
        ones = np.ones(k, np.int64)
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for f in self.spec.sparse:
            if f == "user":
                out[f] = (np.full(k, 0 if ctx.user_idx is None else ctx.user_idx + 1, np.int64), ones)
            elif f == "item":
                out[f] = (it.astype(np.int64), ones)
            elif f in USER_ATTRIBUTES:
                out[f] = (np.full(k, self._user_attribute(ctx, f), np.int64), ones)
            elif f == "year_bucket":
                out[f] = (self._year_bucket[it], ones)
            elif f == "categories":
                starts, lengths = self.catalog.cat_offsets[it], np.diff(self.catalog.cat_offsets)[it]
                out[f] = (self.catalog.cat_ids[gather_ranges(starts, lengths)].astype(np.int64), lengths.astype(np.int64))
            elif f == "sources":
                member = np.stack([np.asarray(c.features.get(f"{s}_rank", np.full(k, -1))) >= 0 for s in self.spec.sources], 1)
                out[f] = (np.nonzero(member)[1].astype(np.int64), member.sum(1).astype(np.int64))
        if self.spec.din:
            out[DIN_ITEM] = (it.astype(np.int64), ones)
            out[DIN_HISTORY] = (np.tile(recent, k).astype(np.int64), np.full(k, len(recent), np.int64))
        return out
