"""Evaluator on a dataset ranked by hand, tie-breaking, masking and the sampled protocol."""

import numpy as np
import pytest
import torch

from recsys.eval.evaluator import Evaluator, topk_deterministic


def ev(**kw):
    kw.setdefault("ks", (1, 3))
    return Evaluator(progress=False, device="cpu", **kw)


def test_topk_ties_by_index_and_order():
    s = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    assert topk_deterministic(s, 3).tolist() == [[5, 1, 2], [0, 1, 2]]
    s2 = torch.tensor([[float("-inf"), 1.0, float("-inf")]])
    assert topk_deterministic(s2, 3).tolist() == [[1, 0, 2]]


def test_constant_model_by_hand(toy, table_model):
    ds, split = toy
    model = table_model(torch.zeros(3, 6))
    # valid: u0 ranks [2,3,4,5] target 2 -> rank 1; u1 [0,1,3,..] target 3 -> rank 3; u2 [1,2,4,5] target 4 -> rank 3.
    m = ev().evaluate(model, ds, split, "valid")
    assert m["val/n_users"] == 3
    assert m["val/recall@1"] == pytest.approx(1 / 3)
    assert m["val/recall@3"] == pytest.approx(1.0)
    assert m["val/ndcg@3"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert m["val/mrr@3"] == pytest.approx((1 + 1 / 3 + 1 / 3) / 3)
    assert m["val/precision@3"] == pytest.approx(1 / 3)
    assert m["val/coverage@1"] == pytest.approx(3 / 6)  # tops: 2, 0, 1
    # test (history = train + valid): u0 [3,4,5] -> 1; u1 [0,1,4,5] -> 1; u2 [1,2,5] -> 3.
    t = ev().evaluate(model, ds, split, "test")
    assert t["test/recall@1"] == pytest.approx(2 / 3)
    assert t["test/mrr@3"] == pytest.approx((1 + 1 + 1 / 3) / 3)


def test_consumed_items_are_masked(toy, table_model):
    ds, split = toy
    plain = ev().evaluate(table_model(torch.zeros(3, 6)), ds, split, "valid")
    cheat = ev().evaluate(table_model(torch.zeros(3, 6), boost_history=100.0), ds, split, "valid")
    assert cheat == plain


def test_beyond_metrics_present(toy, table_model):
    ds, split = toy
    m = ev(ks=(2,)).evaluate(table_model(torch.zeros(3, 6)), ds, split, "valid")
    # Lists: u0 [2,3] cats {c},{} -> 1; u1 [0,1] {a},{a,b} -> 0.5; u2 [1,2] {a,b},{c} -> 1.
    assert m["val/ild_category@2"] == pytest.approx(2.5 / 3)
    # Train counts 0:2 1:1 2:1 3:1 4:0 5:0 -> percentiles 11/12, 7/12, 7/12, 7/12, 2/12, 2/12.
    assert m["val/popularity_bias@2"] == pytest.approx(((7 + 7) / 24 + (11 + 7) / 24 + (7 + 7) / 24) / 3)
    assert m["val/arp@2"] == pytest.approx(((1 + 1) / 2 + (2 + 1) / 2 + (1 + 1) / 2) / 3)
    assert "val/ild_embedding@2" not in m  # no embeddings given
    emb = np.eye(6, dtype=np.float32)
    m2 = ev(ks=(2,), item_embeddings=emb).evaluate(table_model(torch.zeros(3, 6)), ds, split, "valid")
    assert m2["val/ild_embedding@2"] == pytest.approx(1.0)


def test_batch_size_does_not_change_results(toy, table_model):
    ds, split = toy
    table = torch.randn(3, 6, generator=torch.Generator().manual_seed(0))
    a = ev(batch_size=1).evaluate(table_model(table), ds, split, "test")
    b = ev(batch_size=64).evaluate(table_model(table), ds, split, "test")
    assert a == pytest.approx(b)


def test_sampled_protocol(toy, table_model):
    ds, split = toy
    # Oracle: the target scores highest -> perfect under any protocol.
    oracle = torch.zeros(3, 6)
    oracle[[0, 1, 2], [3, 0, 5]] = 1.0
    s = ev(protocol="sampled", num_negatives=2).evaluate(table_model(oracle), ds, split, "test")
    assert s["protocol"] == "sampled-2"
    assert s["test/recall@1"] == 1.0
    # Candidates are the target + 2 negatives, so recall@3 is 1 for any model.
    rnd = table_model(torch.randn(3, 6, generator=torch.Generator().manual_seed(1)))
    s2 = ev(protocol="sampled", num_negatives=2, batch_size=1).evaluate(rnd, ds, split, "test")
    assert s2["test/recall@3"] == 1.0
    assert s2 == ev(protocol="sampled", num_negatives=2, batch_size=2).evaluate(rnd, ds, split, "test")
    assert "protocol" not in ev().evaluate(rnd, ds, split, "test")


def test_evaluate_topk(toy):
    ds, split = toy
    lists = [[3, 4, 5], [1, 0, -1], [2, 1, 4]]
    m = ev().evaluate_topk(lists, [0, 1, 2], split.test, stage="test", dataset=ds, split=split)
    assert m["test/recall@1"] == pytest.approx(1 / 3)
    assert m["test/recall@3"] == pytest.approx(2 / 3)
    assert m["test/mrr@3"] == pytest.approx((1 + 0.5 + 0) / 3)
    m2 = ev().evaluate_topk(lists, [0, 1, 2], [[3], [0], [5]])
    assert m2["test/mrr@3"] == pytest.approx(m["test/mrr@3"])


def test_bad_input(toy, table_model):
    ds, split = toy
    with pytest.raises(ValueError, match="protocol"):
        Evaluator(protocol="loo")
    with pytest.raises(ValueError, match="unknown ranking metric"):
        Evaluator(metrics=("ndgc",))
    with pytest.raises(ValueError, match="shape"):
        ev().evaluate(table_model(torch.zeros(3, 5)), ds, split, "test")
    with pytest.raises(ValueError, match="NaN"):
        ev().evaluate(table_model(torch.full((3, 6), float("nan"))), ds, split, "test")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(toy, table_model):
    ds, split = toy
    model = table_model(torch.randn(3, 6, generator=torch.Generator().manual_seed(2)))
    cpu = ev().evaluate(model, ds, split, "test")
    gpu = Evaluator(ks=(1, 3), progress=False, device="cuda").evaluate(model, ds, split, "test")
    assert gpu == pytest.approx(cpu)


def test_topk_matches_stable_sort_on_random_ties():
    g = torch.Generator().manual_seed(3)
    s = torch.randint(0, 4, (50, 40), generator=g).float()  # many ties
    s[::7] = torch.rand(8, 40, generator=g)  # and some rows without ties
    ref = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :10]
    assert torch.equal(topk_deterministic(s, 10), ref)
