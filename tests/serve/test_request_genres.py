"""A genre the catalogue does not have is a 422 naming the valid genres (one check: ``check_categories``
in ``Recommender.recommend``), through the HTTP API of the app built from the composed serve config."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from recsys.pipeline.build import compose_serve


@pytest.fixture(scope="module")
def served(ml100k_dir, tmp_path_factory):
    from recsys.serve.app import build_state, create_app

    state = build_state(compose_serve(["pipeline=untrained", f"dataset_dir={ml100k_dir}", "pipeline.sources.content=null",
                                       f"feedback_db={tmp_path_factory.mktemp('fb') / 'feedback.sqlite'}"]))
    yield TestClient(create_app(state), base_url="http://127.0.0.1"), state
    state.store.close()


@pytest.mark.parametrize("body, where", [
    ({"constraints": {"include_categories": ["Horor"]}}, "constraints.include_categories[0]"),
    ({"constraints": {"require_categories": ["Comedy", "Romanse"]}}, "constraints.require_categories[1]"),
    ({"constraints": {"exclude_categories": ["Scifi"]}}, "constraints.exclude_categories[0]"),
    ({"onboarding_categories": ["Horror", "Westen"]}, "onboarding_categories[1]"),
])
def test_a_genre_typo_is_a_422_that_names_the_valid_genres(served, body, where):
    client, state = served
    n_before = state.store.count()
    r = client.post("/recommend", json={"user_id": "196", "k": 5, **body})
    assert r.status_code == 422, r.text
    err = r.json()
    assert err["loc"] == [where] and err["valid_genres"] == state.recommender.catalog.categories
    assert where in err["detail"] and "Horror, " in err["detail"] and "Western" in err["detail"]
    for typo in ("Horor", "Romanse", "Scifi", "Westen"):
        assert typo not in r.text  # the client's text is not echoed
    assert state.store.count() == n_before


def test_known_genres_in_any_case_are_accepted(served):
    client, state = served
    r = client.post("/recommend", json={"k": 5, "onboarding_categories": ["horror"],
                                        "constraints": {"include_categories": ["comedy"], "exclude_categories": ["WAR"]}})
    assert r.status_code == 200 and r.json()["items"]
    cat = state.recommender.catalog
    assert all("Comedy" in cat.category_names(it["item_idx"]) for it in r.json()["items"])


def test_a_conversation_without_a_known_genre_asks_with_the_valid_genres(served):
    client, state = served
    r = client.post("/conversation", json={"session_id": "typo", "message": "some telenovela please"})
    assert r.status_code == 200 and r.json()["recommendation"] is None
    assert all(g in r.json()["question"] for g in state.recommender.catalog.categories)
