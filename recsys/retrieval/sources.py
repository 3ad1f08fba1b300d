"""Candidate sources: each turns a ``UserContext`` into up to k ``Candidates``.

One small interface, ``__call__(ctx, k) -> Candidates``, so the merger and
the pipeline treat them alike:

- ``TwoTowerSource``   user tower at request time + ANN search over the item index
- ``ItemToItemSource`` neighbours of the user's recent items (ItemKNN similarities,
                       or nearest neighbours in item-embedding space)
- ``PopularitySource`` time-decayed trending items (optionally within onboarding categories)
- ``ContentSource``    MiniLM text similarity to the user's history, a text query,
                       or onboarding categories (cold start)

Every source drops the items the user already consumed (history, session,
negative feedback) and records its score as ``features["<name>_score"]``.
Only liked items seed a source (``positive_history``): an item the user rated
at or below the negative threshold, or skipped, never pulls in its neighbours
(a two-tower source may read them as part of the sequence: ``negatives_in_history``).
"""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np
import pandas as pd
import torch

from recsys.data.history import History
from recsys.core.candidates import Candidates, UserContext
from recsys.retrieval.index import ItemIndex


class CandidateSource(Protocol):
    name: str

    def __call__(self, ctx: UserContext, k: int) -> Candidates: ...


def positive_history(ctx: UserContext) -> np.ndarray:
    """History + session minus the user's negative items, oldest first: what may seed a source or an explanation."""
    seq = np.concatenate([np.asarray(ctx.history, np.int64), np.asarray(ctx.session, np.int64)])
    if len(ctx.negative_items) == 0:
        return seq
    return seq[~np.isin(seq, np.asarray(ctx.negative_items, np.int64))]


def _seen(ctx: UserContext) -> np.ndarray:
    return np.unique(np.concatenate([np.asarray(ctx.history, np.int64), np.asarray(ctx.session, np.int64),
                                     np.asarray(ctx.negative_items, np.int64)]))


