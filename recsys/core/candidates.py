"""What flows between pipeline stages: a request's context and its candidate list.

Every stage is a plain object with ``__call__(ctx, cands) -> Candidates``;
the pipeline is their composition. Candidate lists are small (~1,000 at
most), so they are numpy arrays, one row per candidate (K rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator


class Constraints(BaseModel):
    """Structured constraints from the caller or the conversation layer.

    Every field is optional; an empty ``Constraints()`` constrains nothing.
    Validated strictly: unknown fields are rejected.
    """

    model_config = ConfigDict(extra="forbid")

    include_categories: list[str] = Field(default_factory=list, description="keep only items having at least one of these")
    require_categories: list[str] = Field(default_factory=list, description="keep only items having every one of these "
                                          "(a compound genre: 'romantic comedy' = Romance and Comedy)")
    exclude_categories: list[str] = Field(default_factory=list, description="drop items having any of these")
    year_min: int | None = Field(default=None, ge=1800, le=2100)
    year_max: int | None = Field(default=None, ge=1800, le=2100)
    must_have_words: list[str] = Field(default_factory=list, description="each word must appear in title or text")
    exclude_words: list[str] = Field(default_factory=list, description="no word may appear in title or text")
    exclude_items: list[int] = Field(default_factory=list, description="item_idx never to recommend")
    max_results: int | None = Field(default=None, ge=1, le=1000)

    @model_validator(mode="after")
    def _consistent(self) -> "Constraints":
        if self.year_min is not None and self.year_max is not None and self.year_min > self.year_max:
            raise ValueError(f"year_min {self.year_min} > year_max {self.year_max}")
        wanted = set(c.lower() for c in [*self.include_categories, *self.require_categories])
        both = wanted & set(c.lower() for c in self.exclude_categories)
        if both:
            raise ValueError(f"categories both included and excluded: {sorted(both)}")
        return self

    def is_empty(self) -> bool:
        return self == Constraints()


@dataclass
class UserContext:
    """Who the request is for.

    ``user_idx`` is None for a user unknown to the model (cold start).
    ``history`` is the long-term history (item_idx, oldest first),
    ``session`` the short-term one (items of the current session).
    """

    user_idx: int | None = None
    history: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    session: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    demographics: dict = field(default_factory=dict)
    negative_items: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    constraints: Constraints = field(default_factory=Constraints)
    query: str | None = None
    onboarding_categories: list[str] = field(default_factory=list)

    @property
    def is_cold(self) -> bool:
        return self.user_idx is None or (len(self.history) == 0 and len(self.session) == 0)


@dataclass
class Candidates:
    """A candidate list of K items, in the current stage's order (best first).

    items    (K,) int64 item_idx, unique
    scores   (K,) float32, the current order's score (higher is better)
    sources  (K,) str, which candidate source produced each item
    features name -> (K,) array of per-candidate features kept by stages
             (e.g. ``two_tower_score``, ``itemknn_score``, ``rank_score``)
    explanations  one sentence per item once the explanation stage ran
    trace    per-stage accounting: counts removed, latencies (ms), fallbacks
    """

    items: np.ndarray
    scores: np.ndarray
    sources: np.ndarray
    features: dict[str, np.ndarray] = field(default_factory=dict)
    explanations: list[str] | None = None
    trace: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.items = np.asarray(self.items, dtype=np.int64)
        self.scores = np.asarray(self.scores, dtype=np.float32)
        self.sources = np.asarray(self.sources, dtype=object)
        k = len(self.items)
        if len(self.scores) != k or len(self.sources) != k:
            raise ValueError(f"items/scores/sources lengths differ: {k}, {len(self.scores)}, {len(self.sources)}")
        for name, v in self.features.items():
            if len(v) != k:
                raise ValueError(f"feature {name!r} has {len(v)} rows, expected {k}")

    def __len__(self) -> int:
        return len(self.items)

    @classmethod
    def empty(cls) -> "Candidates":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, object))

    def take(self, idx) -> "Candidates":
        """Rows ``idx`` (indices or boolean mask), in that order; trace is shared."""
        idx = np.asarray(idx)
        ex = None if self.explanations is None else [self.explanations[i] for i in (np.flatnonzero(idx) if idx.dtype == bool else idx)]
        return Candidates(
            self.items[idx], self.scores[idx], self.sources[idx],
            {k: v[idx] for k, v in self.features.items()}, ex, self.trace,
        )

    def sorted(self) -> "Candidates":
        """Sorted by score, best first (stable, so ties keep their order)."""
        return self.take(np.argsort(-self.scores, kind="stable"))

    def head(self, k: int) -> "Candidates":
        return self.take(np.arange(min(k, len(self))))

    def with_scores(self, scores: np.ndarray, feature: str | None = None) -> "Candidates":
        """Same rows with new scores (kept also as ``features[feature]`` if named)."""
        feats = dict(self.features)
        if feature:
            feats[feature] = np.asarray(scores, dtype=np.float32)
        return Candidates(self.items, scores, self.sources, feats, self.explanations, self.trace)
