"""A batch takes one rate-limit token per event; a repeated event with another value says the first one stands.

Over HTTP (TestClient) against the app built from the composed serve config (``feedback.burst`` 200,
the default, and a slow refill so that the test does not race the clock). Before: one
``/feedback/batch`` of 500 events on a fresh request id was accepted in full (2.5x the burst), and
a re-rating was acknowledged as the old event with nothing saying its value was ignored.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from recsys.pipeline.build import compose_serve

EVENTS = [("impression", None), ("click", None), ("skip", None), ("dwell", 40.0), ("rating", 4.0)]


@pytest.fixture(scope="module")
def served(ml100k_dir, tmp_path_factory):
    from recsys.serve.app import build_state, create_app

    cfg = compose_serve(["pipeline=untrained", f"dataset_dir={ml100k_dir}", "pipeline.sources.content=null", "feedback.rate_per_s=0.5",
                         f"feedback_db={tmp_path_factory.mktemp('fb') / 'feedback.sqlite'}"])
    assert cfg.feedback.burst == 200
    state = build_state(cfg)
    client = TestClient(create_app(state), base_url="http://127.0.0.1")
    yield client, state
    state.store.close()


def events_for(body) -> list[dict]:
    """Every (item, event) of a served list: 5 per item."""
    return [{"request_id": body["request_id"], "item_id": it["item_id"], "event": e, **({"value": v} if v else {})}
            for it in body["items"] for e, v in EVENTS]


def test_a_batch_over_the_burst_is_refused_whole(served):
    client, state = served
    body = client.post("/recommend", json={"user_id": "11", "k": 100}).json()
    events = events_for(body)
    assert len(events) == 500
    n0 = state.store.count()
    r = client.post("/feedback/batch", json={"events": events})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert "500 events for one request_id" in r.json()["detail"] and "smaller batches" in r.json()["detail"]
    assert state.store.count() == n0  # nothing stored, and no token taken:
    assert client.post("/feedback/batch", json={"events": events[:200]}).status_code == 200


def test_batches_take_one_token_per_event(served):
    client, state = served
    body = client.post("/recommend", json={"user_id": "12", "k": 60}).json()
    events = events_for(body)
    assert client.post("/feedback/batch", json={"events": events[:150]}).status_code == 200
    r = client.post("/feedback/batch", json={"events": events[150:250]})  # 100 more, 50 left
    assert r.status_code == 429 and 90 <= int(r.headers["retry-after"]) <= 101  # 50 tokens at 0.5/s
    assert r.json()["detail"].startswith("events[0].request_id: too much feedback")
    assert client.post("/feedback/batch", json={"events": events[150:200]}).status_code == 200  # exactly what is left
    one = client.post("/feedback", json=events[200])
    assert one.status_code == 429 and int(one.headers["retry-after"]) >= 1
    # another request id in the same batch has its own bucket; the call is refused as a whole
    other = client.post("/recommend", json={"user_id": "13", "k": 2}).json()
    mixed = events_for(other)[:3] + [events[201]]
    n0 = state.store.count()
    r = client.post("/feedback/batch", json={"events": mixed})
    assert r.status_code == 429 and r.json()["detail"].startswith("events[3].request_id") and state.store.count() == n0


def test_a_repeat_with_another_value_is_acknowledged_as_the_first(served):
    client, state = served
    body = client.post("/recommend", json={"user_id": "14", "k": 3}).json()
    rating = {"request_id": body["request_id"], "item_id": body["items"][0]["item_id"], "event": "rating", "value": 4}
    first = client.post("/feedback", json=rating).json()
    assert first["new"] == [True] and first["notes"] == []
    again = client.post("/feedback", json={**rating, "value": 1}).json()
    assert again["event_ids"] == first["event_ids"] and again["new"] == [False]
    assert again["notes"] == ["value: this (request, item, event) is stored already with value 4; the first value "
                              "stands, this one was not stored"]
    assert client.post("/feedback", json=rating).json()["notes"] == []  # a plain retry: nothing to say
    dwell = {**rating, "item_id": body["items"][1]["item_id"], "event": "dwell", "value": 40.0}
    batch = client.post("/feedback/batch", json={"events": [dwell, {**dwell, "value": 5.0}, {**rating, "value": 2}]})
    ack = batch.json()
    assert ack["new"] == [True, False, False] and [n.split(":")[0] for n in ack["notes"]] == ["events[1].value",
                                                                                              "events[2].value"]
    stored = state.store.events()
    mine = stored[stored["request_id"] == body["request_id"]]
    assert sorted(mine["value"].tolist()) == [4.0, 40.0]  # the first values stand
