"""The ranker's feature contract: hand-computed rows, and training rows == serving rows."""

import numpy as np
import pytest
import torch

from recsys.core.candidates import Candidates, UserContext
from recsys.ranking.features import FeatureSpec, RankerFeatures, dense_names
from recsys.retrieval.merge import CandidateMerger

from ranking_helpers import compose_config

DENSE = ["a_score", "a_rank", "a_proposed", "b_rank", "merged_rank", "item_popularity", "user_activity", "genre_match",
         "year_gap", "att_text_max", "att_text_last", "att_text_recent", "att_text_mean"]


def _merged():
    # a: [2 (0.9), 5 (0.5)], b: [7 (3.0), 2 (1.0)] -> RRF order 2, 7, 5
    a = Candidates(np.array([2, 5]), np.array([0.9, 0.5]), np.array(["a", "a"], dtype=object))
    b = Candidates(np.array([7, 2]), np.array([3.0, 1.0]), np.array(["b", "b"], dtype=object))
    a.features["a_score"], b.features["b_score"] = a.scores, b.scores
    return CandidateMerger()({"a": a, "b": b})


def _features(tiny_dataset, **spec):
    ds, split = tiny_dataset
    text = np.eye(3, dtype=np.float32)[np.arange(8) % 3]  # item i ~ one-hot(i % 3)
    spec = FeatureSpec(sources=["a", "b"], sparse=["user", "gender", "categories", "year_bucket", "sources"], dense=DENSE, **spec)
    return RankerFeatures(spec, ds, split.train, text), ds


def test_rows_hand_computed(tiny_dataset):
    f, ds = _features(tiny_dataset)
    cands = _merged()
    assert cands.items.tolist() == [2, 7, 5]
    rows = f.compute(UserContext(user_idx=0, history=np.array([0, 1])), cands)
    d = {name: rows.dense[:, j] for j, name in enumerate(DENSE)}
    np.testing.assert_allclose(d["a_proposed"], [1, 0, 1])
    np.testing.assert_allclose(d["a_score"], [1, -1, -1], atol=1e-4)  # z over a's items; absent = lowest
    np.testing.assert_allclose(d["a_rank"], np.log1p([0, 2, 1]), rtol=1e-6)  # absent = after a's last
    np.testing.assert_allclose(d["b_rank"], np.log1p([1, 0, 2]), rtol=1e-6)
    np.testing.assert_allclose(d["merged_rank"], np.log1p([0, 1, 2]), rtol=1e-6)
    np.testing.assert_allclose(d["item_popularity"], np.log1p([1, 1, 1]), rtol=1e-6)  # one train row each
    np.testing.assert_allclose(d["user_activity"], np.log1p([2, 2, 2]), rtol=1e-6)
    # history genres {Comedy}, {Action, Thriller} -> profile 0.5 each; item 2 = {Sci-Fi, Action}
    np.testing.assert_allclose(d["genre_match"], [0.25, 0, 0], atol=1e-6)
    np.testing.assert_allclose(d["year_gap"], [1.75, 0.45, 0.0], atol=1e-6)  # mean year 1994.5; item 5 unknown
    # text attention over history [0, 1]: only item 7 (7 % 3 == 1) matches the last item
    np.testing.assert_allclose(d["att_text_max"], [0, 1, 0], atol=1e-6)
    np.testing.assert_allclose(d["att_text_last"], [0, 1, 0], atol=1e-6)
    np.testing.assert_allclose(d["att_text_recent"], [0, 1 / 1.8, 0], atol=1e-6)
    np.testing.assert_allclose(d["att_text_mean"], [0, 0.5, 0], atol=1e-6)
    sv, sl = rows.sparse["sources"]
    assert sv.tolist() == [0, 1, 1, 0] and sl.tolist() == [2, 1, 1]
    cats = f.catalog.categories
    cv, cl = rows.sparse["categories"]
    assert cl.tolist() == [2, 2, 1] and {cats[i] for i in cv[:2]} == {"Sci-Fi", "Action"}
    gender = ds.meta.vocabularies["gender"]
    assert rows.sparse["gender"][0].tolist() == [gender.index("M") + 1] * 3
    assert rows.sparse["user"][0].tolist() == [1, 1, 1]
    assert set(f.cardinalities()) == {"user", "gender", "categories", "year_bucket", "sources"}
    assert f.cardinalities()["sources"] == 2 and f.cardinalities()["user"] == ds.meta.n_users + 1


