"""Ranker training lists: cut-offs inside the training part, labels, batches, and no leakage from valid/test."""

import numpy as np
import torch

from recsys.data.schema import Split
from recsys.models.lit_ranker import LitRanker, list_ranks
from recsys.ranking.data import RankerLists, holdout_requests, stage_requests, user_sequences
from recsys.ranking.features import RankerRows
from recsys.ranking.two_stage import TwoStageRanker

# item2item + popularity: real sources that fit in a second (the two-tower is tested end to end elsewhere)
CANDIDATES = {
    "per_source": 50,
    "merger": {"_target_": "recsys.retrieval.merge.CandidateMerger", "default_cap": 50},
    "sources": {"item2item": {"_target_": "recsys.pipeline.recommender.itemknn_source", "k": 50},
                "popularity": {"_target_": "recsys.retrieval.sources.PopularitySource"}},
}
FEATURES = {"sparse": ["gender", "categories", "sources"], "dense": None, "n_rank": 40}


def _ranker(meta, dataset_dir=None, **kw):
    spec = dict(FEATURES, dense=[f for f in _dense() if not f.startswith("att_text")])
    return TwoStageRanker(meta, None, LitRanker, CANDIDATES, retriever_artifact=None, retriever_run=None, features=spec, progress=False,
                          dataset_dir=dataset_dir, **kw)


def _dense():
    from recsys.ranking.features import dense_names

    return dense_names(["item2item", "popularity"])


def test_holdout_requests_cut_inside_train(tiny_dataset):
    _, split = tiny_dataset
    inner, reqs = holdout_requests(split.train, n_holdout=1, min_history=1)
    # u0 train i0 i1 -> label i1; u1 i1 i4 -> i4; u2 has one train item -> none; u3 i3 i7 -> i7; u4 i5 i6 i1 -> i1
    assert [(r.user, r.label, r.history.tolist()) for r in reqs] == [(0, 1, [0]), (1, 4, [1]), (3, 7, [3]), (4, 1, [5, 6])]
    assert len(inner) + len(reqs) == len(split.train)
    inner2, reqs2 = holdout_requests(split.train, n_holdout=2, min_history=1)
    assert [(r.user, r.label, r.history.tolist()) for r in reqs2] == [(4, 6, [5]), (4, 1, [5, 6])]
    assert sorted(inner2[inner2.user_idx == 4]["item_idx"]) == [5]


def test_requests_carry_the_low_ratings_of_their_history(tiny_dataset):
    """As the serving ContextBuilder: items rated <= 2 in the history are the context's negative items."""
    from recsys.pipeline.context import ContextBuilder

    ds, split = tiny_dataset
    _, reqs = holdout_requests(split.train, n_holdout=1, min_history=1)
    # u1 rated i1 2 stars; u4 rated i6 2 stars (i1, the label, is not in the prefix)
    assert {r.user: r.negatives.tolist() for r in reqs} == {0: [], 1: [1], 3: [], 4: [6]}
    served = ContextBuilder(split.train, ds.users)
    for r in stage_requests(split.train, split.valid):
        assert r.negatives.tolist() == served.build(r.user).negative_items.tolist()
    assert all(len(r.negatives) == 0 for r in stage_requests(split.train, split.valid, negative_threshold=None))


def test_sequences_keep_table_order_for_ties(tiny_dataset):
    _, split = tiny_dataset
    # u4's i4 and i1 share timestamp 4: a stable sort keeps the table's order (as the ContextBuilder reads it)
    rows = split.train[split.train.user_idx == 4]
    want = rows.sort_values("timestamp", kind="stable")["item_idx"].tolist()
    assert user_sequences(split.train)[4].tolist() == want
    reqs = stage_requests(split.train, split.valid)
    assert [r.user for r in reqs] == sorted(split.valid["user_idx"]) and reqs[0].label == 2


