"""Item attributes that pipeline stages read, as flat numpy arrays.

Stages run per request on ~1,000 candidates, so they must not touch pandas:
the items table (``recsys.data.schema``) is converted once, at start-up, into
arrays indexed by ``item_idx`` (N = catalogue size):

    available    (N,)  bool
    age_rating   (N,)  int16, minimum viewer age (0 = everyone)
    year         (N,)  int32, -1 unknown
    cat_offsets  (N+1,) int64 CSR offsets into cat_ids
    cat_ids      (nnz,) int32 index into ``categories`` (the vocabulary)
    text         list[str] of N lower-cased "title text" strings (built lazily)
    embeddings   (N, D) float32, L2-normalised, or None (for MMR, exploration)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass
class ItemCatalog:
    available: np.ndarray
    age_rating: np.ndarray
    year: np.ndarray
    cat_offsets: np.ndarray
    cat_ids: np.ndarray
    categories: list[str]
    titles: list[str] | None = None
    texts: list[str] | None = None
    embeddings: np.ndarray | None = None
    popularity: np.ndarray | None = None
    _lower: list[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = len(self.available)
        for name in ("age_rating", "year"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"ItemCatalog.{name} has {len(getattr(self, name))} rows, expected {n}")
        if len(self.cat_offsets) != n + 1:
            raise ValueError(f"ItemCatalog.cat_offsets has {len(self.cat_offsets)} rows, expected {n + 1}")
        if self.embeddings is not None:
            if self.embeddings.shape[0] != n:
                raise ValueError(f"ItemCatalog.embeddings has {self.embeddings.shape[0]} rows, expected {n}")
            norms = np.linalg.norm(self.embeddings, axis=1, keepdims=True)
            self.embeddings = (self.embeddings / np.maximum(norms, 1e-12)).astype(np.float32)
        self._cat_index = {c.lower(): i for i, c in enumerate(self.categories)}

    def __len__(self) -> int:
        return len(self.available)

    # ---- lookups used by stages -------------------------------------------------
    def category_ids(self, item: int) -> np.ndarray:
        return self.cat_ids[self.cat_offsets[item] : self.cat_offsets[item + 1]]

    def category_names(self, item: int) -> list[str]:
        return [self.categories[c] for c in self.category_ids(item)]

    def category_id(self, name: str) -> int | None:
        """Vocabulary index of a category name (case-insensitive), None when unknown."""
        return self._cat_index.get(name.lower())

    def has_any_category(self, items: np.ndarray, cat_ids: list[int]) -> np.ndarray:
        """(K,) bool: item has at least one of ``cat_ids``."""
        if not cat_ids:
            return np.zeros(len(items), dtype=bool)
        wanted = np.zeros(len(self.categories), dtype=bool)
        wanted[cat_ids] = True
        starts, ends = self.cat_offsets[items], self.cat_offsets[items + 1]
        out = np.zeros(len(items), dtype=bool)
        for j, (s, e) in enumerate(zip(starts, ends)):
            out[j] = wanted[self.cat_ids[s:e]].any()
        return out

    def text_of(self, item: int) -> str:
        """Lower-cased title + text, what word constraints match against."""
        if self._lower is None:
            titles = self.titles or [""] * len(self)
            texts = self.texts or [""] * len(self)
            self._lower = [f"{t} {x}".lower() for t, x in zip(titles, texts)]
        return self._lower[item]

    def title_of(self, item: int) -> str:
        return self.titles[item] if self.titles else f"item {item}"

    # ---- construction ---------------------------------------------------------------
    @classmethod
    def from_items(cls, items: pd.DataFrame, embeddings: np.ndarray | None = None,
                   popularity: np.ndarray | None = None) -> "ItemCatalog":
        """Build from the canonical items table (rows in any order, ``item_idx`` contiguous)."""
        missing = {"item_idx", "categories", "available", "age_rating"} - set(items.columns)
        if missing:
            raise ValueError(f"items table lacks columns {sorted(missing)}")
        items = items.sort_values("item_idx")
        idx = items["item_idx"].to_numpy()
        if not np.array_equal(idx, np.arange(len(items))):
            raise ValueError("items table: item_idx must be contiguous from 0")
        vocab: dict[str, int] = {}
        lengths = np.zeros(len(items), dtype=np.int64)
        flat: list[int] = []
        for j, cats in enumerate(items["categories"]):
            cats = [] if cats is None else list(cats)
            lengths[j] = len(cats)
            flat.extend(vocab.setdefault(str(c), len(vocab)) for c in cats)
        offsets = np.zeros(len(items) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(lengths)
        year = items["year"].to_numpy(np.int32) if "year" in items else np.full(len(items), -1, np.int32)
        return cls(
            available=items["available"].to_numpy(bool),
            age_rating=items["age_rating"].to_numpy(np.int16),
            year=year,
            cat_offsets=offsets,
            cat_ids=np.asarray(flat, dtype=np.int32),
            categories=list(vocab),
            titles=items["title"].astype(str).tolist() if "title" in items else None,
            texts=items["text"].astype(str).tolist() if "text" in items else None,
            embeddings=embeddings,
            popularity=popularity,
        )