def test_cold_user_and_din_keys(tiny_dataset):
    f, ds = _features(tiny_dataset, din=True, history_len=1)
    rows = f.compute(UserContext(user_idx=None, demographics={"gender": "F"}), _merged())
    assert rows.sparse["user"][0].tolist() == [0, 0, 0]  # unknown user: row 0
    assert rows.sparse["gender"][0].tolist() == [ds.meta.vocabularies["gender"].index("F") + 1] * 3
    assert rows.sparse["din_history"][1].tolist() == [0, 0, 0] and rows.sparse["din_item"][0].tolist() == [2, 7, 5]
    assert np.isfinite(rows.dense).all()
    warm = f.compute(UserContext(user_idx=0, history=np.array([0, 1])), _merged())
    assert warm.sparse["din_history"][0].tolist() == [1, 1, 1]  # the last history_len=1 item, every row
    dense, kjt = warm.tensors().batch(torch.tensor([2, 0]))
    assert kjt["sources"].lengths().tolist() == [1, 2] and dense.shape == (2, len(DENSE))


def test_spec_rejects_unknown_features_and_missing_text(tiny_dataset):
    ds, split = tiny_dataset
    with pytest.raises(ValueError, match="unknown ranker features"):
        FeatureSpec(sources=["a"], dense=["c_score"])
    assert "a_rank" in dense_names(["a"]) and FeatureSpec(sources=["a"]).dense == dense_names(["a"])
    with pytest.raises(ValueError, match="text embeddings"):
        RankerFeatures(FeatureSpec(sources=["a"]), ds, split.train, text_emb=None)


def test_training_rows_equal_serving_rows(ml100k_dir_text, tmp_path):
    """The rows ``build_lists`` trains on and the rows the loaded rank stage scores, for the same
    (user, history prefix, candidates), are identical: real sources, merger, ContextBuilder, loader."""
    from recsys.data.io import load_dataset, load_split
    from recsys.data.schema import Split
    from recsys.models.lit_ranker import LitRanker
    from recsys.models.lit_two_tower import LitTwoTower
    from recsys.pipeline.context import ContextBuilder
    from recsys.pipeline.pipeline import Pipeline
    from recsys.pipeline.rank import dlrm_stage
    from recsys.pipeline.recommender import load_text_embeddings
    from recsys.ranking.artifact import load_ranker_run, save_ranker
    from recsys.ranking.candidates import candidate_pipeline, fitted_two_tower, source_names
    from recsys.ranking.data import build_lists, holdout_requests

    ds, split = load_dataset(ml100k_dir_text), load_split(ml100k_dir_text, "loo")
    text = load_text_embeddings(ml100k_dir_text)
    candidates = compose_config("recommend", ["pipeline=two_tower"]).pipeline  # the served pipeline's sources + merger
    inner, requests = holdout_requests(split.train, n_holdout=2, max_users=3)
    req = requests[0]  # first cut-off: the prefix is exactly the user's inner history
    inner_split = Split("inner", inner, inner.iloc[:0], inner.iloc[:0])
    spec = FeatureSpec(sources=source_names(candidates), sparse=["user", "gender", "categories", "sources"], din=True)
    # untrained: any fixed scorer will do; injected as the pipeline's two_tower artifact
    two_tower = {"two_tower": fitted_two_tower(LitTwoTower(ds.meta, dataset_dir=str(ml100k_dir_text)).eval())}
    gen = candidate_pipeline(candidates, ds, inner, inner_split, ml100k_dir_text, text, two_tower)
    train_rows = build_lists(gen, RankerFeatures(spec, ds, inner, text), [req], ds.meta.n_items, require_positive=False).rows

    feats = RankerFeatures(spec, ds, inner, text)
    ranker = LitRanker(feats.cardinalities(), feats.num_dense, din_items=ds.meta.n_items, din_history=spec.history_len)
    save_ranker(tmp_path / "model", ranker, spec, ml100k_dir_text)
    stage = dlrm_stage(load_ranker_run(tmp_path, ml100k_dir_text), ds, inner, text)
    seen = []
    stage.rows = lambda ctx, cands, f=stage.rows: seen.append(f(ctx, cands)) or seen[-1]
    serving = candidate_pipeline(candidates, ds, inner, inner_split, ml100k_dir_text, text, two_tower)
    pipe = Pipeline(serving.sources, serving.merger, {"ranker": stage}, per_source=serving.per_source)
    ctx = ContextBuilder(inner, ds.users).build(req.user)  # what a served request sees
    assert np.array_equal(ctx.history, req.history) and np.array_equal(ctx.negative_items, req.negatives)
    assert len(req.negatives)  # the case that matters: a low rating that must not seed the sources
    out = pipe(ctx, ds.meta.n_items)
    (serve_rows,) = seen
    assert len(train_rows) == spec.n_rank and np.array_equal(train_rows.items, serve_rows.items)
    np.testing.assert_array_equal(train_rows.dense, serve_rows.dense)
    assert train_rows.sparse.keys() == serve_rows.sparse.keys()
    for k in train_rows.sparse:
        for a, b in zip(train_rows.sparse[k], serve_rows.sparse[k]):
            np.testing.assert_array_equal(a, b)
    assert set(out.items[: spec.n_rank]) == set(train_rows.items)
    assert out.trace["stages"]["ranker"]["details"] == {"scored": spec.n_rank, "missing_sources": []}
