"""The interfaces every part of the pipeline agrees on (structural: no base class to inherit).

    Source  ctx, k           -> Candidates   (a candidate generator: ANN, item-to-item, popularity, ...)
    Stage   ctx, Candidates  -> Candidates   (ranker, filter, diversity, exploration, LLM re-rank, explain)
    Scorer  History          -> (B, N) scores over the whole catalogue (models the evaluator ranks)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from recsys.core.candidates import Candidates, UserContext


@runtime_checkable
class Source(Protocol):
    name: str

    def __call__(self, ctx: "UserContext", k: int) -> "Candidates": ...


@runtime_checkable
class Stage(Protocol):
    def __call__(self, ctx: "UserContext", cands: "Candidates") -> "Candidates": ...


@runtime_checkable
class Scorer(Protocol):
    def score(self, history) -> "torch.Tensor":
        """``history``: a ``recsys.data.history.History`` of B users -> (B, N) scores, higher = better."""
        ...
