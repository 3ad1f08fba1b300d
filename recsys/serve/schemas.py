"""Typed request/response models of the HTTP API (pydantic v2, strict: unknown fields are rejected).

Ids on the wire are the dataset's external ids as strings (``user_id``,
``item_id``, e.g. MovieLens "196" / "242"); ``item_idx`` is returned beside
them for debugging and offline joins.

Every list and string a client sends is bounded here (``max_length``), item
indices are bounded (the server checks them against its catalogue too),
numbers are strict (``true`` is not a number) and finite, ids hold no control
characters and free text no NUL (PostgreSQL cannot store one); together with
the body-size limit (``recsys.serve.limits``) this bounds the work any one
request can cause. ``tests/serve/test_limits.py`` walks the OpenAPI schema and
fails on a request field without a bound.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from recsys.core.candidates import Constraints

MAX_K = 100  # the server's own limit comes from config (max_k); this is the schema ceiling
MAX_ITEM_IDX = 2**31 - 1  # schema ceiling of an item_idx; the server answers 422 past its own catalogue

_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
Id = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=128, pattern=_PRINTABLE)]
Name = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=64, pattern=_PRINTABLE)]
ItemIdx = Annotated[int, Field(strict=True, ge=0, le=MAX_ITEM_IDX)]


def text(max_length: int) -> type:
    """Free text of at most ``max_length`` characters, without NUL."""
    return Annotated[str, StringConstraints(strict=True, max_length=max_length, pattern=r"^[^\x00]*$")]


def _bounded(field: str, max_length: int):
    """A ``Constraints`` list field with its description, bounded for requests."""
    return Field(default_factory=list, max_length=max_length, description=Constraints.model_fields[field].description)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestConstraints(Constraints):
    """``Constraints`` as a client may send them: the same fields and rules, every list bounded.

    ``core()`` gives the plain ``Constraints`` the pipeline takes.
    """

    include_categories: list[Name] = _bounded("include_categories", 50)
    require_categories: list[Name] = _bounded("require_categories", 50)
    exclude_categories: list[Name] = _bounded("exclude_categories", 50)
    must_have_words: list[Name] = _bounded("must_have_words", 20)
    exclude_words: list[Name] = _bounded("exclude_words", 20)
    exclude_items: list[ItemIdx] = _bounded("exclude_items", 1000)
    year_min: int | None = Field(default=None, ge=1800, le=2100, strict=True)
    year_max: int | None = Field(default=None, ge=1800, le=2100, strict=True)
    max_results: int | None = Field(default=None, ge=1, le=1000, strict=True)

    @model_validator(mode="after")
    def _consistent(self) -> "RequestConstraints":
        """``Constraints``' rule (this method replaces it, by name), with messages by field position only."""
        if self.year_min is not None and self.year_max is not None and self.year_min > self.year_max:
            raise ValueError("year_min is greater than year_max")
        wanted = {c.lower() for c in [*self.include_categories, *self.require_categories]}
        clash = [j for j, c in enumerate(self.exclude_categories) if c.lower() in wanted]
        if clash:
            raise ValueError(f"exclude_categories{clash[:8]} also included (include_ or require_categories)")
        return self

    def core(self) -> Constraints:
        return Constraints(**self.model_dump())


class RecommendRequest(_Strict):
    user_id: Annotated[str, StringConstraints(strict=True, max_length=128, pattern=_PRINTABLE)] | None = Field(
        default=None, description="unknown or absent: cold start")
    session_items: list[Id] = Field(default_factory=list, max_length=200, description="item ids of the current session")
    constraints: RequestConstraints | None = None
    query: text(1000) | None = Field(default=None, description="free text for content retrieval")
    onboarding_categories: list[Name] = Field(default_factory=list, max_length=50)
    age: int | None = Field(default=None, ge=0, le=120, strict=True,
                            description="the user's age, for the age rule (known users: the users table's)")
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
    """Feedback on one item of a served list; the user is the one the list was served to."""

    request_id: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=64, pattern=_PRINTABLE)]
    user_id: Id | None = Field(default=None, description="optional; must equal the served request's user_id")
    item_id: Id
    event: EventType
    value: float | None = Field(default=None, strict=True, allow_inf_nan=False,
                                description="rating: 1-5 stars; dwell: seconds (>= 0); a JSON number, not a boolean")

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
    """Sent after the commit that made the events durable."""

    event_ids: list[int]
    new: list[bool] = Field(default_factory=list, description="False where the (request, item, event) was stored "
                            "already: a retry or a duplicate, acknowledged with the stored event's id")
    notes: list[str] = Field(default_factory=list, description="a repeat that sent another value than the stored "
                             "one: the first value stands (events are never updated)")
    acknowledged: bool = True


class ConversationRequest(_Strict):
    session_id: Id
    message: text(2000)
    user_id: Id | None = None
    age: int | None = Field(default=None, ge=0, le=120, strict=True,
                            description="the user's age for the age rule (or say it: 'I am 30'); kept for the session")
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
