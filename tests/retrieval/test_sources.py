"""Candidate sources and the merger: hand-checked lists, cold-start paths, dedup and caps."""

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.core.candidates import Candidates, UserContext
from recsys.retrieval.index import ItemIndex
from recsys.retrieval.merge import CandidateGenerator, CandidateMerger
from recsys.retrieval.sources import ContentSource, ItemToItemSource, PopularitySource, TwoTowerSource

DAY = 86400


def test_popularity_is_time_decayed():
    # item 0: 3 old interactions (60 days before now); item 1: 2 recent ones (now).
    inter = pd.DataFrame({"user_idx": [0, 1, 2, 3, 4], "item_idx": [0, 0, 0, 1, 1],
                          "timestamp": [0, 0, 0, 60 * DAY, 60 * DAY]})
    src = PopularitySource(inter, n_items=3, half_life_days=30)
    assert np.allclose(src.scores, [3 * 0.25, 2.0, 0.0])  # two half-lives -> 1/4 each
    c = src(UserContext(user_idx=9, history=np.array([2])), k=5)
    assert c.items.tolist() == [1, 0]  # trending item first; consumed item 2 dropped
    assert c.sources.tolist() == ["popularity"] * 2
    assert np.allclose(c.features["popularity_score"], [2.0, 0.75])


def test_popularity_respects_onboarding_categories():
    inter = pd.DataFrame({"user_idx": [0, 1, 2], "item_idx": [0, 0, 1], "timestamp": [0, 0, 0]})
    src = PopularitySource(inter, 3, item_categories=[["Action"], ["Comedy"], ["comedy", "Drama"]])
    c = src(UserContext(onboarding_categories=["Comedy"]), 5)
    assert c.items.tolist() == [1, 2]


def test_item_to_item_from_similarity_hand_case():
    sim = np.array([[1.0, 0.9, 0.1, 0.0],
                    [0.9, 1.0, 0.0, 0.5],
                    [0.1, 0.0, 1.0, 0.0],
                    [0.0, 0.5, 0.0, 1.0]], np.float32)
    src = ItemToItemSource.from_similarity(sim, n_neighbours=2, recency_decay=0.5)
    c = src(UserContext(user_idx=0, history=np.array([0, 1])), 5)
    # seeds: item 0 (weight 0.5, older), item 1 (weight 1). Item 2 <- 0.1*0.5; item 3 <- 0.5*1.
    assert c.items.tolist() == [3, 2]
    assert np.allclose(c.scores, [0.5, 0.05])
    assert len(src(UserContext(user_idx=0), 5)) == 0  # no seeds, no candidates


def test_item_to_item_from_embeddings_excludes_self():
    emb = np.eye(4, dtype=np.float32) + np.array([[0, 0.5, 0, 0], [0.5, 0, 0, 0], [0, 0, 0, 0.2], [0, 0, 0.2, 0]], np.float32)
    src = ItemToItemSource.from_embeddings(emb, n_neighbours=2)
    assert (src.neighbours != np.arange(4)[:, None]).all()
    assert src.neighbours[0, 0] == 1 and src.neighbours[2, 0] == 3


def test_content_source_history_query_and_onboarding():
    emb = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.9, 0.1], [0, 0, 1]], np.float32)
    cats = [["Sci-Fi"], ["Sci-Fi"], ["Comedy"], ["Comedy"], ["Drama"]]
    fake_embed = lambda texts: np.array([[0, 0, 1]], np.float32)  # stands in for MiniLM here; real one below
    src = ContentSource(emb, cats, embed_fn=fake_embed)
    assert src(UserContext(user_idx=1, history=np.array([0])), 1).items.tolist() == [1]
    assert src(UserContext(query="a drama"), 1).items.tolist() == [4]
    cold = src(UserContext(onboarding_categories=["comedy"]), 2)
    assert sorted(cold.items.tolist()) == [2, 3]
    assert len(src(UserContext(), 3)) == 0  # nothing to match: empty, the merger falls back to others


def test_merger_dedups_keeps_sources_and_caps():
    a = Candidates(np.array([1, 2, 3]), np.array([0.9, 0.8, 0.7]), np.array(["tt"] * 3), {})
    b = Candidates(np.array([3, 4, 5]), np.array([10.0, 9.0, 8.0]), np.array(["pop"] * 3), {})
    m = CandidateMerger(caps={"pop": 2}, rrf_k=0)
    out = m({"tt": a, "pop": b})
    assert sorted(out.items.tolist()) == [1, 2, 3, 4]  # item 5 cut by pop's cap
    row = {int(i): j for j, i in enumerate(out.items)}
    assert out.sources[row[3]] == "tt+pop"
    # RRF with rrf_k=0: item 3 = 1/3 + 1/1, item 1 = 1/1, item 4 = 1/2, item 2 = 1/2
    assert out.items[0] == 3 and out.scores[0] == pytest.approx(1 / 3 + 1)
    assert out.features["pop_score"][row[1]] != out.features["pop_score"][row[1]]  # NaN: not proposed
    assert out.features["tt_rank"][row[3]] == 2 and out.features["pop_rank"][row[3]] == 0
    assert len(m({"tt": a, "pop": b}, k=2)) == 2