def test_collate_batches_whole_lists():
    rows = RankerRows(np.arange(5), np.arange(10, dtype=np.float32).reshape(5, 2),
                      {"x": (np.array([0, 1, 1, 2, 0, 1]), np.array([1, 2, 1, 1, 1]))})
    lists = RankerLists(rows, np.array([0, 1, 0, 0, 1], np.float32), np.array([0, 3, 5]), np.array([7, 8]), np.array([1, 4]))
    dense, kjt, labels, seg, pos = lists.collate([1, 0])
    assert seg.tolist() == [0, 0, 1, 1, 1] and pos.tolist() == [0, 1, 0, 1, 2]
    assert dense[:, 0].tolist() == [6, 8, 0, 2, 4] and labels.tolist() == [0, 1, 0, 1, 0]
    assert kjt["x"].lengths().tolist() == [1, 1, 1, 2, 1] and kjt["x"].values().tolist() == [0, 1, 0, 1, 1, 2]
    assert lists.retrieved().tolist() == [True, True]
    # batch list 0: positive second by logit; list 1: the positive ties with a later row and wins the tie
    assert list_ranks(torch.tensor([2.0, 1.0, 0.0, 5.0, 5.0]), labels, seg, pos).tolist() == [1, 0]


def _scrambled(split: Split, n_items: int) -> Split:
    rng = np.random.default_rng(1)
    valid = split.valid.assign(item_idx=rng.integers(n_items, size=len(split.valid)))
    test = split.test.assign(item_idx=rng.integers(n_items, size=len(split.test)), timestamp=split.test["timestamp"] + 999)
    return Split(split.name, split.train, valid, test)


def test_training_lists_do_not_depend_on_valid_or_test(ml100k, ml100k_split):
    a = _ranker(ml100k.meta, n_holdout=2, max_train_users=40).build_training_lists(ml100k, ml100k_split)
    b = _ranker(ml100k.meta, n_holdout=2, max_train_users=40).build_training_lists(ml100k, _scrambled(ml100k_split, ml100k.meta.n_items))
    np.testing.assert_array_equal(a.rows.dense, b.rows.dense)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.rows.items, b.rows.items)
    # every label is a training interaction of its user, never a valid/test one; one positive per list
    train = set(map(tuple, ml100k_split.train[["user_idx", "item_idx"]].to_numpy().tolist()))
    assert len(a) > 20 and set(zip(a.users.tolist(), a.targets.tolist())) <= train
    assert np.add.reduceat(a.labels, a.offsets[:-1]).tolist() == [1.0] * len(a)


def test_two_stage_ranker_fits_and_scores_its_served_lists(ml100k, ml100k_split, ml100k_dir):
    from recsys.eval.evaluator import Evaluator

    m = _ranker(ml100k.meta, ml100k_dir, n_holdout=2, max_train_users=60, max_epochs=2, max_val_users=100)
    m.fit(ml100k, ml100k_split)
    assert m.fit_stats["ranker/train_lists"] > 30 and 0 < m.fit_stats["ranker/val_recall@n_rank"] <= 1
    s = m.score(_history(ml100k_split, [0, 1, 2]))
    assert s.shape == (3, ml100k.meta.n_items)
    listed = (s > -1e9).sum(1)
    assert (listed > 40).all()  # the whole merged list, the top n_rank re-ranked
    ev = Evaluator(ks=(10, 40), progress=False, beyond_metrics=())
    metrics, base = ev.evaluate(m, ml100k, ml100k_split, "valid"), ev.evaluate(m.input_scorer(), ml100k, ml100k_split, "valid")
    assert 0.0 < metrics["val/ndcg@10"] < 1.0 and metrics["val/ndcg@10"] != base["val/ndcg@10"]
    # the ranker only re-orders the top n_rank = 40 merged candidates: the same set, so recall@40 is unchanged
    assert metrics["val/recall@40"] == base["val/recall@40"] > 0


def _history(split, users):
    from recsys.data.history import History

    return History.from_interactions(split.train, users)
