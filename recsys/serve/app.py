"""The HTTP service: recommend, similar items, conversation turn, feedback, health.

    POST /recommend               RecommendRequest  -> RecommendResponse (with a request_id)
    GET  /items/{item_id}/similar?k=10              -> SimilarResponse
    POST /conversation            ConversationRequest -> a clarifying question, or constraints + items
    POST /feedback                FeedbackEvent     -> FeedbackAck (after the event is durable)
    POST /feedback/batch          FeedbackBatch     -> FeedbackAck (one transaction)
    GET  /health                                    -> Health

Errors: malformed JSON, wrong types, unknown fields, k out of range -> 422
with pydantic's message; an unknown item or request id -> 404; an unknown
user is not an error: it takes the cold-start path (``cold_start: true``).
Unknown session item ids are ignored and reported in ``warnings``.

Feedback is applied online after it is durable: the exploration bandit
learns (click 1, impression/skip 0, rating >= 4 is 1, dwell >= 30 s is 1)
and the user's live profile updates (a click or rating is consumed, a skip or
a rating <= ``negative_threshold`` is never shown again). Retraining is the
refresh job's work (``recsys.serve.refresh``).
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass

import numpy as np
from fastapi import FastAPI, HTTPException, Query

from recsys.core.candidates import Candidates
from recsys.pipeline.context import event_polarity
from recsys.pipeline.filters import shortfall
from recsys.serve.feedback_store import Event, FeedbackStore
from recsys.serve.schemas import (ConversationRequest, ConversationResponse, FeedbackAck, FeedbackBatch, FeedbackEvent,
                                  Health, RecommendedItem, RecommendRequest, RecommendResponse, SimilarResponse, Trace)

log = logging.getLogger(__name__)


@dataclass
class ServeState:
    """What the app serves from: a ``Recommender``, the feedback store, an optional conversation parser."""

    recommender: object
    store: FeedbackStore
    conversation: object | None = None
    max_k: int = 100
    negative_threshold: float = 2.0
    dwell_click_s: float = 30.0

    def __post_init__(self) -> None:
        # the bandit's RNG and the live profiles are not thread-safe; a request holds this briefly
        self.lock = threading.Lock()


def _reward_and_polarity(ev: FeedbackEvent, negative_threshold: float, dwell_click_s: float) -> tuple[float, bool | None]:
    """-> (bandit reward in {0, 1}, profile effect: True consumed, False disliked, None nothing)."""
    polarity = event_polarity(ev.event, ev.value, negative_threshold)  # the one definition, shared with replay
    if ev.event == "click":
        return 1.0, polarity
    if ev.event == "rating":
        return float(ev.value >= 4.0), polarity
    if ev.event == "dwell":
        return float(ev.value >= dwell_click_s), polarity
    return 0.0, polarity  # impression, skip


def create_app(state: ServeState) -> FastAPI:
    app = FastAPI(title="recsys", version="0.1.0", description="Multi-stage recommender with LLM re-ranking")
    rec = state.recommender

    def _items(cands: Candidates) -> list[RecommendedItem]:
        explored = cands.features.get("explored")
        return [RecommendedItem(item_id=rec.item_ids[i], item_idx=int(i), title=rec.catalog.title_of(int(i)),
                                score=float(s) if np.isfinite(s) else 0.0, source=str(src),
                                explored=bool(explored[j]) if explored is not None else False,
                                explanation=cands.explanations[j] if cands.explanations else None)
                for j, (i, s, src) in enumerate(zip(cands.items.tolist(), cands.scores, cands.sources))]

    def _recommend(req: RecommendRequest, constraints=None) -> RecommendResponse:
        if req.k > state.max_k:
            raise HTTPException(422, f"k={req.k} exceeds this server's max_k={state.max_k}")
        warnings = []
        user_idx = rec.contexts.user_idx(req.user_id) if req.user_id is not None else None
        if req.user_id is not None and user_idx is None:
            warnings.append(f"unknown user_id {req.user_id!r}: cold-start recommendations")
        session, unknown = [], []
        for iid in req.session_items:
            j = rec.item_idx(iid)
            (unknown.append(iid) if j is None else session.append(j))
        if unknown:
            warnings.append(f"ignored unknown session item ids: {unknown[:10]}")
        with state.lock:
            cands, ctx = rec.recommend(user_idx, k=req.k, session=session, constraints=constraints or req.constraints,
                                       query=req.query, onboarding_categories=req.onboarding_categories,
                                       user_id=req.user_id)
        request_id = uuid.uuid4().hex
        state.store.log_request(request_id, req.user_id, user_idx, cands.items)
        trace = cands.trace  # written by the pipeline alone (recsys.pipeline.trace)
        return RecommendResponse(
            request_id=request_id, user_id=req.user_id, cold_start=ctx.is_cold, items=_items(cands),
            warnings=warnings + trace["warnings"],
            latency_ms={k: round(v, 3) for k, v in trace["latency_ms"].items()}, removed=trace["removed"],
            trace=Trace.model_validate({k: trace[k] for k in Trace.model_fields}))

    @app.get("/health", response_model=Health)
    def health() -> Health:
        return Health(status="ok", n_items=len(rec.catalog), n_users=rec.contexts.n_users,
                      sources=list(rec.pipeline.sources), stages=list(rec.pipeline.stages),
                      feedback_events=state.store.count())

    @app.post("/recommend", response_model=RecommendResponse)
    def recommend(req: RecommendRequest) -> RecommendResponse:
        return _recommend(req)

    @app.get("/items/{item_id}/similar", response_model=SimilarResponse)
    def similar(item_id: str, k: int = Query(10, ge=1, le=100)) -> SimilarResponse:
        j = rec.item_idx(item_id)
        if j is None:
            raise HTTPException(404, f"unknown item_id {item_id!r}")
        items, scores = rec.similar(j, k)
        cands = Candidates(items, scores, np.full(len(items), "similar", dtype=object))
        return SimilarResponse(item_id=item_id, items=_items(cands))

    @app.post("/conversation", response_model=ConversationResponse)
    def conversation(req: ConversationRequest) -> ConversationResponse:
        if state.conversation is None:
            raise HTTPException(503, "conversation is not configured on this server (llm.conversation)")
        turn = state.conversation.turn(req.session_id, req.message)
        if turn.question is not None or turn.constraints is None:
            return ConversationResponse(session_id=req.session_id, question=turn.question or "What are you looking for?")
        # titles named as examples ("like Fargo") are the session: they seed the sources and are never returned
        like = [rec.item_ids[i] for i in turn.like_items]
        rr = RecommendRequest(user_id=req.user_id, k=req.k, session_items=like)
        resp = _recommend(rr, constraints=turn.constraints)
        user_idx = rec.contexts.user_idx(req.user_id) if req.user_id is not None else None
        ctx = rec.contexts.build(user_idx, [rec.item_idx(i) for i in like], turn.constraints, user_id=req.user_id)
        question, notes = shortfall(rec.catalog, rec.pipeline.stages.values(), ctx, len(resp.items))
        return ConversationResponse(session_id=req.session_id, constraints=turn.constraints, recommendation=resp,
                                    question=question, notes=notes, source=turn.source, like_items=like)

    def _to_event(ev: FeedbackEvent) -> tuple[Event, int | None]:
        served = state.store.request(ev.request_id)
        if served is None:
            raise HTTPException(404, f"unknown request_id {ev.request_id!r}")
        j = rec.item_idx(ev.item_id)
        if j is None:
            raise HTTPException(404, f"unknown item_id {ev.item_id!r}")
        user_idx = served["user_idx"]
        return Event(ev.request_id, ev.user_id or served["user_id"], user_idx, j, ev.event, ev.value), user_idx

    def _apply_online(events: list[FeedbackEvent], rows: list[tuple[Event, int | None]]) -> None:
        with state.lock:
            for ev, (row, user_idx) in zip(events, rows):
                reward, polarity = _reward_and_polarity(ev, state.negative_threshold, state.dwell_click_s)
                rec.observe(user_idx, [row.item_idx], [reward], [polarity], user_id=row.user_id)

    @app.post("/feedback", response_model=FeedbackAck)
    def feedback(ev: FeedbackEvent) -> FeedbackAck:
        row = _to_event(ev)
        ids = state.store.append_many([row[0]])  # returns after COMMIT: the ack means durable
        _apply_online([ev], [row])
        return FeedbackAck(event_ids=ids)

    @app.post("/feedback/batch", response_model=FeedbackAck)
    def feedback_batch(batch: FeedbackBatch) -> FeedbackAck:
        rows = [_to_event(ev) for ev in batch.events]  # validate all before writing any
        ids = state.store.append_many([r[0] for r in rows])
        _apply_online(batch.events, rows)
        return FeedbackAck(event_ids=ids)

    return app


def build_state(cfg, **objects) -> ServeState:
    """The recommender of ``configs/serve.yaml`` (``build_recommender``; ``objects`` are passed on to it), its
    conversation parser (same LLM backend) and the feedback store."""
    from recsys.llm.factory import build_conversation
    from recsys.pipeline.build import build_recommender

    from recsys.llm.conversation import title_index

    rec = build_recommender(cfg, **objects)
    conversation = build_conversation(cfg.get("llm"), categories=rec.catalog.categories,
                                      titles=title_index(rec.catalog.titles, rec.catalog.popularity), **rec.objects)
    store = FeedbackStore(cfg.feedback_db)
    # live profiles are in memory: replay the stored feedback so acknowledged events still count after a restart
    replayed = rec.contexts.live.replay(store.events())
    log.info("serving %d items, pipeline %s, stages %s, feedback at %s (%d events replayed into live profiles)",
             len(rec.catalog), rec.info["pipeline"], list(rec.pipeline.stages), cfg.feedback_db, replayed)
    return ServeState(rec, store, conversation, max_k=int(cfg.max_k), negative_threshold=float(cfg.negative_threshold))
