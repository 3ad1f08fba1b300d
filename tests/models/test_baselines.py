"""Popularity, ItemKNN and BPR-MF: hand-computed cases, save/load, and ML-100K smoke runs."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.data.history import History
from recsys.data.schema import DatasetMeta, Split
from recsys.eval.evaluator import Evaluator
from recsys.models.bpr import BPRMF
from recsys.models.itemknn import ItemKNN
from recsys.models.lit_bpr import LitBPR
from recsys.models.pop import Popularity


def _split(rows, n_users, n_items):
    train = pd.DataFrame(rows, columns=["user_idx", "item_idx"]).assign(timestamp=np.arange(len(rows)), value=1.0)
    meta = DatasetMeta(name="hand", n_users=n_users, n_items=n_items, n_interactions=len(rows))
    return meta, Split("loo", train, train.iloc[:0], train.iloc[:0])


# u0 {0,1}, u1 {0,1,2}, u2 {2,3}: |U_i| = 2,2,2,1; co(0,1)=2, co(0,2)=co(1,2)=co(2,3)=1.
KNN_ROWS = [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 2), (2, 3)]


def test_popularity_counts_and_roundtrip(tiny_dataset, tmp_path):
    ds, split = tiny_dataset
    pop = Popularity(ds.meta).fit(ds, split)
    expected = np.bincount(split.train["item_idx"], minlength=ds.meta.n_items)
    assert pop.counts.tolist() == expected.tolist()
    h = History.from_lists([0, 1], [[0], []])
    assert pop.score(h).shape == (2, ds.meta.n_items)
    again = Popularity.load(pop.save(tmp_path / "pop"))
    assert torch.equal(again.score(h), pop.score(h))


def test_popularity_window_counts_recent_only():
    meta, split = _split([(0, 0), (1, 0), (2, 1)], 3, 2)  # timestamps 0, 1, 2
    assert Popularity(meta, window=1).fit(None, split).counts.tolist() == [1.0, 1.0]


def test_itemknn_by_hand(tmp_path):
    meta, split = _split(KNN_ROWS, 3, 4)
    h = History.from_lists([0, 1], [[0], [0, 2]])
    full = ItemKNN(meta, k=3, shrink=0.0).fit(None, split)
    r2 = 1 / math.sqrt(2)
    # history {0}: row 0 = {1: 2/2, 2: 1/2}; history {0, 2}: rows 0 + 2 ({0: .5, 1: .5, 3: 1/sqrt2}).
    np.testing.assert_allclose(full.score(h).numpy(), [[0, 1.0, 0.5, 0], [0.5, 1.5, 0.5, r2]], rtol=1e-6)
    top1 = ItemKNN(meta, k=1, shrink=0.0).fit(None, split)  # each item keeps its best neighbour only
    np.testing.assert_allclose(top1.score(h).numpy(), [[0, 1.0, 0, 0], [0, 1.0, 0, r2]], rtol=1e-6)
    shrunk = ItemKNN(meta, k=3, shrink=1.0).fit(None, split)
    assert shrunk.score(h)[0].tolist() == pytest.approx([0, 2 / 3, 1 / 3, 0])
    again = ItemKNN.load(full.save(tmp_path / "knn"))
    assert torch.equal(again.score(h), full.score(h))
    with pytest.raises(ValueError, match="k > 0"):
        ItemKNN(meta, k=0)


def test_bpr_forward_shapes_and_loss_by_hand():
    net = BPRMF(2, 3, dim=2)
    with torch.no_grad():
        net.user.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        net.item.weight.copy_(torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, 3.0]]))
        net.item_bias.weight.copy_(torch.tensor([[0.5], [0.0], [0.0]]))
    assert net(torch.tensor([0, 1]), torch.tensor([0, 2])).tolist() == [1.5, 3.0]
    assert net(torch.tensor([0]), torch.tensor([[1, 2]])).tolist() == [[2.0, 0.0]]
    assert net.score(History.from_lists([1], [[]])).tolist() == [[1.5, 0.0, 3.0]]
    lit = LitBPR(DatasetMeta("x", 2, 3, 0), dim=2, reg=0.0)
    lit.net = net
    batch = {"user": torch.tensor([0]), "item": torch.tensor([1]), "neg_items": torch.tensor([[2, 0]])}
    # x_ui = 2, x_uj = 0 and 1.5: loss = mean(-log sig(2), -log sig(0.5)).
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-0.5))) / 2
    assert lit.bpr_loss(batch).item() == pytest.approx(expected, rel=1e-6)


def test_pop_and_itemknn_on_ml100k(ml100k, ml100k_split):
    ev = Evaluator(ks=(10,), progress=False, device="cpu")
    pop = ev.evaluate(Popularity(ml100k.meta).fit(ml100k, ml100k_split), ml100k, ml100k_split, "test")
    knn = ev.evaluate(ItemKNN(ml100k.meta, k=100).fit(ml100k, ml100k_split), ml100k, ml100k_split, "test")
    assert pop["test/n_users"] == ml100k.meta.n_users
    # Known ranges for leave-one-out full ranking on ML-100K (RecBole/LlamaRec-style protocol).
    assert 0.01 < pop["test/ndcg@10"] < 0.05
    assert knn["test/ndcg@10"] > pop["test/ndcg@10"]
