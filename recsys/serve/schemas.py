"""Typed request/response models of the HTTP API (pydantic v2, strict: unknown fields are rejected).

Ids on the wire are the dataset's external ids as strings (``user_id``,
``item_id``, e.g. MovieLens "196" / "242"); ``item_idx`` is returned beside
them for debugging and offline joins.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

from recsys.core.candidates import Constraints

MAX_K = 100  # the server's own limit comes from config (max_k); this is the schema ceiling


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecommendRequest(_Strict):
    user_id: StrictStr | None = Field(default=None, max_length=128, description="unknown or absent: cold start")
    session_items: list[StrictStr] = Field(default_factory=list, max_length=200, description="item ids of the current session")
    constraints: Constraints | None = None
    query: StrictStr | None = Field(default=None, max_length=1000, description="free text for content retrieval")
    onboarding_categories: list[StrictStr] = Field(default_factory=list, max_length=50)
    k: int = Field(default=10, ge=1, le=MAX_K, strict=True)


class RecommendedItem(_Strict):
    item_id: str
    item_idx: int
    title: str
    score: float
    source: str
    explored: bool = False
    explanation: str | None = None


class StepTrace(_Strict):
    """One source, the merge or one stage of the pipeline call (``recsys.pipeline.trace``)."""

    latency_ms: float
    n_in: int | None = Field(description="rows in (None for a source)")
    n_out: int = Field(description="rows out")
    removed: dict[str, int] = Field(default_factory=dict, description="rows a filter dropped, per rule")
    fallbacks: list[str] = Field(default_factory=list, description="degraded paths taken")
    warnings: list[str] = Field(default_factory=list, description="what the user should be told")
    details: dict[str, Any] = Field(default_factory=dict, description="the stage's own report (e.g. LLM parse failures)")
    llm_tokens: dict[str, int] | None = Field(default=None, description="prompt/generated tokens of an LLM stage")


class Trace(_Strict):
    """What the pipeline did for this request; the pipeline is its only writer."""

    k: int = Field(description="the list length served for (k capped by constraints.max_results)")
    total_ms: float
    sources: dict[str, StepTrace]
    merge: StepTrace | None
    stages: dict[str, StepTrace] = Field(description="in the declared order")
    fallbacks: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


class RecommendResponse(_Strict):
    request_id: str
    user_id: str | None
    cold_start: bool
    items: list[RecommendedItem]
    warnings: list[str] = Field(default_factory=list)
    latency_ms: dict[str, float] = Field(default_factory=dict, description="flat view of trace: step -> ms")
    removed: dict[str, int] = Field(default_factory=dict, description="flat view of trace: rule -> rows removed")
    trace: Trace


class SimilarResponse(_Strict):
    item_id: str
    items: list[RecommendedItem]


EventType = Literal["impression", "click", "rating", "skip", "dwell"]


class FeedbackEvent(_Strict):
    request_id: StrictStr = Field(min_length=1, max_length=64)
    user_id: StrictStr | None = Field(default=None, max_length=128)
    item_id: StrictStr = Field(min_length=1, max_length=128)
    event: EventType
    value: float | None = Field(default=None, description="rating: 1-5 stars; dwell: seconds (>= 0)")

    @model_validator(mode="after")
    def _value_matches_event(self) -> "FeedbackEvent":
        if self.event == "rating" and (self.value is None or not 1.0 <= self.value <= 5.0):
            raise ValueError("a rating event needs value in [1, 5]")
        if self.event == "dwell" and (self.value is None or not 0.0 <= self.value <= 86400.0):
            raise ValueError("a dwell event needs value = seconds in [0, 86400]")
        if self.event in ("impression", "click", "skip") and self.value is not None:
            raise ValueError(f"a {self.event} event takes no value")
        return self


class FeedbackBatch(_Strict):
    events: list[FeedbackEvent] = Field(min_length=1, max_length=500)


class FeedbackAck(_Strict):
    event_ids: list[int]
    acknowledged: bool = True


class ConversationRequest(_Strict):
    session_id: StrictStr = Field(min_length=1, max_length=128)
    message: StrictStr = Field(max_length=2000)
    user_id: StrictStr | None = Field(default=None, max_length=128)
    k: int = Field(default=5, ge=1, le=MAX_K, strict=True)


class ConversationResponse(_Strict):
    session_id: str
    question: str | None = None
    constraints: Constraints | None = None
    recommendation: RecommendResponse | None = None
    notes: list[str] = Field(default_factory=list, description="what the list does not show and why (e.g. the age rule)")
    source: str | None = Field(default=None, description="who read the message: rules, llm, llm+rules or state")
    like_items: list[str] = Field(default_factory=list, description="item ids named as examples (never recommended)")


class Health(_Strict):
    status: Literal["ok"]
    n_items: int
    n_users: int
    sources: list[str]
    stages: list[str]
    feedback_events: int
