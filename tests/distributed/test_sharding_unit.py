"""Single-process checks of the sharding helpers (no process group needed)."""

import pytest
import torch

from recsys.distributed.sharding import _any_device_sharder_cls, apply_fused_embedding_optimizer, plan_constraints, shard_model
from recsys.models.dlrm import build_dlrm


def _model():
    return build_dlrm({"a": 10, "b": 20}, num_dense_features=3, embedding_dim=8)


def test_constraints_name_every_table_and_reject_unknown_types():
    cons = plan_constraints(_model(), ["row_wise"])
    assert set(cons) == {"t_a", "t_b"} and cons["t_a"].sharding_types == ["row_wise"]
    assert plan_constraints(_model(), None) is None
    with pytest.raises(ValueError, match="unknown sharding types"):
        plan_constraints(_model(), ["diagonal"])


def test_cpu_sharder_offers_row_wise():
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder

    assert "row_wise" not in EmbeddingBagCollectionSharder().sharding_types("cpu")
    types = _any_device_sharder_cls()().sharding_types("cpu")
    assert {"row_wise", "table_wise", "column_wise", "data_parallel"} <= set(types)


def test_fused_optimizer_steps_embeddings_in_backward_unsharded():
    torch.manual_seed(0)
    m = _model()
    assert apply_fused_embedding_optimizer(m, lr=0.5) == 2
    from recsys.data.criteo import to_kjt

    w = m.sparse_arch.embedding_bag_collection.embedding_bags["t_a"].weight
    before = w.detach().clone()
    m(torch.randn(4, 3), to_kjt(torch.tensor([[1, 2], [3, 4], [1, 5], [0, 0]]), ["a", "b"])).sum().backward()
    changed = (w.detach() != before).any(1)
    assert changed[[0, 1, 3]].all() and not changed[[2, 4, 9]].any()  # only looked-up rows move
    assert w.grad is None  # the in-backward optimiser consumed the gradient


def test_shard_model_needs_a_process_group():
    with pytest.raises(RuntimeError, match="init_from_env"):
        shard_model(_model())
