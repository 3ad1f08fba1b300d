"""Feedback loop: events -> interactions -> refreshed dataset -> the next recommendations reflect them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from recsys.serve.feedback_store import Event, FeedbackStore
from recsys.serve.refresh import events_to_interactions, refresh_dataset

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "pipeline" / "untrained.yaml"


def test_events_to_interactions_mapping():
    ev = pd.DataFrame({
        "event_id": [1, 2, 3, 4, 5, 6, 7, 8],
        "user_idx": [0, 0, 0, 0, 0, None, 1, 1],
        "item_idx": [10, 11, 12, 13, 14, 15, 16, 16],
        "event": ["impression", "click", "rating", "skip", "dwell", "click", "rating", "rating"],
        "value": [None, None, 2.0, None, 45.0, None, 5.0, 1.0],
        "created_at": [100.0] * 8,
    })
    out = events_to_interactions(ev)
    # impression dropped, anonymous click dropped, (1, 16) keeps the latest rating
    assert list(zip(out.user_idx, out.item_idx, out.value)) == [(0, 11, 4.0), (0, 12, 2.0), (0, 13, 1.0), (0, 14, 4.0), (1, 16, 1.0)]
    short = events_to_interactions(ev.assign(value=[None, None, 2.0, None, 5.0, None, 5.0, 1.0]))
    assert 14 not in short.item_idx.tolist()  # a 5 s dwell is not a click


def in_category(rec, items, cat_id) -> int:
    return sum(cat_id in rec.catalog.category_ids(int(i)) for i in items)


def candidate_lists(rec, user_idx, n=300):
    """-> ({source: its candidates}, the merged candidates) for a user, as the pipeline builds them."""
    ctx = rec.contexts.build(user_idx)
    lists = {name: source(ctx, n) for name, source in rec.pipeline.sources.items()}
    return lists, rec.pipeline.merger(lists)


@pytest.mark.slow
def test_a_users_high_ratings_reach_every_source_after_one_refresh(ml100k_dir_text, tmp_path):
    """A user with a short history and no western rates the 8 most watched westerns 5 stars; after one
    refresh, on the real default pipeline (item-to-item, content, popularity; exploration off):

    - the rated items are consumed (never recommended again) and are the item-to-item source's most
      recent seeds;
    - the user's content profile moves to the category: the content source's top 20 holds westerns;
    - westerns move up the merged candidate list (more of them in its top 100);
    - each rated item gains about one fresh interaction of popularity on the dataset's clock (the wall
      clock made them the only recent interactions, i.e. every new user's top 10).

    Not claimed: that the served top 20 shows more westerns. With the default reciprocal-rank fusion
    two popularity-correlated sources (item-to-item, popularity) outvote the content profile: on 20
    such users the top 20 held 0 westerns before and after (``scripts/eval_refresh_effect.py``,
    experiments/conversation.md). The old test claimed it and passed only while refresh stamped events
    with the wall clock: every old interaction then decayed to ~0, so the popularity source was the
    catalogue in item_idx order and stopped outvoting the content source.
    """
    from recsys.pipeline.recommender import Recommender
    from recsys.retrieval.sources import positive_history

    cfg = OmegaConf.merge(OmegaConf.load(CONFIG), OmegaConf.from_dotlist(["stages.exploration=null"]))
    before = Recommender(ml100k_dir_text, cfg, history="all")
    cat = before.catalog
    western = cat.category_id("Western")
    lengths = before.dataset.interactions.groupby("user_idx").size()
    user = int(lengths.index[lengths.to_numpy() <= 30][0])  # a user with a short history ...
    seen = set(before.contexts.build(user).history.tolist())
    assert in_category(before, seen, western) == 0  # ... and no western
    westerns = [int(i) for i in np.argsort(-cat.popularity) if western in cat.category_ids(int(i)) and int(i) not in seen][:8]

    store = FeedbackStore(tmp_path / "fb.sqlite")
    store.log_request("req-1", str(before.dataset.users.user_id[user]), user, westerns)
    store.append_many([Event("req-1", None, user, i, "rating", 5.0) for i in westerns]
                      + [Event("req-1", None, user, westerns[0], "impression")])
    summary = refresh_dataset(ml100k_dir_text, tmp_path / "fb.sqlite", tmp_path / "refreshed")
    assert summary["new_interactions"] == 8 and summary["last_event_id"] == 9

    after = Recommender(tmp_path / "refreshed", cfg, history="all")
    assert len(after.dataset.interactions) == len(before.dataset.interactions) + 8
    assert len(after.split.train) == len(before.split.train) + 8 and after.split.test.equals(before.split.test)
    cands, ctx = after.recommend(user, k=20)
    assert not set(cands.items.tolist()) & set(westerns)  # rated items are now consumed
    assert positive_history(ctx)[-8:].tolist() == westerns  # the most recent seeds, in rating order
    (src0, merged0), (src1, merged1) = candidate_lists(before, user), candidate_lists(after, user)
    assert in_category(after, src1["content"].items[:20], western) > in_category(before, src0["content"].items[:20], western)
    assert in_category(after, merged1.items[:100], western) > in_category(before, merged0.items[:100], western)
    gained = after.pipeline.sources["popularity"].scores[westerns] - before.pipeline.sources["popularity"].scores[westerns]
    assert np.allclose(gained, 1.0, atol=0.01), gained  # one interaction at the dataset's "now"
    assert not set(westerns) & set(np.argsort(-after.pipeline.sources["popularity"].scores)[:10].tolist())

    # a second refresh from the refreshed directory consumes nothing twice
    again = refresh_dataset(tmp_path / "refreshed", tmp_path / "fb.sqlite", tmp_path / "refreshed2")
    assert again["events"] == 0 and again["new_interactions"] == 0


def test_refresh_rejects_same_dir(ml100k_dir, tmp_path):
    with pytest.raises(ValueError, match="new directory"):
        refresh_dataset(ml100k_dir, tmp_path / "fb.sqlite", ml100k_dir)


def test_events_are_placed_on_the_dataset_clock():
    ev = pd.DataFrame({"event_id": [1, 2], "user_idx": [0, 0], "item_idx": [1, 2], "event": ["click", "skip"],
                       "value": [None, None], "created_at": [1_790_000_000.0, 1_790_000_060.0]})
    out = events_to_interactions(ev, after_timestamp=893_286_638)  # ML-100K's last timestamp (April 1998)
    assert out.timestamp.tolist() == [893_286_639, 893_286_699]  # after the data, spacing kept


def test_refresh_then_retrain_is_one_command_that_keeps_the_feedback(ml100k_dir, tmp_path):
    """`recsys.serve.refresh --retrain "python -m recsys.train ... data=refreshed"`: no shell, the refreshed data."""
    import json
    import os
    import subprocess
    import sys

    from recsys.data.io import load_dataset

    root = Path(__file__).resolve().parents[2]
    before = load_dataset(ml100k_dir)
    store = FeedbackStore(tmp_path / "fb.sqlite")
    store.log_request("r", "1", 0, [5, 6])
    store.append_many([Event("r", "1", 0, 5, "rating", 5.0), Event("r", "1", 0, 6, "skip")])
    store.close()
    out = tmp_path / "data" / "ml100k-refresh"
    retrain = (f"python -m recsys.train experiment=ml100k/pop data=refreshed paths.data_dir={tmp_path / 'data'} "
               f"logger=none callbacks=none hydra.run.dir={tmp_path / 'run'}")
    r = subprocess.run([sys.executable, "-m", "recsys.serve.refresh", "--dataset-dir", str(ml100k_dir), "--feedback-db",
                        str(tmp_path / "fb.sqlite"), "--out-dir", str(out), "--retrain", retrain],
                       cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["new_interactions"] == 2
    after = load_dataset(out)
    new = after.interactions.iloc[len(before.interactions):]
    assert (new.timestamp > before.interactions.timestamp.max()).all()  # the dataset's clock, not 2026
    cfg = (tmp_path / "run" / ".hydra" / "config.yaml").read_text()
    assert "recsys.serve.refresh.refreshed_dataset" in cfg and "name: ml100k-refresh" in cfg  # trained on the refreshed dir
    assert (tmp_path / "run" / "metrics.json").exists()


def test_refreshed_dataset_refuses_a_raw_directory(ml100k_dir):
    from recsys.data.schema import DataError
    from recsys.serve.refresh import refreshed_dataset

    with pytest.raises(DataError, match="not a refreshed dataset"):
        refreshed_dataset(ml100k_dir)


def test_new_users_feedback_is_folded_in_and_their_skips_survive_a_new_store(ml100k_dir, tmp_path):
    """Issue 11: a cold user's events were dropped by refresh (not in the tables) and, served from the
    refreshed data with a new store, their skipped item came back at #1. Through the API, as a user would."""
    from fastapi.testclient import TestClient

    from recsys.data.io import load_dataset
    from recsys.pipeline.build import compose_serve
    from recsys.serve.app import build_state, create_app
    from recsys.serve.refresh import refresh_dataset

    def serve(data_dir, name, db):
        cfg = compose_serve(["pipeline=untrained", f"paths.data_dir={data_dir}", f"data_name={name}", f"feedback_db={db}",
                             "pipeline.sources.content=null"])
        state = build_state(cfg)
        return state, TestClient(create_app(state), base_url="http://127.0.0.1")

    state, client = serve(ml100k_dir.parent, "ml100k", tmp_path / "fb.sqlite")
    served = client.post("/recommend", json={"user_id": "cold-fb-user", "k": 5}).json()
    top, second, third = (it["item_id"] for it in served["items"][:3])
    known = client.post("/recommend", json={"user_id": "1", "k": 2}).json()
    events = [{"request_id": served["request_id"], "item_id": top, "event": "skip"},
              {"request_id": served["request_id"], "item_id": second, "event": "rating", "value": 5.0},
              {"request_id": served["request_id"], "item_id": third, "event": "impression"},
              {"request_id": known["request_id"], "item_id": known["items"][0]["item_id"], "event": "rating", "value": 1.0}]
    r = client.post("/feedback/batch", json={"events": events})
    assert r.status_code == 200, r.text
    state.store.close()
    out = tmp_path / "data" / "ml100k-refresh"
    summary = refresh_dataset(ml100k_dir, tmp_path / "fb.sqlite", out)
    assert summary["new_users"] == 1 and summary["new_interactions"] == 3 and summary["negatives_kept"] == 2
    assert summary["dropped"] == {"impression (exposure, not taste)": 1}
    after = load_dataset(out)
    row = after.users[after.users.user_id == "cold-fb-user"]
    assert len(row) == 1 and int(row.user_idx.iloc[0]) == after.meta.n_users - 1
    state2, client2 = serve(tmp_path / "data", "ml100k-refresh", tmp_path / "fb-new.sqlite")  # a new, empty store
    body = client2.post("/recommend", json={"user_id": "cold-fb-user", "k": 10}).json()
    ids = [it["item_id"] for it in body["items"]]
    assert not body["cold_start"] and top not in ids and second not in ids  # skipped: hidden; liked: seen
    state2.store.close()
