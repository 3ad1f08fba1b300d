"""The vectorised RRF merger agrees with the reference CandidateMerger row for row."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.pipeline.candidates import Candidates
from recsys.pipeline.merge import RRFMerger
from recsys.retrieval.merge import CandidateMerger


def lists(seed: int) -> dict[str, Candidates]:
    rng = np.random.default_rng(seed)
    out = {}
    for name in ["ann", "pop", "content"][: rng.integers(1, 4)]:
        k = int(rng.integers(0, 60))
        items = rng.choice(80, k, replace=False)
        out[name] = Candidates(items, np.sort(rng.random(k))[::-1], np.full(k, name, dtype=object))
    return out


@pytest.mark.parametrize("seed", range(25))
def test_matches_reference(seed):
    kw = dict(caps={"ann": 30}, default_cap=40, weights={"pop": 0.5})
    ref, fast = CandidateMerger(**kw)(lists(seed)), RRFMerger(**kw)(lists(seed))
    assert fast.items.tolist() == ref.items.tolist()
    assert fast.sources.tolist() == ref.sources.tolist()
    np.testing.assert_allclose(fast.scores, ref.scores, rtol=1e-6)
    assert set(fast.features) == set(ref.features)
    for f in ref.features:
        np.testing.assert_array_equal(fast.features[f], ref.features[f])


def test_hand_computed_fusion():
    a = Candidates(np.array([1, 2]), np.array([0.9, 0.8]), np.array(["a", "a"], dtype=object))
    b = Candidates(np.array([2, 3]), np.array([5.0, 4.0]), np.array(["b", "b"], dtype=object))
    out = RRFMerger(rrf_k=0.0)({"a": a, "b": b})
    # item 2: 1/2 + 1/1 = 1.5; item 1: 1/1; item 3: 1/2
    assert out.items.tolist() == [2, 1, 3] and out.sources.tolist() == ["a+b", "a", "b"]
    np.testing.assert_allclose(out.scores, [1.5, 1.0, 0.5])
    assert np.isnan(out.features["b_score"][1]) and out.features["b_rank"].tolist() == [0, -1, 1]
    assert len(RRFMerger()({"a": Candidates.empty()})) == 0
