"""DLRM-style ranker in the Arch vocabulary: SparseArch, DenseArch, interaction, OverArch.

Papers:
- DLRM: Naumov et al. 2019, "Deep Learning Recommendation Model for
  Personalization and Recommendation Systems" (arXiv:1906.00091). Dense
  features go through a bottom MLP to the embedding dimension D; the pairwise
  dot products of all F+1 vectors (F pooled embeddings + the dense vector)
  feed a top MLP.
- DCN-v2: Wang et al. 2021, "DCN V2: Improved Deep & Cross Network and
  Practical Lessons for Web-scale Learning to Rank Systems" (WWW '21).
  The F+1 vectors are concatenated and crossed explicitly,
  ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l`` (low-rank ``W_l = U_l V_l``).

Sparse features arrive as one torchrec ``KeyedJaggedTensor`` whose keys are
feature names; every feature has its own table ``t_<feature>`` of dimension D
in one ``EmbeddingBagCollection``, so the same model shards with torchrec's
``DistributedModelParallel`` (see ``recsys.distributed``) and runs unsharded
on one CPU.

Shapes: B batch, F sparse features, F_d dense features, D embedding dim.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


def mlp(in_features: int, layer_sizes: Sequence[int], last_activation: bool = True) -> nn.Sequential:
    """Linear + ReLU stack; ``last_activation=False`` leaves the last layer linear (logits)."""
    if not layer_sizes:
        raise ValueError("an MLP needs at least one layer size")
    layers: list[nn.Module] = []
    for i, out in enumerate(layer_sizes):
        layers.append(nn.Linear(in_features, out))
        if last_activation or i < len(layer_sizes) - 1:
            layers.append(nn.ReLU())
        in_features = out
    return nn.Sequential(*layers)


class SparseArch(nn.Module):
    """Pooled lookups of every sparse feature, stacked.

    Input KJT (keys f_1..f_F, B rows each)::

        key   b=0      b=1     ...
        f_1   [3]      [7]             one id per row (user, item, gender...)
        f_2   [0, 4]   []              bags (categories); empty bag -> zero vector

    Output: (B, F, D), features in ``feature_names`` order.
    """

    def __init__(self, embedding_bag_collection: EmbeddingBagCollection) -> None:
        super().__init__()
        configs = embedding_bag_collection.embedding_bag_configs()
        if not configs:
            raise ValueError("SparseArch needs at least one embedding table")
        dims = {c.embedding_dim for c in configs}
        # Dot interaction and the stacked (B, F, D) layout need one shared D.
        if len(dims) != 1:
            raise ValueError(f"all tables must share one embedding_dim, got {sorted(dims)}")
        self.embedding_bag_collection = embedding_bag_collection
        self.D: int = dims.pop()
        self.feature_names: list[str] = [f for c in configs for f in c.feature_names]
        self.F: int = len(self.feature_names)

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        pooled = self.embedding_bag_collection(features).to_dict()  # name -> (B, D)
        return torch.stack([pooled[f] for f in self.feature_names], dim=1)  # (B, F, D)


class DenseArch(nn.Module):
    """Bottom MLP: (B, F_d) dense features -> (B, D), ReLU after every layer as in DLRM."""

    def __init__(self, in_features: int, layer_sizes: Sequence[int]) -> None:
        super().__init__()
        if in_features < 1:
            raise ValueError(f"DenseArch needs at least one dense feature, got {in_features}")
        self.in_features = in_features
        self.out_features: int = int(layer_sizes[-1])
        self.model = mlp(in_features, layer_sizes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 2 or features.shape[1] != self.in_features:
            raise ValueError(f"dense features must be (B, {self.in_features}), got {tuple(features.shape)}")
        return self.model(features)  # (B, D)


class InteractionArch(nn.Module):
    """DLRM dot interaction (Naumov et al. 2019, sec. 2.2).

    Stacks the dense vector with the F embeddings (F+1 vectors of size D), takes
    every pairwise dot product i < j once (no self-products), and concatenates
    them to the dense vector:

        dense (B, D), sparse (B, F, D) -> (B, D + (F+1)F/2)
    """

    def __init__(self, num_sparse_features: int, embedding_dim: int) -> None:
        super().__init__()
        if num_sparse_features < 1:
            raise ValueError("InteractionArch needs at least one sparse feature")
        self.F = num_sparse_features
        self.D = embedding_dim
        # Strict upper triangle of the (F+1, F+1) Gram matrix: each pair once.
        rows, cols = torch.triu_indices(self.F + 1, self.F + 1, offset=1)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)
        self.output_dim: int = self.D + (self.F + 1) * self.F // 2

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        combined = torch.cat([dense.unsqueeze(1), sparse], dim=1)  # (B, F+1, D)
        gram = torch.bmm(combined, combined.transpose(1, 2))  # (B, F+1, F+1)
        pairs = gram[:, self._rows, self._cols]  # (B, (F+1)F/2)
        return torch.cat([dense, pairs], dim=1)  # (B, D + (F+1)F/2)


class CrossLayerStack(nn.Module):
    """DCN-v2 cross layers (Wang et al. 2021, eq. 1), optionally low-rank (sec. 5).

    ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l`` with ``W_l`` full (N x N) when
    ``low_rank`` is None, else ``W_l = U_l V_l`` (N x r)(r x N): (B, N) -> (B, N).
    """

    def __init__(self, in_features: int, num_layers: int, low_rank: int | None = None) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError("CrossLayerStack needs at least one layer")
        self.in_features = in_features
        self.layers = nn.ModuleList(
            nn.Linear(in_features, in_features) if low_rank is None
            else nn.Sequential(nn.Linear(in_features, low_rank, bias=False), nn.Linear(low_rank, in_features))
            for _ in range(num_layers)
        )

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x  # (B, N); the residual keeps lower-order crosses
        return x


class CrossNetInteractionArch(nn.Module):
    """DCN-v2 interaction: concat dense and sparse, cross explicitly.

        dense (B, D), sparse (B, F, D) -> (B, (F+1) D)
    """

    def __init__(self, num_sparse_features: int, embedding_dim: int, num_layers: int = 3, low_rank: int | None = 64) -> None:
        super().__init__()
        self.F = num_sparse_features
        self.D = embedding_dim
        self.output_dim: int = (self.F + 1) * self.D
        self.crossnet = CrossLayerStack(self.output_dim, num_layers, low_rank)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x0 = torch.cat([dense, sparse.flatten(1)], dim=1)  # (B, (F+1) D)
        return self.crossnet(x0)


class OverArch(nn.Module):
    """Top MLP to one logit: (B, in_features) -> (B,). The last layer has no activation."""

    def __init__(self, in_features: int, layer_sizes: Sequence[int]) -> None:
        super().__init__()
        self.in_features = in_features
        self.model = mlp(in_features, [*layer_sizes, 1], last_activation=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model(features).squeeze(1)  # (B,)


class DLRM(nn.Module):
    """SparseArch + DenseArch -> interaction -> OverArch: click/relevance logit per row.

    Built from already-built arches; the constructor checks that they fit
    together (same D, interaction sized for F, over-arch input = interaction output).

    forward(dense (B, F_d) float, sparse KJT with F keys and B rows) -> logits (B,)
    """

    def __init__(self, sparse_arch: SparseArch, dense_arch: DenseArch, interaction: nn.Module, over_arch: OverArch) -> None:
        super().__init__()
        if dense_arch.out_features != sparse_arch.D:
            raise ValueError(f"dense arch outputs {dense_arch.out_features} but embeddings have D={sparse_arch.D}")
        if getattr(interaction, "F", sparse_arch.F) != sparse_arch.F or getattr(interaction, "D", sparse_arch.D) != sparse_arch.D:
            raise ValueError(f"interaction built for F={interaction.F}, D={interaction.D}; sparse arch has F={sparse_arch.F}, D={sparse_arch.D}")
        if interaction.output_dim != over_arch.in_features:
            raise ValueError(f"interaction outputs {interaction.output_dim} but over arch takes {over_arch.in_features}")
        self.sparse_arch = sparse_arch
        self.dense_arch = dense_arch
        self.interaction = interaction
        self.over_arch = over_arch

    @property
    def feature_names(self) -> list[str]:
        return self.sparse_arch.feature_names

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        d = self.dense_arch(dense)  # (B, D)
        s = self.sparse_arch(sparse)  # (B, F, D)
        return self.over_arch(self.interaction(d, s))  # (B,)


def embedding_tables(cardinalities: dict[str, int], embedding_dim: int, device: str | torch.device = "cpu") -> EmbeddingBagCollection:
    """One sum-pooled table ``t_<feature>`` per feature (dict order = F order).

    ``device="meta"`` builds the tables without memory, for sharding (the
    planner materialises only each rank's shards).
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
) -> DLRM:
    """Build a DLRM from feature cardinalities.

    ``interaction`` is a factory ``(num_sparse_features, embedding_dim) -> module``
    (a Hydra ``_partial_`` of ``InteractionArch`` or ``CrossNetInteractionArch``);
    default: the DLRM dot interaction. The bottom MLP ends at ``embedding_dim``.
    """
    ebc = embedding_tables(cardinalities, embedding_dim, device)
    sparse = SparseArch(ebc)
    dense = DenseArch(num_dense_features, [*dense_layers, embedding_dim])
    inter = (interaction or InteractionArch)(sparse.F, embedding_dim)
    over = OverArch(inter.output_dim, over_layers)
    return DLRM(sparse, dense, inter, over)
