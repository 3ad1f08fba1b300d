"""A candidate source over the whole catalogue for requests with constraints.

The other sources propose a few hundred items each for the user, and the
constraint filter then keeps those that match; for a narrow request ("sci-fi
from the 1950s", "crime films between 1970 and 1980") that pool often holds
none of the catalogue's matches, and the list came back empty although the
catalogue has them. This source selects *every* item satisfying the request's
constraints (the same vectorised rule as ``ConstraintFilter``, so the two can
never disagree) and ranks them by the user's model:

    score = w_behaviour * CF(seeds -> item)      ItemKNN similarity to the liked history + session
          + w_content   * cos(profile, item)     text embedding of those seeds (all-MiniLM-L6-v2)
          + w_popularity * log1p(count)          the prior, and all a cold user has

each term min-max normalised over the matching items. It returns nothing for
a request without constraints (the other sources decide then), so it costs
nothing on the usual path. Unavailable, consumed and disliked items are never
proposed; the age rule stays a stage (``AgeFilter``), so that a request it
empties is told why.
"""

from __future__ import annotations

import numpy as np

from recsys.core.candidates import Candidates, Constraints, UserContext
from recsys.pipeline.catalog import ItemCatalog
from recsys.pipeline.filters import ConstraintFilter
from recsys.retrieval.sources import from_scores, positive_history


def constrains_catalogue(c: Constraints) -> bool:
    """True when the constraints select a subset of items (not only a count or excluded ids)."""
    return bool(c.include_categories or c.require_categories or c.exclude_categories or c.year_min is not None
                or c.year_max is not None or c.must_have_words or c.exclude_words)


def _normalise(x: np.ndarray) -> np.ndarray:
    if len(x) == 0:
        return x
    span = float(x.max() - x.min())
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


class ConstraintSource:
    """Args:
        catalog: item attributes (``embeddings`` = text embeddings, ``popularity``).
        similarity: (N, N) item-item similarity (scipy sparse or dense), e.g. ``ItemKNN.sim``; None: no CF term.
        weights: ``{"behaviour", "content", "popularity"}`` weights of the terms.
        n_seeds, recency_decay: the last ``n_seeds`` liked items seed the CF and content terms,
            the most recent weighted 1 and each older one ``recency_decay`` times less.
    """

    def __init__(self, catalog: ItemCatalog, similarity=None, weights: dict | None = None, n_seeds: int = 20,
                 recency_decay: float = 0.9, name: str = "constraints") -> None:
        import scipy.sparse as sp

        self.catalog, self.name = catalog, name
        self.rule = ConstraintFilter(catalog)
        self.sim = None if similarity is None else sp.csr_matrix(similarity, dtype=np.float32)
        self.w = {"behaviour": 1.0, "content": 0.5, "popularity": 0.3, **(weights or {})}
        self.n_seeds, self.decay = int(n_seeds), float(recency_decay)
        pop = catalog.popularity if catalog.popularity is not None else np.zeros(len(catalog), np.float32)
        self.log_pop = np.log1p(np.asarray(pop, np.float64))

    @classmethod
    def from_interactions(cls, catalog: ItemCatalog, dataset, split, k: int = 100, shrink: float = 10.0,
                          weights: dict | None = None, n_seeds: int = 20, recency_decay: float = 0.9,
                          name: str = "constraints") -> "ConstraintSource":
        """Fit ItemKNN (Sarwar et al. 2001) on the split's training part for the CF term (~1 s on ML-100K)."""
        from recsys.models.itemknn import ItemKNN

        sim = ItemKNN(dataset.meta, k=k, shrink=shrink).fit(dataset, split).sim if split is not None else None
        return cls(catalog, sim, weights, n_seeds, recency_decay, name)

    def matching(self, ctx: UserContext) -> np.ndarray:
        """(M,) item_idx of every available item that satisfies the constraints."""
        items = np.flatnonzero(self.catalog.available.astype(bool))
        return items[self.rule.mask(ctx.constraints, items)]

    def scores(self, ctx: UserContext, items: np.ndarray) -> np.ndarray:
        """(M,) the user's model score of ``items``."""
        seeds = positive_history(ctx)[-self.n_seeds:]
        rec = self.decay ** np.arange(len(seeds))[::-1]  # (S,) most recent seed weighs 1
        total = self.w["popularity"] * _normalise(self.log_pop[items])
        if len(seeds) and self.sim is not None and self.w["behaviour"]:
            cf = np.asarray(self.sim[seeds].T @ rec).ravel()  # (N,)
            total += self.w["behaviour"] * _normalise(cf[items])
        if len(seeds) and self.catalog.embeddings is not None and self.w["content"]:
            profile = (self.catalog.embeddings[seeds] * rec[:, None]).sum(0)
            total += self.w["content"] * _normalise(self.catalog.embeddings[items] @ profile)
        return total.astype(np.float32)

    def __call__(self, ctx: UserContext, k: int) -> Candidates:
        if not constrains_catalogue(ctx.constraints):
            return Candidates.empty()
        items = self.matching(ctx)
        return from_scores(self.name, items, self.scores(ctx, items), ctx, k)
