"""Small random catalogues and a fixed-list source for pipeline tests (seeded, so failures reproduce)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.core.candidates import Candidates
from recsys.pipeline.catalog import ItemCatalog

CATEGORIES = ["Action", "Comedy", "Drama", "Horror", "Children's", "Sci-Fi"]
WORDS = ["space", "love", "war", "dog", "night", "city"]


def make_items(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        cats = list(rng.choice(CATEGORIES, size=rng.integers(0, 3), replace=False))
        words = " ".join(rng.choice(WORDS, size=2))
        rows.append(dict(item_idx=i, item_id=str(1000 + i), title=f"Movie {i} {words}", year=int(rng.choice([-1, 1970, 1985, 1995, 2005])),
                         categories=cats, text=f"a story about {rng.choice(WORDS)}", available=bool(rng.random() > 0.1),
                         age_rating=int(rng.choice([0, 0, 13, 18]))))
    return pd.DataFrame(rows)


def make_catalog(n: int = 60, seed: int = 0, dim: int | None = 8) -> ItemCatalog:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, dim)).astype(np.float32) if dim else None
    return ItemCatalog.from_items(make_items(n, seed), embeddings=emb)


class ListSource:
    """A source that returns a fixed scored list (tests only)."""

    def __init__(self, name: str, items, scores=None):
        self.name = name
        self.items = np.asarray(items, dtype=np.int64)
        self.scores = np.asarray(scores if scores is not None else -np.arange(len(self.items)), dtype=np.float32)

    def __call__(self, ctx, k: int) -> Candidates:
        return Candidates(self.items[:k], self.scores[:k], np.full(len(self.items[:k]), self.name, dtype=object))




def trained_items(n: int) -> np.ndarray:
    """Stands in for a trained artifact loaded from a run directory (``artifacts:`` in a pipeline YAML)."""
    return np.arange(n, dtype=np.int64)


class ArtifactSource:
    """A source built around an injected artifact (the way ``two_tower_source`` receives ``two_tower``)."""

    name = "artifact"

    def __init__(self, trained_items: np.ndarray):
        self.items = trained_items

    def __call__(self, ctx, k: int) -> Candidates:
        items = self.items[:k]
        return Candidates(items, -np.arange(len(items), dtype=np.float32), np.full(len(items), self.name, dtype=object))
