"""Ranking stage: score ~1,000 merged candidates with a DLRM-style model, keep the top ``keep``.

The model is ``recsys.models.dlrm.DLRM`` (Naumov et al., "Deep Learning
Recommendation Model for Personalization and Recommendation Systems", 2019):
``forward(dense (K, F_d), sparse KJT with K rows) -> (K,) logits``. This stage
only builds one request's features and calls it; training lives in
``recsys.models.lit_ranker`` / ``recsys.ranking``.

Features per candidate row (K rows, one user):

    sparse  user      [user_idx + 1]  (0 = unknown user: its own table row)
            item      [item_idx]
            category  the item's category ids (a bag, sum-pooled)
    dense   log1p(popularity), and each ``<source>_score`` feature the merger
            kept (NaN where a source did not propose the item -> 0, plus a
            0/1 "proposed" indicator per source), in ``dense_features`` order

KJT layout (keys in the model's feature order, here F = 3)::

    keys     user          item          category
    lengths  1 1 ... 1     1 1 ... 1     |cats(i_1)| ... |cats(i_K)|
"""

from __future__ import annotations

import numpy as np
import torch

from recsys.core.candidates import Candidates, UserContext
from recsys.pipeline.catalog import ItemCatalog
from recsys.ranking.features import gather_ranges


def ranker_cardinalities(n_users: int, n_items: int, n_categories: int) -> dict[str, int]:
    """Table sizes the stage's features need (user has one extra row for unknown users)."""
    return {"user": n_users + 1, "item": n_items, "category": max(n_categories, 1)}


class DLRMRankStage:
    """Args:
        model: a DLRM whose ``feature_names`` are ``user``, ``item``, ``category`` and whose
            dense input has ``1 + 2 * len(sources)`` features.
        catalog: item categories and popularity.
        sources: the candidate source names whose scores are dense features.
        keep: how many candidates survive (~100).
    """

    name = "ranker"

    def __init__(self, model, catalog: ItemCatalog, sources: list[str], keep: int = 100):
        if list(model.feature_names) != ["user", "item", "category"]:
            raise ValueError(f"ranker model features {model.feature_names}, expected ['user', 'item', 'category']")
        self.model, self.catalog, self.sources, self.keep = model.eval(), catalog, list(sources), keep
        pop = catalog.popularity if catalog.popularity is not None else np.zeros(len(catalog), np.float32)
        self.log_pop = np.log1p(pop).astype(np.float32)

    def dense(self, cands: Candidates) -> np.ndarray:
        """(K, 1 + 2S) float32."""
        cols = [self.log_pop[cands.items]]
        for s in self.sources:
            v = cands.features.get(f"{s}_score")
            v = np.full(len(cands), np.nan, np.float32) if v is None else np.asarray(v, np.float32)
            proposed = np.isfinite(v)
            cols += [np.where(proposed, v, 0.0), proposed.astype(np.float32)]
        return np.stack(cols, axis=1).astype(np.float32)

    def sparse(self, ctx: UserContext, cands: Candidates):
        from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

        k = len(cands)
        user = np.full(k, 0 if ctx.user_idx is None else ctx.user_idx + 1, np.int64)
        starts, ends = self.catalog.cat_offsets[cands.items], self.catalog.cat_offsets[cands.items + 1]
        cat_len = (ends - starts).astype(np.int64)
        cats = self.catalog.cat_ids[gather_ranges(starts, cat_len)]
        values = np.concatenate([user, cands.items, cats.astype(np.int64)])
        lengths = np.concatenate([np.ones(2 * k, np.int64), cat_len])
        return KeyedJaggedTensor.from_lengths_sync(keys=["user", "item", "category"], values=torch.from_numpy(values),
                                                   lengths=torch.from_numpy(lengths))

    @torch.no_grad()
    def __call__(self, ctx: UserContext, cands: Candidates) -> Candidates:
        if len(cands) == 0:
            return cands
        logits = self.model(torch.from_numpy(self.dense(cands)), self.sparse(ctx, cands))  # (K,)
        scores = torch.sigmoid(logits).numpy().astype(np.float32)
        return cands.with_scores(scores, feature="rank_score").sorted().head(self.keep)
