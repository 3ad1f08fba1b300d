"""MMR and category caps on hand-made cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.core.candidates import Candidates, UserContext
from recsys.pipeline.catalog import ItemCatalog
from recsys.pipeline.diversity import CategoryCap, MMRDiversifier, category_similarity, mmr_order


def three_item_catalog(with_embeddings: bool = True) -> ItemCatalog:
    # cos(0,1) = 0.9, cos(0,2) = cos(1,2) = 0
    emb = np.array([[1.0, 0.0, 0.0], [0.9, np.sqrt(1 - 0.81), 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    items = pd.DataFrame(dict(item_idx=[0, 1, 2], categories=[["A"], ["A"], ["B"]], available=[True] * 3, age_rating=[0] * 3))
    return ItemCatalog.from_items(items, embeddings=emb if with_embeddings else None)


def cands3() -> Candidates:
    # relevance after min-max normalisation: [1.0, 0.8, 0.0]
    return Candidates(np.array([0, 1, 2]), np.array([1.0, 0.9, 0.5]), np.array(["s"] * 3, dtype=object))


def test_mmr_hand_computed():
    """lambda = 0.5:
    step 1: values 0.5*[1, .8, 0] = [.5, .4, 0] -> item 0 (gain .5)
    step 2: item 1: .5*.8 - .5*.9 = -.05; item 2: 0 - 0 = 0 -> item 2 (gain 0)
    step 3: item 1 (gain -.05)."""
    out = MMRDiversifier(three_item_catalog(), lambda_=0.5, k=3)(UserContext(), cands3())
    assert out.items.tolist() == [0, 2, 1]
    np.testing.assert_allclose(out.features["mmr_gain"], [0.5, 0.0, -0.05], atol=1e-6)
    assert np.all(np.diff(out.scores) < 0)  # scores encode the new order


@pytest.mark.parametrize("lambda_, expected", [(1.0, [0, 1, 2]), (0.9, [0, 1, 2]), (0.5, [0, 2, 1]), (0.0, [0, 2, 1])])
def test_mmr_lambda_tradeoff(lambda_, expected):
    # lambda 0.9, step 2: item 1: .72 - .09 = .63 > item 2: 0
    assert MMRDiversifier(three_item_catalog(), lambda_=lambda_, k=3)(UserContext(), cands3()).items.tolist() == expected


def test_mmr_truncates_to_k_and_rejects_bad_lambda():
    assert len(MMRDiversifier(three_item_catalog(), lambda_=0.5, k=2)(UserContext(), cands3())) == 2
    with pytest.raises(ValueError, match="lambda"):
        MMRDiversifier(three_item_catalog(), lambda_=1.5)


def test_mmr_without_embeddings_uses_category_overlap():
    cat = three_item_catalog(with_embeddings=False)
    np.testing.assert_allclose(category_similarity(cat, np.array([0, 1, 2])), [[1, 1, 0], [1, 1, 0], [0, 0, 1]])
    c = cands3()
    out = MMRDiversifier(cat, lambda_=0.5, k=3)(UserContext(), c)
    assert out.items.tolist() == [0, 2, 1]
    assert any("category overlap" in f for f in c.trace["fallbacks"])


def test_mmr_order_ties_keep_incoming_order():
    order, _ = mmr_order(np.ones(4), np.zeros((4, 4)), 0.5, 4)
    assert order.tolist() == [0, 1, 2, 3]


def test_category_cap():
    items = pd.DataFrame(dict(item_idx=range(6), categories=[["A"], ["A", "B"], ["A"], ["B"], [], ["B"]],
                              available=[True] * 6, age_rating=[0] * 6))
    cat = ItemCatalog.from_items(items)
    c = Candidates(np.arange(6), np.linspace(1, 0, 6), np.array(["s"] * 6, dtype=object))
    # cap 2: 0(A1) 1(A2,B1) 2 skipped(A) 3(B2) 4(no category) 5 skipped(B)
    assert CategoryCap(cat, max_per_category=2, k=10)(UserContext(), c).items.tolist() == [0, 1, 3, 4]
    assert c.trace["removed"]["category_cap"] == 2
    # not strict: topped up with skipped items in their original order
    c2 = Candidates(np.arange(6), np.linspace(1, 0, 6), np.array(["s"] * 6, dtype=object))
    # cap 1: 0(A) 1 skipped(A) 2 skipped(A) 3(B) 4 -> 3 kept, topped up with 1 placed last
    assert CategoryCap(cat, max_per_category=1, k=4, strict=False)(UserContext(), c2).items.tolist() == [0, 3, 4, 1]
