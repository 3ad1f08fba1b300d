"""The HTTP service: recommend, similar items, conversation turn, feedback, health.

    POST /recommend               RecommendRequest  -> RecommendResponse (with a request_id)
    GET  /items/{item_id}/similar?k=10              -> SimilarResponse
    POST /conversation            ConversationRequest -> a clarifying question, or constraints + items
    POST /feedback                FeedbackEvent     -> FeedbackAck (after the event is durable)
    POST /feedback/batch          FeedbackBatch     -> FeedbackAck (one transaction)
    GET  /health                                    -> Health

Errors: malformed JSON (valid UTF-8 that is not JSON: ``json_invalid`` at its byte position),
wrong types, unknown fields, k out of range, an item_idx outside the catalogue -> 422; a
body that is not UTF-8 -> 400 "There was an error parsing the body" (FastAPI's); a body over
``max_body_bytes`` -> 413;
not exactly one Host header, or one outside ``allowed_hosts`` -> 400
(``recsys.serve.limits``); an unknown item or request id -> 404. Every error
body and log line names the field (or its position) and the problem, never
the caller's text (``recsys.serve.errors``); a genre the catalogue does not have (in ``constraints`` or
``onboarding_categories``) -> 422 naming its location and the valid genres
(``recsys.pipeline.filters.check_categories``, in ``Recommender.recommend``, so
/recommend and /conversation share it); an unknown user is not an error: it takes the cold-start path
(``cold_start: true``). Unknown session item ids are ignored and reported in
``warnings``.

Feedback (``recsys.serve.feedback_api``) is accepted only for served items,
once per (request, item, event), and applied by every worker from the store's
log (``recsys.serve.shared``): the exploration bandit learns (click 1,
impression/skip 0, rating >= 4 is 1, dwell >= 30 s is 1) and the user's live
profile updates (a click or rating is consumed, a skip or a rating <=
``negative_threshold`` is never shown again). Retraining is the refresh job's
work (``recsys.serve.refresh``).
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field

import numpy as np
from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from recsys.core.candidates import Candidates
from recsys.pipeline.filters import UnknownCategoryError, shortfall
from recsys.serve.feedback_api import RateLimiter, ServedRequests, feedback_router
from recsys.serve.limits import LOOPBACK_HOSTS, install_limits
from recsys.serve.schemas import (ConversationRequest, ConversationResponse, Health, RecommendedItem, RecommendRequest,
                                  RecommendResponse, SimilarResponse, Trace)
from recsys.serve.sessions import SessionsUnavailable, StoreSessions
from recsys.serve.shared import SharedState, observe_events, serialize_learning_stages
from recsys.serve.stores import Store, open_store

log = logging.getLogger(__name__)


@dataclass
class ServeState:
    """What the app serves from: a ``Recommender``, the feedback store, an optional conversation parser,
    and the limits of ``configs/serve.yaml`` (``serve_options``)."""

    recommender: object
    store: Store
    conversation: object | None = None
    max_k: int = 100
    negative_threshold: float = 2.0
    dwell_click_s: float = 30.0
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    max_body_bytes: int = 262_144
    max_staleness_s: float = 0.05
    feedback_rate_per_s: float = 20.0
    feedback_burst: int = 200
    # run /recommend's work on the event loop (True) or in a thread (False); None: on the loop unless a
    # stage of the pipeline holds an LLM backend (``_calls_llm``). Without an LLM a request is ~3 ms of
    # GIL-bound Python, and a thread per request only adds hand-offs and GIL contention (server CPU per
    # loop 7.9 -> 6.1 ms: experiments/benchmarks.md); an LLM call takes seconds and must not stall the loop.
    inline: bool | None = None
    # made by the first create_app over this state: one fold of the store per recommender
    shared: SharedState | None = field(default=None, init=False, repr=False)
    served: ServedRequests | None = field(default=None, init=False, repr=False)


def serve_options(cfg) -> dict:
    """The ``ServeState`` limits from a composed ``configs/serve.yaml``."""
    fb = cfg.get("feedback") or {}
    return dict(allowed_hosts=tuple(str(h) for h in cfg.allowed_hosts), max_body_bytes=int(cfg.max_body_bytes),
                max_staleness_s=float(cfg.shared_state_staleness_s),
                feedback_rate_per_s=float(fb.get("rate_per_s", 20.0)), feedback_burst=int(fb.get("burst", 200)))


def create_app(state: ServeState) -> FastAPI:
    """The FastAPI app over ``state``; replays the store's event log into the recommender before returning."""
    app = FastAPI(title="recsys", version="0.1.0", description="Multi-stage recommender with LLM re-ranking")
    install_limits(app, allowed_hosts=state.allowed_hosts, max_body_bytes=state.max_body_bytes)
    rec = state.recommender
    if state.shared is None:
        serialize_learning_stages(rec.pipeline, threading.Lock())
        state.shared = SharedState(state.store, observe_events(rec, state.negative_threshold, state.dwell_click_s),
                                   max_staleness_s=state.max_staleness_s)
        replayed = state.shared.catch_up()  # the whole log at start-up: acknowledged feedback survives a restart
        log.info("replayed %d stored feedback events", replayed)
        state.served = ServedRequests(state.store)
    shared, served = state.shared, state.served
    app.include_router(feedback_router(rec, served, RateLimiter(state.feedback_rate_per_s, state.feedback_burst)))

    @app.exception_handler(UnknownCategoryError)
    async def unknown_genre(_request: Request, exc: UnknownCategoryError) -> JSONResponse:
        # the locations and the catalogue's own vocabulary only: the client's text is not echoed
        return JSONResponse({"detail": str(exc), "loc": exc.fields[:8], "valid_genres": exc.valid}, 422)

    def _items(cands: Candidates) -> list[RecommendedItem]:
        explored = cands.features.get("explored")
        return [RecommendedItem(item_id=rec.item_ids[i], item_idx=int(i), title=rec.catalog.title_of(int(i)),
                                score=float(s) if np.isfinite(s) else 0.0, source=str(src),
                                explored=bool(explored[j]) if explored is not None else False,
                                explanation=cands.explanations[j] if cands.explanations else None)
                for j, (i, s, src) in enumerate(zip(cands.items.tolist(), cands.scores, cands.sources))]

    def _recommend(req: RecommendRequest, constraints=None) -> RecommendResponse:
        """Serve one list; returns once its record is committed (a thread's entry point: /conversation)."""
        resp, record = _serve_list(req, constraints)
        served.log(*record)
        return resp

    def _serve_list(req: RecommendRequest, constraints=None) -> tuple[RecommendResponse, tuple]:
        """-> (the response, its served-list record for ``served.log``): the request's work, no store write."""
        if req.k > state.max_k:
            raise HTTPException(422, f"k: more than this server's max_k={state.max_k}")
        if constraints is None and req.constraints is not None:
            constraints = req.constraints.core()
            if constraints.exclude_items and max(constraints.exclude_items) >= len(rec.catalog):
                raise HTTPException(422, f"constraints.exclude_items: item_idx must be < {len(rec.catalog)}")
        warnings = []
        user_idx = rec.contexts.user_idx(req.user_id) if req.user_id is not None else None
        session, unknown = [], []
        for pos, iid in enumerate(req.session_items):
            j = rec.item_idx(iid)
            (unknown.append(pos) if j is None else session.append(j))
        if unknown:  # by position: a warning never repeats the caller's text
            warnings.append(f"ignored unknown item ids at session_items{unknown[:10]}"
                            + (f" (+{len(unknown) - 10} more)" if len(unknown) > 10 else ""))
        shared.fresh()  # no lock: request-local work runs beside other requests (recsys.serve.shared)
        cands, ctx = rec.recommend(user_idx, k=req.k, session=session, constraints=constraints,
                                   query=req.query, onboarding_categories=req.onboarding_categories,
                                   user_id=req.user_id, demographics=None if req.age is None else {"age": req.age})
        # an unknown user with live feedback (a new user who rated or clicked) is served from it: not cold start
        cold = ctx.user_idx is None and len(ctx.history) == 0  # (the contract: a session alone is still cold)
        if req.user_id is not None and user_idx is None:
            warnings.insert(0, "unknown user_id: cold-start recommendations" if cold else
                            "unknown user_id: recommendations from this user's live feedback")
        request_id = uuid.uuid4().hex
        trace = cands.trace  # written by the pipeline alone (recsys.pipeline.trace)
        resp = RecommendResponse(
            request_id=request_id, user_id=req.user_id, cold_start=cold, items=_items(cands),
            warnings=warnings + trace["warnings"],
            latency_ms={k: round(v, 3) for k, v in trace["latency_ms"].items()}, removed=trace["removed"],
            trace=Trace.model_validate({k: trace[k] for k in Trace.model_fields}))
        return resp, (request_id, req.user_id, user_idx, cands.items)

    @app.get("/health", response_model=Health)
    def health() -> Health:
        return Health(status="ok", n_items=len(rec.catalog), n_users=rec.contexts.n_users,
                      sources=list(rec.pipeline.sources), stages=list(rec.pipeline.stages),
                      feedback_events=state.store.count())

    inline = state.inline if state.inline is not None else not _calls_llm(rec.pipeline)

    @app.post("/recommend", response_model=RecommendResponse)
    async def recommend(req: RecommendRequest) -> RecommendResponse:
        resp, record = _serve_list(req) if inline else await run_in_threadpool(_serve_list, req)
        await served.log_async(*record)  # the list is returned only once its record is committed
        return resp

    @app.get("/items/{item_id}/similar", response_model=SimilarResponse)
    def similar(item_id: str = Path(max_length=128), k: int = Query(10, ge=1, le=100)) -> SimilarResponse:
        j = rec.item_idx(item_id)
        if j is None:
            raise HTTPException(404, "item_id: not found in the catalogue")
        items, scores = rec.similar(j, k)
        cands = Candidates(items, scores, np.full(len(items), "similar", dtype=object))
        return SimilarResponse(item_id=item_id, items=_items(cands))

    @app.post("/conversation", response_model=ConversationResponse)
    def conversation(req: ConversationRequest) -> ConversationResponse:
        if state.conversation is None:
            raise HTTPException(503, "conversation is not configured on this server (llm.conversation)")
        try:
            turn = state.conversation.turn(req.session_id, req.message, age=req.age)
        except SessionsUnavailable as e:
            log.error("conversation turn failed: %s", e)
            raise HTTPException(503, "the session store is unavailable; retry the turn") from None
        if turn.question is not None or turn.constraints is None:
            return ConversationResponse(session_id=req.session_id, question=turn.question or "What are you looking for?",
                                        notes=turn.notes, source=turn.source)
        # titles named as examples ("like Fargo") are the session: they seed the sources and are never returned
        like = [rec.item_ids[i] for i in turn.like_items]
        rr = RecommendRequest(user_id=req.user_id, k=req.k, session_items=like, age=turn.age)
        resp = _recommend(rr, constraints=turn.constraints)
        user_idx = rec.contexts.user_idx(req.user_id) if req.user_id is not None else None
        ctx = rec.contexts.build(user_idx, list(turn.like_items), turn.constraints, user_id=req.user_id,
                                 demographics=None if turn.age is None else {"age": turn.age})
        question, notes, pending = shortfall(rec.catalog, rec.pipeline.stages.values(), ctx, len(resp.items),
                                             resp.trace.k)
        # what "the second one" means next turn, and what "drop it" answers
        try:
            state.conversation.shown(req.session_id, [it.item_idx for it in resp.items], pending)
        except SessionsUnavailable as e:
            log.error("conversation turn not recorded: %s", e)
            raise HTTPException(503, "the session store is unavailable; retry the turn") from None
        return ConversationResponse(session_id=req.session_id, constraints=turn.constraints, recommendation=resp,
                                    question=question, notes=turn.notes + notes, source=turn.source, like_items=like)

    return app


