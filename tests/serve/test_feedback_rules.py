"""Feedback is accepted only for what was served, once, for the served user (audit findings: forged
feedback, never-served items, duplicate clicks, user_id override, ``value: true``, no rate limit)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest


@pytest.fixture
def served(make_app):
    client, state = make_app(feedback_burst=30, feedback_rate_per_s=0.5)
    body = client.post("/recommend", json={"user_id": "42", "k": 10}).json()
    return client, state, body


def stored(state) -> list:
    return state.store.events_after(0)


def test_forged_request_ids_are_refused(served):
    client, state, body = served
    real = body["request_id"]
    for rid in (uuid.uuid4().hex, real[:-1] + ("1" if real[-1] == "0" else "0"), "x"):
        r = client.post("/feedback", json={"request_id": rid, "item_id": body["items"][0]["item_id"], "event": "skip"})
        assert r.status_code == 404
    assert stored(state) == []


def test_an_item_that_was_not_served_is_refused(served):
    client, state, body = served
    shown = {it["item_id"] for it in body["items"]}
    other = next(i for i in state.recommender.item_ids if i not in shown)
    r = client.post("/feedback", json={"request_id": body["request_id"], "item_id": other, "event": "click"})
    assert r.status_code == 422 and "not served" in r.text
    batch = [{"request_id": body["request_id"], "item_id": body["items"][0]["item_id"], "event": "click"},
             {"request_id": body["request_id"], "item_id": other, "event": "click"}]
    assert client.post("/feedback/batch", json={"events": batch}).status_code == 422
    assert stored(state) == []  # all or nothing


def test_duplicate_clicks_are_stored_and_learned_once(served):
    client, state, body = served
    item = body["items"][-1]
    ev = {"request_id": body["request_id"], "item_id": item["item_id"], "event": "click"}
    acks = [client.post("/feedback", json=ev).json() for _ in range(25)]
    assert {a["event_ids"][0] for a in acks} == {acks[0]["event_ids"][0]}
    assert acks[0]["new"] == [True] and all(a["new"] == [False] for a in acks[1:])
    assert len(stored(state)) == 1
    client.post("/recommend", json={"user_id": "7", "k": 3})  # the worker applies the log before serving
    bandit = state.recommender.pipeline.stages["exploration"].bandit
    assert bandit.alpha[item["item_idx"]] == pytest.approx(1.0 + 1.0)  # prior 1 + one click, not 25
    r = client.post("/feedback/batch", json={"events": [ev, ev, {**ev, "event": "impression"}]}).json()
    assert r["event_ids"][:2] == [acks[0]["event_ids"][0]] * 2 and r["new"] == [False, False, True]


def test_the_user_comes_from_the_served_record_not_the_body(served):
    client, state, body = served
    ev = {"request_id": body["request_id"], "item_id": body["items"][0]["item_id"], "event": "skip"}
    r = client.post("/feedback", json={**ev, "user_id": "1"})  # someone else's skip for user 42's list
    assert r.status_code == 422 and stored(state) == []
    assert client.post("/feedback", json={**ev, "user_id": "42"}).status_code == 200
    assert client.post("/feedback", json={**ev, "event": "impression"}).status_code == 200
    assert [e.user_id for e in stored(state)] == ["42", "42"]
    assert {e.user_idx for e in stored(state)} == {state.recommender.contexts.user_idx("42")}


@pytest.mark.parametrize("value", [True, False, "4", [4], {"v": 4}, None])
def test_value_must_be_a_number(served, value):
    client, state, body = served
    ev = {"request_id": body["request_id"], "item_id": body["items"][0]["item_id"], "event": "rating", "value": value}
    assert client.post("/feedback", json=ev).status_code == 422
    assert client.post("/feedback", json={**ev, "event": "dwell"}).status_code == 422
    assert stored(state) == []


def test_an_integer_rating_is_a_number(served):
    client, state, body = served
    ev = {"request_id": body["request_id"], "item_id": body["items"][0]["item_id"], "event": "rating", "value": 4}
    assert client.post("/feedback", json=ev).status_code == 200 and stored(state)[0].value == 4.0


def test_feedback_is_rate_limited_per_request_id(served):
    client, state, body = served
    items = [it["item_id"] for it in body["items"]]
    events = [{"request_id": body["request_id"], "item_id": i, "event": e} for i in items
              for e in ("impression", "click", "skip", "dwell")]
    events = [{**e, "value": 40.0} if e["event"] == "dwell" else e for e in events]
    codes = [client.post("/feedback", json=e) for e in events]  # 40 events, burst 30
    assert [r.status_code for r in codes[:30]] == [200] * 30
    limited = [r for r in codes[30:] if r.status_code == 429]
    assert limited and int(limited[0].headers["retry-after"]) >= 1
    other = client.post("/recommend", json={"user_id": "43", "k": 2}).json()  # another request id has its own bucket
    ok = client.post("/feedback", json={"request_id": other["request_id"], "item_id": other["items"][0]["item_id"],
                                        "event": "impression"})
    assert ok.status_code == 200


def test_feedback_changes_the_next_list(served):
    client, state, body = served
    skipped = body["items"][0]["item_id"]
    client.post("/feedback", json={"request_id": body["request_id"], "item_id": skipped, "event": "skip"})
    again = client.post("/recommend", json={"user_id": "42", "k": 30}).json()
    assert skipped not in [it["item_id"] for it in again["items"]]


def test_a_restart_replays_the_log(served, make_app):
    client, state, body = served
    item = body["items"][1]
    client.post("/feedback", json={"request_id": body["request_id"], "item_id": item["item_id"], "event": "click"})
    client2, state2 = make_app(store=state.store)  # a new worker over the same store
    assert state2.recommender is not state.recommender
    bandit = state2.recommender.pipeline.stages["exploration"].bandit
    assert bandit.alpha[item["item_idx"]] == pytest.approx(2.0)
    ctx = state2.recommender.contexts.build(state2.recommender.contexts.user_idx("42"))
    assert item["item_idx"] in ctx.history.tolist()
    assert np.isclose(bandit.alpha.sum(), len(bandit.alpha) + 1)


def test_a_store_failure_is_a_503_and_nothing_is_acknowledged(served):
    client, state, body = served
    state.store.close()  # as if the disk or the database went away
    r = client.post("/feedback", json={"request_id": body["request_id"], "item_id": body["items"][0]["item_id"],
                                       "event": "click"})
    assert r.status_code == 503 and "not stored" in r.text
    assert client.post("/recommend", json={"user_id": "42"}).status_code == 503  # no list without its record
