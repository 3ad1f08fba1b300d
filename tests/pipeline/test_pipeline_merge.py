"""The vectorised RRF merger agrees row for row with a plain loop written from the definition."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.core.candidates import Candidates
from recsys.retrieval.merge import CandidateMerger


def reference_merge(lists, caps, default_cap, weights, rrf_k=60.0):
    """RRF by the definition, one candidate at a time: rows in first-appearance order."""
    rows, items = {}, []
    for name, c in lists.items():
        for it in c.items[: caps.get(name, default_cap)]:
            if int(it) not in rows:
                rows[int(it)] = len(items)
                items.append(int(it))
    n = len(items)
    fused, feats, proposed = np.zeros(n), {}, [[] for _ in range(n)]
    for name, c in lists.items():
        score, rank = np.full(n, np.nan, np.float32), np.full(n, -1, np.int64)
        for r in range(min(len(c), caps.get(name, default_cap))):
            j = rows[int(c.items[r])]
            score[j], rank[j] = c.scores[r], r
            fused[j] += weights.get(name, 1.0) / (rrf_k + r + 1)
            proposed[j].append(name)
        feats[f"{name}_score"], feats[f"{name}_rank"] = score, rank
    return Candidates(np.asarray(items, np.int64), fused.astype(np.float32),
                      np.asarray(["+".join(p) for p in proposed], dtype=object), feats).sorted()


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
    ref, fast = reference_merge(lists(seed), **kw), CandidateMerger(**kw)(lists(seed))
    assert fast.items.tolist() == ref.items.tolist()
    assert fast.sources.tolist() == ref.sources.tolist()
    np.testing.assert_allclose(fast.scores, ref.scores, rtol=1e-6)
    assert set(fast.features) == set(ref.features)
    for f in ref.features:
        np.testing.assert_array_equal(fast.features[f], ref.features[f])


def test_hand_computed_fusion():
    a = Candidates(np.array([1, 2]), np.array([0.9, 0.8]), np.array(["a", "a"], dtype=object))
    b = Candidates(np.array([2, 3]), np.array([5.0, 4.0]), np.array(["b", "b"], dtype=object))
    out = CandidateMerger(rrf_k=0.0)({"a": a, "b": b})
    # item 2: 1/2 + 1/1 = 1.5; item 1: 1/1; item 3: 1/2
    assert out.items.tolist() == [2, 1, 3] and out.sources.tolist() == ["a+b", "a", "b"]
    np.testing.assert_allclose(out.scores, [1.5, 1.0, 0.5])
    assert np.isnan(out.features["b_score"][1]) and out.features["b_rank"].tolist() == [0, -1, 1]
    assert len(CandidateMerger()({"a": Candidates.empty()})) == 0
