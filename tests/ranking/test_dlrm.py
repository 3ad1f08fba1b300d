"""DLRM / DCN-v2 on torchrec's arches: equal to torchrec's own DLRM / DLRM_DCN, DIN hand-checked."""

import pytest
import torch
from torchrec.models.dlrm import DLRM as TorchrecDLRM
from torchrec.models.dlrm import DLRM_DCN as TorchrecDLRM_DCN
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.models.dlrm import (DIN_HISTORY, DIN_ITEM, CrossNetInteractionArch, DotInteractionArch, build_dlrm,
                                embedding_tables, interaction_factory)

torch.set_num_threads(1)
CARD = {"user": 4, "cat": 3}


def _kjt(din: bool = False):
    # B=3; "user": one id per row; "cat": bags [0,1], [], [2]; DIN: candidate + history [1,2], [], [0,1,3]
    keys, values, lengths = ["user", "cat"], [0, 1, 2, 0, 1, 2], [1, 1, 1, 2, 0, 1]
    if din:
        keys += [DIN_ITEM, DIN_HISTORY]
        values += [5, 6, 7, 1, 2, 0, 1, 3]
        lengths += [1, 1, 1, 2, 0, 3]
    return KeyedJaggedTensor.from_lengths_sync(keys=keys, values=torch.tensor(values), lengths=torch.tensor(lengths))


def test_dot_dlrm_equals_torchrec_dlrm():
    torch.manual_seed(0)
    ours = build_dlrm(CARD, num_dense_features=3, embedding_dim=8, dense_layers=(16,), over_layers=(12, 6))
    ref = TorchrecDLRM(embedding_tables(CARD, 8), dense_in_features=3, dense_arch_layer_sizes=[16, 8], over_arch_layer_sizes=[12, 6, 1])
    ref.load_state_dict(ours.state_dict())  # same submodule names: strict load
    dense = torch.randn(3, 3)
    torch.testing.assert_close(ours(dense, _kjt()), ref(dense, _kjt()).squeeze(1))


def test_dcn_dlrm_equals_torchrec_dlrm_dcn():
    torch.manual_seed(0)
    ours = build_dlrm(CARD, 3, 8, (16,), (12, 6), interaction=interaction_factory("dcn", num_layers=2, low_rank=4))
    ref = TorchrecDLRM_DCN(embedding_tables(CARD, 8), 3, [16, 8], [12, 6, 1], dcn_num_layers=2, dcn_low_rank_dim=4)
    ref.load_state_dict(ours.state_dict())
    dense = torch.randn(3, 3)
    torch.testing.assert_close(ours(dense, _kjt()), ref(dense, _kjt()).squeeze(1))


def test_din_vector_hand_computed():
    torch.manual_seed(0)
    model = build_dlrm(CARD, 3, 4, din_items=8, din_history=3, din_layers=(5,))
    din = model.din
    table = din.embedding_collection.embeddings["t_din"].weight
    out = din(_kjt(din=True))  # (3, D)
    assert out.shape == (3, 4)
    for b, (cand, hist) in enumerate([(5, [1, 2]), (6, []), (7, [0, 1, 3])]):
        want = torch.zeros(4)
        for h in hist:  # DIN: unnormalised weight a(h, c) per history item, weighted sum
            e, c = table[h], table[cand]
            a = din.attention(torch.cat([e, c, e * c, e - c])[None])[0, 0]
            want = want + a * e
        torch.testing.assert_close(out[b], want, rtol=1e-5, atol=1e-6)
    # the interaction sees F + 1 vectors with DIN
    assert model.inter_arch.F == 3 and model(torch.randn(3, 3), _kjt(din=True)).shape == (3,)


def test_dot_interaction_hand_computed():
    inter = DotInteractionArch(num_sparse_features=2, embedding_dim=2)
    out = inter(torch.tensor([[1.0, 2.0]]), torch.tensor([[[3.0, 0.0], [1.0, -1.0]]]))
    # pairs in triu order: (d,s1)=3, (d,s2)=1-2=-1, (s1,s2)=3
    torch.testing.assert_close(out, torch.tensor([[1.0, 2.0, 3.0, -1.0, 3.0]]))
    assert inter.output_dim == 2 + 3


def test_full_rank_cross_and_grad():
    inter = CrossNetInteractionArch(2, 4, num_layers=2, low_rank=None)
    assert inter.output_dim == 12
    model = build_dlrm(CARD, 3, 4, interaction=lambda f, d: CrossNetInteractionArch(f, d, 2, None))
    model(torch.randn(3, 3), _kjt()).sum().backward()
    assert model.sparse_arch.embedding_bag_collection.embedding_bags["t_user"].weight.grad is not None


def test_invariants_are_checked():
    with pytest.raises(ValueError, match="cardinality"):
        embedding_tables({"x": 0}, 4)
    with pytest.raises(ValueError, match="dense feature"):
        build_dlrm(CARD, 0)
    with pytest.raises(ValueError, match="interaction must be"):
        interaction_factory("mlp")
    with pytest.raises(ValueError, match="F=2"):
        build_dlrm(CARD, 3, 8, interaction=lambda f, d: DotInteractionArch(f + 1, d))
