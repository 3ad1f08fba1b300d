"""Similar items (``GET /items/{id}/similar``): behaviour first, content for what behaviour cannot say.

Title + genre text alone makes poor neighbours (Toy Story -> "Kids", a 1995
drama; Scream -> "Screamers"), so the list is a blend:

1. behaviour: the item's neighbours in an item-to-item source of the pipeline
   (ItemKNN co-occurrence by default, or nearest neighbours of two-tower item
   embeddings when ``behaviour`` names a two-tower source); used only when the
   item has at least ``min_interactions`` interactions (a new item's
   co-occurrences are noise). Co-occurrence alone favours blockbusters (Toy
   Story's top ItemKNN neighbours on ML-100K are Star Wars and Independence
   Day), so these neighbours are ordered by ``(1 - content_weight) * w / w_max
   + content_weight * cosine``: people watched them together, and among those
   the ones that are alike come first;
2. content: cosine of the text embeddings (all-MiniLM-L6-v2), which fills the
   rest of the list and is the whole list for an item without interactions;
   without text embeddings, the Jaccard overlap of categories.

Scores keep that order: behaviour neighbours score in [1, 2] (1 + the blend),
content neighbours their cosine (<= 1). Unavailable items and the
item itself never appear.
"""

from __future__ import annotations

import numpy as np

from recsys.pipeline.catalog import ItemCatalog


class SimilarItems:
    """Args:
        catalog: item attributes (``embeddings`` = text embeddings, ``popularity`` = interaction counts).
        neighbours: (N, L) int64 behaviour neighbours (-1 = none), best first, or None (content only).
        weights: (N, L) their similarities.
        min_interactions: an item with fewer interactions gets content neighbours only.
        behaviour_first: False puts the content neighbours first (an ablation).
        content_weight: weight of the content cosine when ordering the behaviour neighbours (0: co-occurrence only).
    """

    def __init__(self, catalog: ItemCatalog, neighbours: np.ndarray | None = None, weights: np.ndarray | None = None,
                 min_interactions: int = 5, behaviour_first: bool = True, content_weight: float = 0.5) -> None:
        if not 0.0 <= content_weight <= 1.0:
            raise ValueError(f"content_weight must be in [0, 1], got {content_weight}")
        self.content_weight = float(content_weight)
        if (neighbours is None) != (weights is None):
            raise ValueError("SimilarItems needs both neighbours and weights, or neither")
        self.catalog, self.min_interactions, self.behaviour_first = catalog, int(min_interactions), bool(behaviour_first)
        self.neighbours = None if neighbours is None else np.asarray(neighbours, np.int64)
        self.weights = None if weights is None else np.asarray(weights, np.float32)
        pop = catalog.popularity
        self.counts = np.zeros(len(catalog), np.float32) if pop is None else np.asarray(pop, np.float32)

    def behaviour(self, item: int, content: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(M,) neighbours by interactions and (M,) scores in [1, 2], best first; empty for a cold item."""
        if self.neighbours is None or self.counts[item] < self.min_interactions:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        nb, w = self.neighbours[item], self.weights[item]
        ok = (nb >= 0) & (w > 0) & (nb != item)
        nb, w = nb[ok], w[ok]
        if len(nb) == 0:
            return nb, w.astype(np.float32)
        blend = (1 - self.content_weight) * w / float(w.max()) + self.content_weight * np.clip(content[nb], 0, 1)
        order = np.argsort(-blend, kind="stable")
        return nb[order], (1.0 + blend[order]).astype(np.float32)

    def content(self, item: int) -> np.ndarray:
        """(N,) content similarity of every item to ``item``."""
        if self.catalog.embeddings is not None:
            return (self.catalog.embeddings @ self.catalog.embeddings[item]).astype(np.float32)
        from recsys.pipeline.diversity import category_similarity

        return category_similarity(self.catalog, np.r_[item, np.arange(len(self.catalog))])[0, 1:].astype(np.float32)

    def __call__(self, item: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """-> (items (<= k,), scores), best first."""
        n = len(self.catalog)
        if not 0 <= item < n:
            raise IndexError(f"item_idx {item} out of range [0, {n})")
        allowed = self.catalog.available.astype(bool).copy()
        allowed[item] = False
        scores = self.content(item)
        nb, nb_scores = self.behaviour(item, scores)
        keep = allowed[nb]
        nb, nb_scores = nb[keep][:k], nb_scores[keep][:k]
        scores[~allowed] = -np.inf
        scores[nb] = -np.inf  # already listed by behaviour
        top = np.argsort(-scores, kind="stable")[: k - len(nb) if self.behaviour_first else k]
        top = top[np.isfinite(scores[top])]
        if self.behaviour_first:
            items, out = np.concatenate([nb, top]), np.concatenate([nb_scores, scores[top]])
        else:
            items, out = top, scores[top]
        return items[:k].astype(np.int64), out[:k].astype(np.float32)


def build_similar(node, catalog: ItemCatalog, sources: dict) -> SimilarItems:
    """``SimilarItems`` from the pipeline config's ``similar`` node and the built sources.

    ``node.behaviour`` names the source whose neighbours are the behaviour part
    (an ``ItemToItemSource`` as built by ``itemknn_source``, or a ``TwoTowerSource``,
    whose item-tower embeddings are searched); null or a source that is switched
    off means content only. Defaults: ``behaviour: item2item``, ``min_interactions: 5``.
    """
    node = dict(node or {})
    node.pop("_target_", None)
    name = node.pop("behaviour", "item2item")
    src = sources.get(name) if name else None
    neighbours = weights = None
    if src is not None and hasattr(src, "neighbours"):
        neighbours, weights = src.neighbours, src.weights
    elif src is not None and hasattr(src, "model") and hasattr(src.model, "item_embeddings"):
        from recsys.retrieval.sources import ItemToItemSource

        emb = np.asarray(src.model.item_embeddings().detach().cpu().numpy(), np.float32)
        i2i = ItemToItemSource.from_embeddings(emb, n_neighbours=int(node.pop("n_neighbours", 50)))
        neighbours, weights = i2i.neighbours, i2i.weights
    node.pop("n_neighbours", None)
    return SimilarItems(catalog, neighbours, weights, **node)