def from_scores(name: str, items: np.ndarray, scores: np.ndarray, ctx: UserContext, k: int) -> Candidates:
    """Rows (items, scores) minus consumed items, top k by score -> Candidates of source ``name``."""
    items, scores = np.asarray(items, np.int64), np.asarray(scores, np.float32)
    keep = (items >= 0) & ~np.isin(items, _seen(ctx)) & np.isfinite(scores)
    items, scores = items[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")[:k]
    items, scores = items[order], scores[order]
    return Candidates(items, scores, np.full(len(items), name, dtype=object), {f"{name}_score": scores})


def _dense_topk(name: str, scores: np.ndarray, ctx: UserContext, k: int) -> Candidates:
    """scores (N,) over the whole catalogue -> top k unconsumed items."""
    return from_scores(name, np.arange(len(scores)), scores, ctx, k)


class TwoTowerSource:
    """User tower at request time, ANN over the item-tower index.

    ``model``: a ``LitTwoTower`` (or anything with ``user_embeddings(users, history, session)``).
    Unknown users (``user_idx=None``) enter with an empty id bag: their vector comes
    from history/session/demographics alone. The index over-fetches by the
    number of consumed items so k unconsumed ones remain.
    ``negatives_in_history``: the user tower reads the whole history, low-rated items included
    (they are still never recommended). A sequential tower is trained on whole sequences, so
    removing them at request time shows it a sequence it never saw (on ML-100K validation its
    NDCG@10 as a source drops from 0.130 to 0.119: experiments/ml100k/merge_weights.md).
    """

    def __init__(self, model, index: ItemIndex, name: str = "two_tower", negatives_in_history: bool = False) -> None:
        self.model, self.index, self.name = model, index, name
        self.negatives_in_history = negatives_in_history

    @torch.no_grad()
    def user_vector(self, ctx: UserContext) -> np.ndarray:
        """-> (1, D) float32."""
        self.model.eval()
        uid = -1 if ctx.user_idx is None else int(ctx.user_idx)
        neg = np.zeros(0, np.int64) if self.negatives_in_history else np.asarray(ctx.negative_items, np.int64)
        liked = [s[~np.isin(s, neg)] for s in (np.asarray(ctx.history, np.int64), np.asarray(ctx.session, np.int64))]
        hist = History.from_lists([uid], [liked[0]])
        sess = History.from_lists([uid], [liked[1]]) if len(liked[1]) else None
        return self.model.user_embeddings(torch.tensor([uid]), hist, sess).cpu().numpy().astype(np.float32)

    def __call__(self, ctx: UserContext, k: int) -> Candidates:
        scores, items = self.index.search(self.user_vector(ctx), k + len(_seen(ctx)))
        return from_scores(self.name, items[0], scores[0], ctx, k)


class ItemToItemSource:
    """Neighbours of the user's most recent items, scores summed over seeds.

    ``neighbours`` (N, L) int64 item_idx (-1 = none) and ``weights`` (N, L) their
    similarities. The last ``n_seeds`` liked items of history + session are the
    seeds, the most recent weighted highest (``recency_decay`` per step back).
    """

    def __init__(self, neighbours: np.ndarray, weights: np.ndarray, name: str = "item2item",
                 n_seeds: int = 20, recency_decay: float = 0.9) -> None:
        if neighbours.shape != weights.shape:
            raise ValueError(f"neighbours {neighbours.shape} and weights {weights.shape} differ in shape")
        self.neighbours, self.weights = np.asarray(neighbours, np.int64), np.asarray(weights, np.float32)
        self.name, self.n_seeds, self.decay = name, n_seeds, recency_decay

    @classmethod
    def from_similarity(cls, sim, n_neighbours: int = 50, **kw) -> "ItemToItemSource":
        """sim: (N, N) dense array, torch tensor or scipy sparse item-item similarity (e.g. ItemKNN's)."""
        if hasattr(sim, "toarray"):
            sim = sim.toarray()
        sim = np.asarray(torch.as_tensor(sim, dtype=torch.float32)).copy()
        np.fill_diagonal(sim, -np.inf)  # an item is not its own neighbour
        L = min(n_neighbours, sim.shape[1] - 1)
        nb = np.argsort(-sim, axis=1, kind="stable")[:, :L]
        w = np.take_along_axis(sim, nb, 1)
        nb = np.where(w > 0, nb, -1)  # zero similarity is no evidence
        return cls(nb, np.where(w > 0, w, 0.0), **kw)

    @classmethod
    def from_embeddings(cls, emb: np.ndarray, n_neighbours: int = 50, index_kind: str = "flat", **kw) -> "ItemToItemSource":
        """Nearest neighbours by inner product in item-embedding space (two-tower item tower or text)."""
        index = ItemIndex(index_kind, device="cpu").build(emb)
        scores, nb = index.search(emb, n_neighbours + 1)
        self_hit = nb == np.arange(len(emb))[:, None]
        # drop each item itself (normally column 0); keep the first n_neighbours others
        nb = np.stack([r[~m][:n_neighbours] for r, m in zip(nb, self_hit)])
        scores = np.stack([r[~m][:n_neighbours] for r, m in zip(scores, self_hit)])
        return cls(nb, scores, **kw)

    def __call__(self, ctx: UserContext, k: int) -> Candidates:
        seeds = positive_history(ctx)[-self.n_seeds:]
        if len(seeds) == 0:
            return Candidates.empty()
        rec = self.decay ** np.arange(len(seeds))[::-1]  # most recent seed weighs 1
        nb = self.neighbours[seeds]  # (S, L)
        w = self.weights[seeds] * rec[:, None]  # (S, L)
        ok = nb >= 0
        # sum the weights per neighbour (sorted unique ids, as a groupby would give; ~4x cheaper per request)
        items, inverse = np.unique(nb[ok], return_inverse=True)
        return from_scores(self.name, items, np.bincount(inverse, weights=w[ok], minlength=len(items)), ctx, k)


class PopularitySource:
    """Time-decayed popularity: score_i = sum over i's interactions of 2^(-(now - t) / half_life).

    ``now`` defaults to the last timestamp of the table (the dataset's own clock, never the wall
    clock). ``item_categories`` (N lists) lets a cold user's onboarding categories restrict the list.
    ``negative_threshold``: interactions with a value at or below it (a 1-star rating, a refreshed
    skip) are dislikes and do not count as popularity (None: every interaction counts).
    """

    def __init__(self, interactions: pd.DataFrame, n_items: int, half_life_days: float = 30.0,
                 now: int | None = None, item_categories: list[list[str]] | None = None, name: str = "popularity",
                 negative_threshold: float | None = None) -> None:
        if negative_threshold is not None and "value" in interactions:
            interactions = interactions[interactions["value"].to_numpy(np.float64) > negative_threshold]
        t = interactions["timestamp"].to_numpy(np.float64)
        now = float(t.max()) if now is None and len(t) else float(now or 0)
        w = np.exp2(-(now - t) / (half_life_days * 86400.0))
        self.scores = np.bincount(interactions["item_idx"].to_numpy(np.int64), weights=w, minlength=n_items).astype(np.float32)
        self.categories = [set(c.lower() for c in cs) for cs in item_categories] if item_categories is not None else None
        self.name = name
        # The ranking is the same for every request: sort once (N log N), not per request
        # (~35 ms at 1M items); a request then reads the head past its consumed items.
        self.order = np.argsort(-self.scores, kind="stable")

    def __call__(self, ctx: UserContext, k: int) -> Candidates:
        wanted = {c.lower() for c in ctx.onboarding_categories}
        if wanted and self.categories is not None:
            in_cat = np.array([bool(c & wanted) for c in self.categories])
            return _dense_topk(self.name, np.where(in_cat, self.scores, -np.inf), ctx, k)
        head = self.order[: k + len(_seen(ctx))]  # enough rows to survive removing consumed items
        return from_scores(self.name, head, self.scores[head], ctx, k)


class ContentSource:
    """Text-embedding similarity (all-MiniLM-L6-v2) to the user's profile.

    Profile, by what the request has: a text ``query`` (embedded with
    ``embed_fn``, default ``recsys.data.text_embed.embed_texts``); else the mean
    text vector of the last ``n_recent`` liked history + session items; else the mean
    vector of the items in the onboarding categories. A new item with no
    interactions is reachable here through its text alone.
    """

    def __init__(self, text_emb: np.ndarray, item_categories: list[list[str]] | None = None,
                 embed_fn: Callable[[list[str]], np.ndarray] | None = None, n_recent: int = 20,
                 index: ItemIndex | None = None, name: str = "content") -> None:
        emb = np.asarray(text_emb, np.float32)
        self.emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        self.index = index or ItemIndex("flat", device="cpu").build(self.emb)
        self.categories = [set(c.lower() for c in cs) for cs in item_categories] if item_categories is not None else None
        self.embed_fn, self.n_recent, self.name = embed_fn, n_recent, name

    def profile(self, ctx: UserContext) -> np.ndarray | None:
        """-> (D,) query vector, or None when the request carries nothing to match."""
        if ctx.query:
            if self.embed_fn is None:
                from recsys.data.text_embed import embed_texts

                self.embed_fn = embed_texts
            return np.asarray(self.embed_fn([ctx.query]), np.float32)[0]
        recent = positive_history(ctx)[-self.n_recent:]
        if len(recent):
            return self.emb[recent].mean(0)
        wanted = {c.lower() for c in ctx.onboarding_categories}
        if wanted and self.categories is not None:
            rows = [i for i, c in enumerate(self.categories) if c & wanted]
            if rows:
                return self.emb[rows].mean(0)
        return None

    def __call__(self, ctx: UserContext, k: int) -> Candidates:
        q = self.profile(ctx)
        if q is None:
            return Candidates.empty()
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        scores, items = self.index.search(q[None, :], k + len(_seen(ctx)))
        return from_scores(self.name, items[0], scores[0], ctx, k)
