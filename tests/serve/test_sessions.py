"""Conversation sessions live in the feedback store (``recsys.serve.sessions``): two apps built from the
composed serve config over one store file stand in for two workers (the real 2-worker servers are in
``test_workers.py``)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from recsys.pipeline.build import compose_serve


@pytest.fixture(scope="module")
def two_workers(ml100k_dir, tmp_path_factory):
    from recsys.serve.app import build_state, create_app

    cfg = compose_serve(["pipeline=untrained", f"dataset_dir={ml100k_dir}", "pipeline.sources.content=null",
                         f"feedback_db={tmp_path_factory.mktemp('fb') / 'feedback.sqlite'}"])
    states = [build_state(cfg) for _ in range(2)]
    yield [TestClient(create_app(s), base_url="http://127.0.0.1") for s in states], states
    for s in states:
        s.store.close()


def turn(client, sid, message):
    r = client.post("/conversation", json={"session_id": sid, "message": message, "k": 5})
    assert r.status_code == 200, r.text
    return r.json()


def test_turns_on_different_workers_share_the_session(two_workers):
    (a, b), _ = two_workers
    turn(a, "s1", "three thrillers from the 80s")
    second = turn(b, "s1", "actually a musical instead")
    assert second["constraints"]["include_categories"] == ["Musical"]
    assert (second["constraints"]["year_min"], second["constraints"]["year_max"], second["constraints"]["max_results"]) \
        == (1980, 1989, 3)
    assert turn(a, "s1", "ok")["source"] == "state"  # nothing new: the shared state answers
    assert turn(a, "s1", "start over")["question"] and turn(b, "s1", "ok")["question"]  # dropped for everyone
    assert turn(b, "other", "ok")["question"]  # sessions are per id


def test_an_unreadable_stored_state_starts_afresh(two_workers):
    (a, b), (state, _) = two_workers
    state.store.submit_session("broken", '{"constraints": {"year_min": "x"}}').result()
    assert turn(b, "broken", "a western")["constraints"]["include_categories"] == ["Western"]


def test_a_failing_session_store_is_a_503(ml100k_dir, tmp_path):
    from recsys.serve.app import build_state, create_app

    state = build_state(compose_serve(["pipeline=untrained", f"dataset_dir={ml100k_dir}", "pipeline.sources.content=null",
                                       f"feedback_db={tmp_path / 'feedback.sqlite'}"]))
    client = TestClient(create_app(state), base_url="http://127.0.0.1")
    state.store.close()
    r = client.post("/conversation", json={"session_id": "s", "message": "a comedy"})
    assert r.status_code == 503 and "retry" in r.json()["detail"]
