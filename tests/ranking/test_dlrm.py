"""DLRM / DCN-v2 arches: shapes, hand-computed interactions, invariants."""

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.models.dlrm import (
    DLRM, CrossLayerStack, CrossNetInteractionArch, DenseArch, InteractionArch, OverArch, SparseArch,
    build_dlrm, embedding_tables,
)

torch.set_num_threads(1)


def _kjt():
    # B=3; f "user": one id per row; "cat": bags [0,1], [], [2]
    return KeyedJaggedTensor.from_lengths_sync(
        keys=["user", "cat"], values=torch.tensor([0, 1, 2, 0, 1, 2]), lengths=torch.tensor([1, 1, 1, 2, 0, 1])
    )


def test_sparse_arch_shape_and_sum_pooling():
    torch.manual_seed(0)
    ebc = embedding_tables({"user": 4, "cat": 3}, 5)
    arch = SparseArch(ebc)
    out = arch(_kjt())
    assert out.shape == (3, 2, 5)
    w = ebc.embedding_bags["t_cat"].weight
    torch.testing.assert_close(out[0, 1], w[0] + w[1])
    torch.testing.assert_close(out[1, 1], torch.zeros(5))  # empty bag pools to zero
    assert arch.feature_names == ["user", "cat"]


def test_dot_interaction_hand_computed():
    inter = InteractionArch(num_sparse_features=2, embedding_dim=2)
    dense = torch.tensor([[1.0, 2.0]])
    sparse = torch.tensor([[[3.0, 0.0], [1.0, -1.0]]])
    out = inter(dense, sparse)
    # pairs in triu order: (d,s1)=3, (d,s2)=1-2=-1, (s1,s2)=3
    torch.testing.assert_close(out, torch.tensor([[1.0, 2.0, 3.0, -1.0, 3.0]]))
    assert inter.output_dim == 2 + 3


def test_cross_layer_hand_computed():
    cross = CrossLayerStack(2, num_layers=1, low_rank=None)
    with torch.no_grad():
        cross.layers[0].weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
        cross.layers[0].bias.copy_(torch.tensor([0.5, 0.0]))
    x0 = torch.tensor([[2.0, 3.0]])
    # W x + b = [2.5, 5]; x0 * that + x0 = [5+2, 15+3]
    torch.testing.assert_close(cross(x0), torch.tensor([[7.0, 18.0]]))


@pytest.mark.parametrize("interaction", [None, lambda f, d: CrossNetInteractionArch(f, d, num_layers=2, low_rank=4)])
def test_dlrm_forward_shape_and_grad(interaction):
    torch.manual_seed(0)
    model = build_dlrm({"user": 4, "cat": 3}, num_dense_features=3, embedding_dim=8, interaction=interaction)
    logits = model(torch.randn(3, 3), _kjt())
    assert logits.shape == (3,)
    logits.sum().backward()
    assert model.sparse_arch.embedding_bag_collection.embedding_bags["t_user"].weight.grad is not None


def test_invariants_are_checked():
    ebc = embedding_tables({"user": 4, "cat": 3}, 8)
    sparse = SparseArch(ebc)
    with pytest.raises(ValueError, match="D=8"):
        DLRM(sparse, DenseArch(3, [4]), InteractionArch(2, 8), OverArch(8 + 3, [4]))
    with pytest.raises(ValueError, match="over arch"):
        DLRM(sparse, DenseArch(3, [8]), InteractionArch(2, 8), OverArch(99, [4]))
    with pytest.raises(ValueError, match="F=3"):
        DLRM(sparse, DenseArch(3, [8]), InteractionArch(3, 8), OverArch(8 + 6, [4]))
    with pytest.raises(ValueError, match="cardinality"):
        embedding_tables({"x": 0}, 4)
    with pytest.raises(ValueError, match="dense features must be"):
        DenseArch(3, [8])(torch.zeros(2, 4))