def _calls_llm(pipeline) -> bool:
    """Whether a source or stage of ``pipeline`` holds an LLM backend (the re-rank, LLM explanations)."""
    parts = [*pipeline.sources.values(), *pipeline.stages.values()]
    return any(getattr(p, "backend", None) is not None for p in parts)


def build_state(cfg, **objects) -> ServeState:
    """The recommender of ``configs/serve.yaml`` (``build_recommender``; ``objects`` are passed on to it), the
    feedback store, and the conversation parser (same LLM backend; its sessions in the store)."""
    from recsys.llm.factory import build_conversation
    from recsys.pipeline.build import build_recommender

    from recsys.llm.conversation import title_index

    rec = build_recommender(cfg, **objects)
    store = open_store(cfg.feedback_db, **(cfg.get("store") or {}))
    # conversation sessions live in the store too: any worker can take any turn (recsys.serve.sessions)
    conversation = build_conversation(cfg.get("llm"), categories=rec.catalog.categories, sessions=StoreSessions(store),
                                      titles=title_index(rec.catalog.titles, rec.catalog.popularity), **rec.objects)
    # the stored feedback is replayed into the bandit and the live profiles by create_app (recsys.serve.shared)
    log.info("serving %d items, pipeline %s, stages %s, feedback at %s", len(rec.catalog), rec.info["pipeline"],
             list(rec.pipeline.stages), cfg.feedback_db)
    return ServeState(rec, store, conversation, max_k=int(cfg.max_k), negative_threshold=float(cfg.negative_threshold),
                      **serve_options(cfg))
