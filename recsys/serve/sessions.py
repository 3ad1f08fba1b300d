"""Conversation sessions in the feedback store, so that any worker can take any turn of a conversation.

``ConversationParser(sessions=StoreSessions(store))`` (``build_state`` wires it):
a turn reads its session's state from the store (``Store.session``) and writes
the new state back (``Store.submit_session``) before the reply is sent, so the
next turn sees it whichever worker, or host, takes it. State on the wire: JSON
``{"constraints": <Constraints fields>, "like": [item_idx, ...], "shown": [item_idx, ...], "pending": str | null,
"age": int | null}`` (``recsys.llm.conversation.SessionState``; the last three may be absent in older states).

Bounds (``configs/serve.yaml`` ``store:``): a session not written for
``session_ttl_s`` is expired (never read again), and the store keeps the
``max_sessions`` most recent ones (see ``recsys.serve.stores.base``).

Two turns of one session sent at the same time are not merged with each other:
each refines the state it read, and the later write wins (a client waits for a
reply before sending the next turn).
"""

from __future__ import annotations

import json
import logging

from pydantic import ValidationError

from recsys.core.candidates import Constraints
from recsys.llm.conversation import SessionState
from recsys.serve.stores import Store

log = logging.getLogger(__name__)


class SessionsUnavailable(RuntimeError):
    """The store could not read or write a session (the server answers 503: retry the turn)."""


class StoreSessions:
    """The ``recsys.llm.conversation.Sessions`` interface over a feedback ``Store`` (shared by every worker)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, session_id: str) -> SessionState | None:
        try:
            text = self.store.session(session_id)
        except Exception as e:
            raise SessionsUnavailable(f"session not read: {type(e).__name__}") from e
        if text is None:
            return None
        try:
            state = json.loads(text)
            age = state.get("age")
            return SessionState(Constraints(**state["constraints"]), [int(i) for i in state["like"]],
                                [int(i) for i in state.get("shown", [])], state.get("pending"),
                                None if age is None else int(age))
        except (ValueError, KeyError, TypeError, ValidationError) as e:  # written by another version: start afresh
            log.warning("conversation session state unreadable (%s): starting afresh", type(e).__name__)
            return None

    def put(self, session_id: str, state: SessionState) -> None:
        self._write(session_id, json.dumps({"constraints": state.constraints.model_dump(),
                                            "like": [int(i) for i in state.like], "shown": [int(i) for i in state.shown],
                                            "pending": state.pending, "age": state.age}))

    def drop(self, session_id: str) -> None:
        self._write(session_id, None)

    def _write(self, session_id: str, state: str | None) -> None:
        try:
            self.store.submit_session(session_id, state).result()  # committed: visible to every worker
        except Exception as e:
            raise SessionsUnavailable(f"session not written: {type(e).__name__}") from e
