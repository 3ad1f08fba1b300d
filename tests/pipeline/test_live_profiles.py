"""Live feedback keyed by external user id: new users, dislikes never seed, replay from stored rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.pipeline.context import ContextBuilder, LiveProfiles, event_polarity
from recsys.retrieval.sources import ItemToItemSource, positive_history


def test_event_polarity():
    assert event_polarity("click", None, 2.0) is True and event_polarity("skip", None, 2.0) is False
    assert event_polarity("rating", 2.0, 2.0) is False and event_polarity("rating", 3.0, 2.0) is True
    assert event_polarity("impression", None, 2.0) is None and event_polarity("dwell", 40.0, 2.0) is None


def test_live_profiles_last_event_wins_and_replay():
    live = LiveProfiles()
    live.add("new", 3, True)
    live.add("new", 4, False)
    live.add("new", 3, False)  # skipped after clicking
    assert live.positives("new").tolist() == [] and live.negatives("new").tolist() == [3, 4]
    rows = pd.DataFrame({"user_id": ["a", "a", "b", None], "item_idx": [1, 2, 1, 5],
                         "event": ["rating", "skip", "click", "click"], "value": [5.0, None, None, None]})
    other = LiveProfiles()
    assert other.replay(rows) == 3
    assert other.positives("a").tolist() == [1] and other.negatives("a").tolist() == [2]
    assert other.positives("b").tolist() == [1]


def test_new_user_feedback_builds_a_context_and_dislikes_never_seed(tiny_dataset):
    ds, _ = tiny_dataset
    cb = ContextBuilder(ds.interactions, ds.users)
    cb.add_feedback("stranger", 2, True)
    cb.add_feedback("stranger", 5, False)
    ctx = cb.build(None, user_id="stranger")
    assert ctx.user_idx is None and ctx.history.tolist() == [2] and ctx.negative_items.tolist() == [5]
    known = cb.build(1)  # user 1 rated item 1 two stars: a dislike
    assert 1 in known.negative_items.tolist() and 1 not in positive_history(known).tolist()
    sim = np.eye(8, dtype=np.float32)
    sim[1, 6] = sim[6, 1] = 0.9  # item 1's only neighbour is 6
    src = ItemToItemSource.from_similarity(sim, n_neighbours=2)
    assert 6 not in src(known, 5).items.tolist()
