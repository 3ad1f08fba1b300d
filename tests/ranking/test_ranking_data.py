"""Ranker training data: hold-out labels, features, and no leakage from valid/test."""

import functools

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.data.history import History
from recsys.data.schema import Split
from recsys.models.itemknn import ItemKNN
from recsys.models.lit_ranker import LitRanker
from recsys.models.pop import Popularity
from recsys.ranking.data import holdout_last, label, retrieve
from recsys.ranking.features import RankingFeatures
from recsys.ranking.two_stage import TwoStageRanker


def test_holdout_last_takes_latest_train_items(tiny_dataset):
    _, split = tiny_dataset
    inner, held = holdout_last(split.train, 1)
    # u0 train i0 i1 -> held i1; u1 i1 i4 -> i4; u2 has one train item -> kept; u3 i3 i7 -> i7; u4 i5 i6 i1 -> i1
    assert sorted(map(tuple, held[["user_idx", "item_idx"]].to_numpy().tolist())) == [(0, 1), (1, 4), (3, 7), (4, 1)]
    assert len(inner) + len(held) == len(split.train)
    assert set(inner["user_idx"]) == {0, 1, 2, 3, 4}


def test_retrieve_excludes_history_and_labels_positives(tiny_dataset):
    ds, split = tiny_dataset
    pop = Popularity(ds.meta).fit(ds, split)
    h = History.from_interactions(split.train, [0])
    rows = retrieve(pop, h, n_candidates=3)
    assert not set(rows["item_idx"]) & {0, 1}  # u0's history
    assert len(rows) == 3 and rows["retriever_rank"].tolist() == [0, 1, 2]
    lab = label(rows, pd.DataFrame({"user_idx": [0], "item_idx": [rows["item_idx"].iloc[1]]}))
    assert lab["label"].tolist() == [0.0, 1.0, 0.0]


def test_features_hand_computed(tiny_dataset):
    ds, split = tiny_dataset
    f = RankingFeatures(ds, dense_features=["item_popularity", "user_activity", "retriever_rank"])
    ctx = f.fit_context(ds, split.train)
    rows = pd.DataFrame({"user_idx": [0, 4], "item_idx": [2, 1], "source": ["retriever", "random"],
                         "retriever_score": [1.0, 0.5], "retriever_rank": [0, 3]})
    h = History.from_interactions(split.train, [0, 4])
    t = f.transform(rows, h, ctx)
    # train popularity: i2 once (u2), i1 three times (u0, u1, u4); u0 has 2 train items, u4 has 3
    np.testing.assert_allclose(t.dense.numpy(), np.log1p([[1, 2, 0], [3, 3, 3]]), rtol=1e-6)
    dense, kjt, _ = t.batch(torch.tensor([1, 0]))
    cats = ds.meta.vocabularies["categories"]
    jt = kjt["categories"]
    assert [cats[i] for i in jt.values()[: jt.lengths()[0]].tolist()] == ["Action", "Thriller"]  # item 1 = Beta
    assert kjt["source"].values().tolist() == [3, 0] and kjt["user"].values().tolist() == [4, 0]
    assert f.cardinalities()["source"] == 4 and f.cardinalities()["user"] == ds.meta.n_users


def _scrambled(split: Split, n_items: int) -> Split:
    rng = np.random.default_rng(1)
    valid = split.valid.assign(item_idx=rng.integers(n_items, size=len(split.valid)))
    test = split.test.assign(item_idx=rng.integers(n_items, size=len(split.test)), timestamp=split.test["timestamp"] + 999)
    return Split(split.name, split.train, valid, test)


@pytest.mark.parametrize("n_holdout", [1, 2])
def test_training_rows_do_not_depend_on_valid_or_test(ml100k, ml100k_split, n_holdout):
    ranker = TwoStageRanker(ml100k.meta, functools.partial(ItemKNN, k=20), LitRanker, n_candidates=20, n_random=5, n_holdout=n_holdout, progress=False)
    rows_a, t_a = ranker.build_training_data(ml100k, ml100k_split)
    rows_b, t_b = ranker.build_training_data(ml100k, _scrambled(ml100k_split, ml100k.meta.n_items))
    pd.testing.assert_frame_equal(rows_a, rows_b)
    assert torch.equal(t_a.dense, t_b.dense) and torch.equal(t_a.labels, t_b.labels)
    # Every positive is a held-out *training* interaction, never a valid/test one.
    pos = rows_a[rows_a["label"] == 1][["user_idx", "item_idx"]]
    train_pairs = set(map(tuple, ml100k_split.train[["user_idx", "item_idx"]].to_numpy().tolist()))
    assert len(pos) > 0 and set(map(tuple, pos.to_numpy().tolist())) <= train_pairs
    assert set(rows_a["source"]) >= {"retriever", "random"}


def test_two_stage_ranker_scores_candidates_above_the_rest(ml100k, ml100k_split):
    from recsys.eval.evaluator import Evaluator

    m = TwoStageRanker(ml100k.meta, functools.partial(ItemKNN, k=50), LitRanker, n_candidates=30, max_epochs=1, progress=False)
    m.fit(ml100k, ml100k_split)
    h = History.from_interactions(ml100k_split.train, [0, 1, 2])
    s = m.score(h)
    assert s.shape == (3, ml100k.meta.n_items)
    cand = m._candidates(h)
    for b, u in enumerate([0, 1, 2]):
        items = cand[cand["user_idx"] == u]["item_idx"].to_numpy()
        others = np.setdiff1d(np.arange(ml100k.meta.n_items), items)
        assert s[b, items].min() > 2.0 and s[b, others].max() <= 0.0
    metrics = Evaluator(ks=(10,), progress=False).evaluate(m, ml100k, ml100k_split, "valid")
    assert 0.0 < metrics["val/ndcg@10"] < 1.0
    cm = m.candidate_metrics(ml100k, ml100k_split, "valid")
    assert 0.5 < cm["val/rank_auc"] <= 1.0