def _tiny_two_tower():
    from recsys.models.lit_two_tower import LitTwoTower
    from tt_synthetic import tiny_tables
    from recsys.models.two_tower_features import ItemFeatures, UserFeatures

    inter, items, users, meta, text = tiny_tables()
    torch.manual_seed(0)
    m = LitTwoTower(meta, item_features=ItemFeatures.from_tables(items, meta, text),
                    user_features=UserFeatures.from_tables(users, meta), dim=8, out_dim=8, hidden=[16])
    return m, inter, items, text


def test_two_tower_source_matches_exact_scores_and_serves_unknown_users():
    m, inter, items, text = _tiny_two_tower()
    index = ItemIndex("flat", device="cpu").build(m.item_embeddings().numpy())
    src = TwoTowerSource(m, index)
    hist = np.array([0, 1, 2])
    c = src(UserContext(user_idx=3, history=hist), 5)
    from recsys.data.history import History
    full = m.score(History.from_lists([3], [hist]))[0].numpy()
    full[hist] = -np.inf
    assert c.items.tolist() == np.argsort(-full, kind="stable")[:5].tolist()
    cold = src(UserContext(user_idx=None, session=np.array([4])), 5)  # unknown user, session only
    assert len(cold) == 5 and 4 not in cold.items


def test_two_tower_source_reads_low_rated_items_only_when_asked():
    """negatives_in_history: the user tower sees the whole history (as a sequential tower was trained);
    by default a low-rated item is dropped from it. Either way it is never recommended."""
    from recsys.data.history import History

    m, *_ = _tiny_two_tower()
    m.eval()
    index = ItemIndex("flat", device="cpu").build(m.item_embeddings().numpy())
    ctx = UserContext(user_idx=3, history=np.array([0, 1, 2]), negative_items=np.array([1]))
    with torch.no_grad():
        whole = m.user_embeddings(torch.tensor([3]), History.from_lists([3], [np.array([0, 1, 2])])).numpy()
        liked = m.user_embeddings(torch.tensor([3]), History.from_lists([3], [np.array([0, 2])])).numpy()
    assert not np.allclose(whole, liked)
    np.testing.assert_allclose(TwoTowerSource(m, index).user_vector(ctx), liked, rtol=1e-5)
    src = TwoTowerSource(m, index, negatives_in_history=True)
    np.testing.assert_allclose(src.user_vector(ctx), whole, rtol=1e-5)
    assert not set(src(ctx, 5).items.tolist()) & {0, 1, 2}


def test_generator_cold_user_gets_popularity_and_content():
    m, inter, items, text = _tiny_two_tower()
    index = ItemIndex("flat", device="cpu").build(m.item_embeddings().numpy())
    gen = CandidateGenerator(
        [TwoTowerSource(m, index), PopularitySource(inter, 30, item_categories=items["categories"].tolist()),
         ContentSource(text, items["categories"].tolist())],
        CandidateMerger(default_cap=10), cold_sources=["popularity", "content"])
    cold = gen(UserContext(onboarding_categories=["Drama"]), k=15)
    srcs = set("+".join(cold.sources).split("+"))
    assert srcs == {"popularity", "content"}
    drama = set(items.index[items["categories"].map(lambda c: "Drama" in c)])
    pop_rows = [j for j, s in enumerate(cold.sources) if "popularity" in s]
    assert pop_rows and set(cold.items[pop_rows].tolist()) <= drama  # popularity within the onboarding category
    warm = gen(UserContext(user_idx=0, history=np.array([0, 1])), k=15)
    assert "two_tower" in "+".join(warm.sources)
    assert warm.trace["candidates"]["merged"] == len(warm) <= 15


def test_new_item_reachable_through_content_and_item_tower():
    """An item with no interactions gets candidates through its text and its item-tower vector."""
    m, inter, items, text = _tiny_two_tower()
    new_item = 29
    inter = inter[inter["item_idx"] != new_item]  # no interactions at all
    text = text.copy()
    text[new_item] = text[5]  # the new item's text matches a watched item's
    content = ContentSource(text, items["categories"].tolist())
    c = content(UserContext(user_idx=0, history=np.array([5])), 3)
    assert c.items[0] == new_item
    emb = m.item_embeddings().numpy()
    assert np.isfinite(emb[new_item]).all() and np.linalg.norm(emb[new_item]) > 0.5
