"""DLRM ranking stage: features, ordering, truncation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.models.dlrm import build_dlrm
from recsys.core.candidates import Candidates, UserContext
from recsys.pipeline.rank import DLRMRankStage, ranker_cardinalities

from pipeline_helpers import make_catalog


def stage(keep=5):
    cat = make_catalog(40, dim=None)
    cat.popularity = np.arange(40, dtype=np.float32)
    torch.manual_seed(0)
    model = build_dlrm(ranker_cardinalities(10, 40, len(cat.categories)), num_dense_features=1 + 2 * 2, embedding_dim=4)
    return DLRMRankStage(model, cat, ["a", "b"], keep=keep), cat


def cands():
    items = np.array([3, 9, 1, 30, 22, 17, 5])
    a = np.array([0.9, np.nan, 0.5, 0.1, np.nan, 0.3, 0.2], dtype=np.float32)
    return Candidates(items, np.linspace(1, 0, 7), np.array(["a"] * 7, dtype=object), {"a_score": a})


def test_dense_features_hand_checked():
    st, _ = stage()
    d = st.dense(cands())
    assert d.shape == (7, 5)
    np.testing.assert_allclose(d[:, 0], np.log1p([3, 9, 1, 30, 22, 17, 5]), rtol=1e-6)
    np.testing.assert_allclose(d[:, 1], [0.9, 0, 0.5, 0.1, 0, 0.3, 0.2], rtol=1e-6)
    assert d[:, 2].tolist() == [1, 0, 1, 1, 0, 1, 1]
    assert d[:, 3:].tolist() == [[0, 0]] * 7  # source b proposed nothing


def test_stage_scores_sorts_and_keeps():
    st, cat = stage(keep=5)
    out = st(UserContext(user_idx=2), cands())
    assert len(out) == 5 and np.all(np.diff(out.scores) <= 0)
    assert set(out.items.tolist()) <= {3, 9, 1, 30, 22, 17, 5}
    np.testing.assert_array_equal(out.features["rank_score"], out.scores)
    # the model's own forward on the same features gives the same scores
    c = cands()
    with torch.no_grad():
        ref = torch.sigmoid(st.model(torch.from_numpy(st.dense(c)), st.sparse(UserContext(user_idx=2), c))).numpy()
    np.testing.assert_allclose(np.sort(ref)[::-1][:5], out.scores, rtol=1e-6)
    kjt = st.sparse(UserContext(), c)  # unknown user -> row 0
    assert kjt["user"].values().tolist() == [0] * 7
    assert kjt["category"].lengths().tolist() == [len(cat.category_ids(i)) for i in c.items]


def test_rejects_a_model_with_other_features():
    _, cat = stage()
    model = build_dlrm({"x": 3, "y": 3}, num_dense_features=2, embedding_dim=4)
    with pytest.raises(ValueError, match="features"):
        DLRMRankStage(model, cat, ["a"])
