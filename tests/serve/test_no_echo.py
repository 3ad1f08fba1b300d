"""Error bodies and log lines name fields and positions from the schema, never the caller's text.

Over HTTP (TestClient) against the app built from the composed serve config. Before
recsys/serve/errors.py: an unknown field's name was echoed (cut to ~40 characters, HTML as is) in
the 422 ``loc`` and the log line, the feedback 422 repeated the item and request ids, 404s repeated
the raw request or item id, a 429 the request id, and /recommend's warnings the unknown user and
session item ids.
"""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from recsys.pipeline.build import compose_serve

MARK = "<script>alert(1)</script>"
MARK_PATH = "<img src=x onerror=alert(1)>"  # a path segment (no slash)


@pytest.fixture(scope="module")
def served(ml100k_dir, tmp_path_factory):
    from recsys.serve.app import build_state, create_app

    cfg = compose_serve(["pipeline=untrained", f"dataset_dir={ml100k_dir}", "pipeline.sources.content=null", "feedback.burst=3",
                         "feedback.rate_per_s=0.01",
                         f"feedback_db={tmp_path_factory.mktemp('fb') / 'feedback.sqlite'}"])
    state = build_state(cfg)
    client = TestClient(create_app(state), base_url="http://127.0.0.1")
    yield client, state
    state.store.close()


def hostile_requests(client, state):
    """(what, response) for every error path a caller's text can reach."""
    body = client.post("/recommend", json={"user_id": "7", "k": 5}).json()
    rid, item = body["request_id"], body["items"][0]["item_id"]
    other = next(i for i in state.recommender.item_ids if i not in {it["item_id"] for it in body["items"]})
    ev = {"request_id": rid, "item_id": item, "event": "impression"}
    cases = [
        ("unknown field", client.post("/recommend", json={"user_id": "7", MARK: 1})),
        ("long unknown field", client.post("/recommend", json={"user_id": "7", MARK * 30: 1})),
        ("nested unknown field", client.post("/recommend", json={"constraints": {"include_categories": [], MARK: 1}})),
        ("unknown field in a batch", client.post("/feedback/batch", json={"events": [ev, {**ev, MARK: 1}]})),
        ("genre both wanted and excluded", client.post("/recommend", json={"constraints": {
            "include_categories": [MARK], "exclude_categories": [MARK]}})),
        ("unknown request_id", client.post("/feedback", json={**ev, "request_id": MARK})),
        ("unknown item_id", client.post("/feedback", json={**ev, "item_id": MARK})),
        ("unknown item_id in a batch", client.post("/feedback/batch", json={"events": [ev, {**ev, "item_id": MARK}]})),
        ("item not served", client.post("/feedback", json={**ev, "item_id": other})),
        ("another user", client.post("/feedback", json={**ev, "user_id": MARK})),
        ("unknown similar item", client.get(f"/items/{MARK_PATH}/similar")),
        ("bad event type", client.post("/feedback", json={**ev, "event": MARK})),
    ]
    for e in ("click", "skip", "dwell"):  # burst 3: the fourth event is refused
        client.post("/feedback", json={**ev, "event": e, **({"value": 40.0} if e == "dwell" else {})})
    cases.append(("rate limited", client.post("/feedback", json={**ev, "event": "rating", "value": 4})))
    return rid, item, cases


def test_no_error_body_or_log_line_repeats_the_callers_text(served, caplog):
    client, state = served
    with caplog.at_level(logging.INFO, logger="recsys"):
        rid, item, cases = hostile_requests(client, state)
    statuses = {what: r.status_code for what, r in cases}
    assert statuses == {"unknown field": 422, "long unknown field": 422, "nested unknown field": 422,
                        "unknown field in a batch": 422, "genre both wanted and excluded": 422,
                        "unknown request_id": 404, "unknown item_id": 404, "unknown item_id in a batch": 404,
                        "item not served": 422, "another user": 422, "unknown similar item": 404,
                        "bad event type": 422, "rate limited": 429}
    for what, r in cases:
        for needle in ("script", "alert", "img", rid, f"'{item}'"):
            assert needle not in r.text, (what, r.text)
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "script" not in logged and rid not in logged
    assert len(logged.splitlines()) >= len(cases) - 1  # every refusal is logged, by log id and reason


def test_errors_say_where_by_the_schema(served):
    client, state = served
    _, _, cases = hostile_requests(client, state)
    got = dict(cases)
    top = got["unknown field"].json()["detail"][0]
    assert top["loc"] == ["body"] and "key 1 of this object" in top["msg"] and "user_id, session_items" in top["msg"]
    nested = got["nested unknown field"].json()["detail"][0]
    assert nested["loc"] == ["body", "constraints"] and "key 1" in nested["msg"] and "exclude_words" in nested["msg"]
    assert got["unknown field in a batch"].json()["detail"][0]["loc"] == ["body", "events", 1]
    assert "exclude_categories[0]" in got["genre both wanted and excluded"].text
    assert got["unknown request_id"].json()["detail"].startswith("request_id: not found")
    assert got["unknown item_id in a batch"].json()["detail"].startswith("events[1].item_id: not found")
    assert got["item not served"].json()["detail"] == "item_id: not served in that request"
    assert got["unknown similar item"].json()["detail"] == "item_id: not found in the catalogue"
    assert got["rate limited"].json()["detail"].startswith("request_id: too much feedback")


def test_recommend_warnings_name_positions_not_ids(served):
    client, _ = served
    body = client.post("/recommend", json={"user_id": MARK, "session_items": ["1", MARK, "2"], "k": 3}).json()
    assert body["warnings"][:2] == ["unknown user_id: cold-start recommendations",
                                    "ignored unknown item ids at session_items[1]"]
    assert body["user_id"] == MARK  # the field itself is the caller's data, returned as sent (JSON-encoded)
