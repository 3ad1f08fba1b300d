"""DLRM rank stage: scores the top n_rank merged candidates with the feature contract, keeps the rest below."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.core.candidates import Candidates, UserContext
from recsys.models.lit_ranker import LitRanker
from recsys.pipeline.rank import DLRMRankStage
from recsys.ranking.features import FeatureSpec, RankerFeatures
from recsys.retrieval.merge import CandidateMerger


def _stage(tiny_dataset, n_rank=3, keep=None, sources=("a", "b")):
    ds, split = tiny_dataset
    spec = FeatureSpec(sources=list(sources), sparse=["gender", "categories", "sources"],
                       dense=[f"{sources[0]}_rank", "merged_rank", "item_popularity", "genre_match"], n_rank=n_rank)
    feats = RankerFeatures(spec, ds, split.train)
    torch.manual_seed(0)
    return DLRMRankStage(LitRanker(feats.cardinalities(), feats.num_dense, embedding_dim=4), feats, keep=keep)


def _cands():
    a = Candidates(np.array([3, 6, 7, 4, 5]), np.linspace(1, 0, 5), np.array(["a"] * 5, dtype=object))
    a.features["a_score"] = a.scores
    return CandidateMerger()({"a": a})


def test_scores_the_head_and_keeps_the_tail_in_merged_order(tiny_dataset):
    st = _stage(tiny_dataset, n_rank=3)
    ctx, cands = UserContext(user_idx=0, history=np.array([0, 1])), _cands()
    out = st(ctx, cands)
    assert len(out) == 5 and set(out.items[:3]) == {3, 6, 7} and out.items[3:].tolist() == [4, 5]
    assert np.all(np.diff(out.scores) < 0)  # one descending order: scored head, then the tail
    rows = st.rows(ctx, cands)
    with torch.no_grad():
        logits = st.model(*rows.tensors().batch()).numpy()
    np.testing.assert_allclose(out.features["rank_score"][:3], np.sort(logits)[::-1], rtol=1e-6)
    assert np.isnan(out.features["rank_score"][3:]).all()
    # the stage reports in the trace dict it was handed; b proposed nothing: not in the merge, a fallback
    assert out.trace == {"scored": 3, "missing_sources": ["b"],
                         "fallbacks": ["ranker: no b source in this pipeline; read as not proposed"]}
    assert len(_stage(tiny_dataset, n_rank=3, keep=2)(ctx, cands)) == 2
    assert len(st(ctx, Candidates.empty())) == 0


def test_cold_user_is_ranked_from_item_features(tiny_dataset):
    out = _stage(tiny_dataset)(UserContext(), _cands())
    assert len(out) == 5 and np.isfinite(out.features["rank_score"][:3]).all()


def test_rejects_a_model_built_for_other_features(tiny_dataset):
    st = _stage(tiny_dataset)
    other = _stage(tiny_dataset, sources=("a", "b", "c"))  # one more source: a bigger `sources` table
    with pytest.raises(ValueError, match="do not match the feature contract"):
        DLRMRankStage(other.model, st.features)
