"""DLRM / DCN-v2 rankers on torchrec's own arches, with an optional DIN attention vector.

Papers:
- DLRM: Naumov et al. 2019, "Deep Learning Recommendation Model for Personalization and
  Recommendation Systems" (arXiv:1906.00091). Dense features go through a bottom MLP to the
  embedding dimension D; the pairwise dot products of all F+1 vectors (F pooled embeddings +
  the dense vector) feed a top MLP.
- DCN-v2: Wang et al. 2021, "DCN V2: Improved Deep & Cross Network and Practical Lessons for
  Web-scale Learning to Rank Systems" (WWW '21): the F+1 vectors are concatenated and crossed,
  ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l`` (low-rank ``W_l = U_l V_l``).
- DIN: Zhou et al. 2018, "Deep Interest Network for Click-Through Rate Prediction" (KDD '18):
  a local activation unit weighs each recent history item by its relevance to the candidate
  (an MLP over ``[h, c, h * c, h - c]``, weights not normalised, sec. 4.3); the weighted sum
  is one more D-vector beside the pooled embeddings.

The arches are torchrec's (``torchrec.models.dlrm.SparseArch`` / ``DenseArch`` /
``InteractionArch`` / ``InteractionDCNArch`` / ``OverArch``, ``torchrec.modules.crossnet``,
``torchrec.modules.mlp.MLP``); :class:`DLRM` composes them exactly as ``torchrec.models.dlrm.DLRM``
does (same submodule names, so state dicts are interchangeable; tested) and adds the DIN vector.
Every sparse feature has its own table ``t_<feature>`` in one ``EmbeddingBagCollection``, so the
model shards with torchrec's ``DistributedModelParallel`` (``recsys.distributed``).

Shapes: B batch, F sparse features (+1 with DIN), F_d dense features, D embedding dim, L history.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torchrec.models.dlrm import DenseArch, InteractionArch, InteractionDCNArch, OverArch, SparseArch
from torchrec.modules.crossnet import CrossNet, LowRankCrossNet
from torchrec.modules.embedding_configs import EmbeddingBagConfig, EmbeddingConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection
from torchrec.modules.mlp import MLP
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

DIN_ITEM, DIN_HISTORY = "din_item", "din_history"  # the KJT keys the DIN arch reads


class DotInteractionArch(InteractionArch):
    """torchrec's DLRM dot interaction, plus the sizes the model checks:
    dense (B, D), sparse (B, F, D) -> (B, D + (F+1)F/2)."""

    def __init__(self, num_sparse_features: int, embedding_dim: int) -> None:
        if num_sparse_features < 1:
            raise ValueError("the dot interaction needs at least one sparse feature")
        super().__init__(num_sparse_features)
        self.D = embedding_dim
        self.output_dim: int = embedding_dim + (num_sparse_features + 1) * num_sparse_features // 2


class CrossNetInteractionArch(InteractionDCNArch):
    """torchrec's DCN-v2 interaction over the concatenated F+1 vectors:
    dense (B, D), sparse (B, F, D) -> (B, (F+1) D). ``low_rank=None``: full-rank ``CrossNet``."""

    def __init__(self, num_sparse_features: int, embedding_dim: int, num_layers: int = 3, low_rank: int | None = 64) -> None:
        n = (num_sparse_features + 1) * embedding_dim
        crossnet = CrossNet(n, num_layers) if low_rank is None else LowRankCrossNet(n, num_layers, low_rank)
        super().__init__(num_sparse_features, crossnet)
        self.D = embedding_dim
        self.output_dim: int = n


def interaction_factory(kind: str = "dot", num_layers: int = 3, low_rank: int | None = 32) -> Callable[[int, int], nn.Module]:
    """``"dot"`` (DLRM) or ``"dcn"`` (DCN-v2) as a factory ``(F, D) -> interaction``: a JSON-able spec."""
    if kind == "dot":
        return DotInteractionArch
    if kind == "dcn":
        return lambda f, d: CrossNetInteractionArch(f, d, num_layers=num_layers, low_rank=low_rank)
    raise ValueError(f"interaction must be 'dot' or 'dcn', got {kind!r}")


class DINArch(nn.Module):
    """DIN local activation unit over the recent history (Zhou et al. 2018, fig. 2).

    Reads two KJT keys that share one item table ``t_din`` (unpooled lookups through a torchrec
    ``EmbeddingCollection``): ``din_item`` (one id per row, the candidate) and ``din_history``
    (the row's last <= L history items). Output (B, D): ``sum_j a(h_j, c) h_j`` with
    ``a = MLP([h, c, h*c, h-c])`` (no softmax, as in the paper); an empty history gives zeros.
    """

    def __init__(self, n_items: int, embedding_dim: int, history_len: int, layers: Sequence[int] = (36,)) -> None:
        super().__init__()
        self.L, self.D = int(history_len), int(embedding_dim)
        self.embedding_collection = EmbeddingCollection(tables=[EmbeddingConfig(
            name="t_din", embedding_dim=embedding_dim, num_embeddings=n_items, feature_names=[DIN_ITEM, DIN_HISTORY])])
        self.attention = nn.Sequential(MLP(4 * embedding_dim, list(layers), activation="relu"), nn.Linear(layers[-1], 1))

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        jt = self.embedding_collection(features)
        cand = jt[DIN_ITEM].to_padded_dense(1)[:, 0]  # (B, D)
        hist = jt[DIN_HISTORY].to_padded_dense(self.L)  # (B, L, D), zero-padded
        mask = torch.arange(self.L, device=hist.device)[None, :] < jt[DIN_HISTORY].lengths()[:, None]  # (B, L)
        c = cand.unsqueeze(1).expand_as(hist)
        w = self.attention(torch.cat([hist, c, hist * c, hist - c], dim=-1)).squeeze(-1)  # (B, L)
        return (w.masked_fill(~mask, 0.0).unsqueeze(-1) * hist).sum(1)  # (B, D)


class DLRM(nn.Module):
    """torchrec arches composed as ``torchrec.models.dlrm.DLRM`` does, plus an optional DIN vector.

    forward(dense (B, F_d) float, sparse KJT with B rows per key) -> logits (B,)

    With ``din``, the DIN output is stacked after the F pooled embeddings, so the interaction
    sees F+1 feature vectors (and the dense one).
    """

    def __init__(self, sparse_arch: SparseArch, dense_arch: DenseArch, inter_arch: nn.Module, over_arch: OverArch,
                 din: DINArch | None = None) -> None:
        super().__init__()
        f = sparse_arch.F + (din is not None)
        if getattr(inter_arch, "F", f) != f or getattr(inter_arch, "D", sparse_arch.D) != sparse_arch.D:
            raise ValueError(f"interaction built for F={inter_arch.F}, D={inter_arch.D}; the model has F={f}, D={sparse_arch.D}")
        if din is not None and din.D != sparse_arch.D:
            raise ValueError(f"DIN arch has D={din.D}, embeddings have D={sparse_arch.D}")
        self.sparse_arch, self.dense_arch, self.inter_arch, self.over_arch = sparse_arch, dense_arch, inter_arch, over_arch
        self.din = din

    @property
    def feature_names(self) -> list[str]:
        """The pooled sparse keys, in table order (the DIN keys come on top when ``din`` is set)."""
        return list(self.sparse_arch.sparse_feature_names)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        d = self.dense_arch(dense)  # (B, D)
        s = self.sparse_arch(sparse)  # (B, F, D)
        if self.din is not None:
            s = torch.cat([s, self.din(sparse).unsqueeze(1)], dim=1)  # (B, F+1, D)
        return self.over_arch(self.inter_arch(dense_features=d, sparse_features=s)).squeeze(1)  # (B,)


def embedding_tables(cardinalities: dict[str, int], embedding_dim: int, device: str | torch.device = "cpu") -> EmbeddingBagCollection:
    """One sum-pooled table ``t_<feature>`` per feature (dict order = F order).

    ``device="meta"`` builds the tables without memory, for sharding (the planner
    materialises only each rank's shards).
    """
    for name, n in cardinalities.items():
        if n < 1:
            raise ValueError(f"feature {name!r} has cardinality {n}; every table needs at least one row")
    tables = [
        EmbeddingBagConfig(name=f"t_{f}", embedding_dim=embedding_dim, num_embeddings=int(n), feature_names=[f], pooling=PoolingType.SUM)
        for f, n in cardinalities.items()
    ]
    return EmbeddingBagCollection(tables=tables, device=torch.device(device))


def build_dlrm(
    cardinalities: dict[str, int],
    num_dense_features: int,
    embedding_dim: int = 16,
    dense_layers: Sequence[int] = (64,),
    over_layers: Sequence[int] = (64, 32),
    interaction: Callable[[int, int], nn.Module] | None = None,
    device: str | torch.device = "cpu",
    din_items: int = 0,
    din_history: int = 20,
    din_layers: Sequence[int] = (36,),
) -> DLRM:
    """Build a DLRM from feature cardinalities.

    ``interaction``: factory ``(num_sparse_features, embedding_dim) -> module`` (see
    :func:`interaction_factory`); default the DLRM dot interaction. The bottom MLP ends at
    ``embedding_dim``. ``din_items > 0`` adds the DIN arch over an item table of that size.
    """
    if num_dense_features < 1:
        raise ValueError(f"the ranker needs at least one dense feature, got {num_dense_features}")
    if not cardinalities:
        raise ValueError("the ranker needs at least one sparse feature")
    sparse = SparseArch(embedding_tables(cardinalities, embedding_dim, device))
    dense = DenseArch(num_dense_features, [*dense_layers, embedding_dim])  # dense arches stay on the CPU/default device
    din = DINArch(din_items, embedding_dim, din_history, din_layers) if din_items > 0 else None
    inter = (interaction or DotInteractionArch)(sparse.F + (din is not None), embedding_dim)
    over = OverArch(inter.output_dim, [*over_layers, 1])
    return DLRM(sparse, dense, inter, over, din)
