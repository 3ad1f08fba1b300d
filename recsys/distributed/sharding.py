"""Shard any model built on torchrec EmbeddingBagCollections with DistributedModelParallel.

One entry point, ``shard_model``:

1. every ``EmbeddingBagCollection`` parameter gets a fused, in-backward
   optimiser (row-wise Adagrad by default) through
   ``torch.distributed.optim._apply_optimizer_in_backward``; the sharder turns
   it into FBGEMM's fused TBE update, so embedding rows are updated inside
   backward and never reach a dense optimiser;
2. torchrec's ``EmbeddingShardingPlanner`` picks a plan over a ``Topology`` of
   the process group, restricted to the sharding types the caller allows;
3. ``DistributedModelParallel`` shards the tables and wraps the dense rest in
   DDP.

``make_optimizer`` then builds the dense optimiser over exactly the parameters
without an in-backward optimiser, combined with the model's fused one for
checkpointing: each parameter has one owner (tested in tests/distributed).

Row-wise (and table-row-wise, grid) sharding: torchrec's stock sharder
offers them only for CUDA (``EmbeddingBagCollectionSharder.sharding_types``);
``AnyDeviceEBCSharder`` offers the CUDA list on every device, which plans and
trains on CPU/gloo too (see docs/distributed.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

SHARDING_TYPES = ("table_wise", "row_wise", "column_wise", "table_row_wise", "table_column_wise", "data_parallel")


def _any_device_sharder_cls():
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder

    class AnyDeviceEBCSharder(EmbeddingBagCollectionSharder):
        """The stock sharder, offering the CUDA sharding types on every device."""

        def sharding_types(self, compute_device_type: str) -> list[str]:
            types = super().sharding_types("cuda")
            # Grid sharding needs a multi-host topology; keep it out of the CPU menu.
            return types if compute_device_type == "cuda" else [t for t in types if t != "grid_shard"]

    return AnyDeviceEBCSharder


def embedding_bag_collections(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """(fqn, module) of every EmbeddingBagCollection inside ``module``."""
    from torchrec.modules.embedding_modules import EmbeddingBagCollection

    return [(n, m) for n, m in module.named_modules() if isinstance(m, EmbeddingBagCollection)]


def apply_fused_embedding_optimizer(module: nn.Module, optimizer_class: type | None = None, **optimizer_kwargs: Any) -> int:
    """Attach an in-backward optimiser to every embedding table; returns the number of tables' params.

    Default: torchrec's row-wise Adagrad (one accumulator per row, the DLRM
    recipe), ``lr=0.05``.
    """
    from torch.distributed.optim import _apply_optimizer_in_backward
    from torchrec.optim import RowWiseAdagrad

    params = [p for _, ebc in embedding_bag_collections(module) for p in ebc.parameters()]
    if not params:
        raise ValueError(f"{type(module).__name__} has no EmbeddingBagCollection to shard")
    kwargs = {"lr": 0.05, **optimizer_kwargs}
    _apply_optimizer_in_backward(optimizer_class or RowWiseAdagrad, params, kwargs)
    return len(params)


def plan_constraints(module: nn.Module, sharding_types: Sequence[str] | None):
    """Per-table ParameterConstraints allowing only ``sharding_types`` (None: planner's free choice)."""
    from torchrec.distributed.planner.types import ParameterConstraints

    if sharding_types is None:
        return None
    bad = [t for t in sharding_types if t not in SHARDING_TYPES]
    if bad:
        raise ValueError(f"unknown sharding types {bad}; choose from {SHARDING_TYPES}")
    tables = [cfg.name for _, ebc in embedding_bag_collections(module) for cfg in ebc.embedding_bag_configs()]
    return {t: ParameterConstraints(sharding_types=list(sharding_types)) for t in tables}


def shard_model(
    module: nn.Module,
    device: torch.device | str = "cpu",
    sharding_types: Sequence[str] | None = None,
    batch_size: int = 512,
    embedding_optimizer: type | None = None,
    embedding_optimizer_kwargs: dict[str, Any] | None = None,
    pg=None,
):
    """Wrap ``module`` in DistributedModelParallel with a planner-chosen plan.

    The default process group must exist (``recsys.distributed.env.init_from_env``).
    ``sharding_types`` restricts every table's options (e.g. ``["row_wise"]``).
    Returns the DMP module; ``model.plan`` is the plan used.
    """
    import torch.distributed as dist
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.types import ShardingEnv

    if not dist.is_initialized():
        raise RuntimeError("shard_model needs a process group: call recsys.distributed.env.init_from_env() first")
    device = torch.device(device)
    pg = pg or dist.GroupMember.WORLD
    apply_fused_embedding_optimizer(module, embedding_optimizer, **(embedding_optimizer_kwargs or {}))
    sharders = [_any_device_sharder_cls()()]
    planner = EmbeddingShardingPlanner(
        topology=Topology(world_size=dist.get_world_size(pg), compute_device=device.type),
        batch_size=batch_size,
        constraints=plan_constraints(module, sharding_types),
        debug=False,
    )
    plan = planner.collective_plan(module, sharders, pg)
    return DistributedModelParallel(module, env=ShardingEnv.from_process_group(pg), device=device, plan=plan, sharders=sharders)


def make_optimizer(model: nn.Module, dense_optimizer: type = torch.optim.Adam, **dense_kwargs: Any):
    """Dense optimiser over the parameters without an in-backward optimiser, combined with the fused one.

    The returned ``CombinedOptimizer`` is what to step and to checkpoint: its
    ``step`` moves dense parameters only (fused embedding updates already
    happened in backward), and its ``state_dict`` holds both states.
    """
    from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    dense = dict(in_backward_optimizer_filter(model.named_parameters()))
    kwargs = {"lr": 1e-3, **dense_kwargs}
    parts = [("dense", KeyedOptimizerWrapper(dense, lambda ps: dense_optimizer(ps, **kwargs)))] if dense else []
    fused = getattr(model, "fused_optimizer", None)
    if fused is not None:
        parts.append(("sparse", fused))
    return CombinedOptimizer(parts)


def describe_plan(model) -> dict[str, str]:
    """Table name -> sharding type chosen by the planner (for logs and tests)."""
    out: dict[str, str] = {}
    for _, module_plan in model.plan.plan.items():
        for table, ps in module_plan.items():
            out[table] = ps.sharding_type
    return out
