"""Sharded DLRM training on Criteo-format rows: the torchrun entry point of the harness.

    torchrun --nproc_per_node=2 -m recsys.distributed.dlrm_job --steps 100 --sharding table_wise
    torchrun --nproc_per_node=8 -m recsys.distributed.dlrm_job --data day_0.tsv --device cuda

Each rank reads its own slice of the rows (rank r takes batches r, r+W, ...),
the planner shards the 26 tables over the ranks, and checkpoints are DCP
directories (``--save``/``--resume``). Without ``--data`` rows come from
``recsys.data.criteo.generate_rows`` (seeded by rank, so runs repeat exactly).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from recsys.data.criteo import N_DENSE, CriteoEncoder, generate_rows, parse_line, read_rows, to_kjt
from recsys.distributed import checkpoint
from recsys.distributed.env import DistEnv, init_from_env, shutdown
from recsys.distributed.loop import train_steps
from recsys.distributed.sharding import describe_plan, make_optimizer, shard_model
from recsys.models.dlrm import CrossNetInteractionArch, build_dlrm


@dataclass
class JobConfig:
    steps: int = 50
    batch_size: int = 64
    rows_per_rank: int = 2048
    hash_size: int = 1000
    embedding_dim: int = 16
    interaction: str = "dot"  # dot | dcn
    sharding: list[str] | None = None  # allowed sharding types; None = planner's choice
    embedding_lr: float = 0.05
    dense_lr: float = 3e-3
    data: str | None = None
    save: str | None = None
    save_at: int | None = None  # step after which to save (default: at the end)
    resume: str | None = None
    seed: int = 0
    device: str | None = None
    result: str | None = None  # rank 0 writes losses/plan JSON here


def _rank_data(cfg: JobConfig, env: DistEnv) -> dict[str, torch.Tensor]:
    enc = CriteoEncoder(hash_size=cfg.hash_size)
    if cfg.data:
        # Rank r keeps rows r, r+W, ...: disjoint shards of one file without a pre-split.
        rows = [r for i, r in enumerate(read_rows(cfg.data, limit=cfg.rows_per_rank * env.world_size)) if i % env.world_size == env.rank]
    else:
        rows = [parse_line(x) for x in generate_rows(cfg.rows_per_rank, seed=cfg.seed * 1000 + env.rank)]
    return enc.transform(rows)


def _batches(data: dict[str, torch.Tensor], batch_size: int, start: int, stop: int):
    n = data["labels"].numel() // batch_size
    for step in range(start, stop):
        i = (step % n) * batch_size
        yield data["dense"][i : i + batch_size], to_kjt(data["sparse"][i : i + batch_size]), data["labels"][i : i + batch_size]


def bce_loss(model, batch) -> torch.Tensor:
    dense, kjt, labels = batch
    return torch.nn.functional.binary_cross_entropy_with_logits(model(dense, kjt), labels)


def run(cfg: JobConfig) -> dict:
    """Train (and optionally save/resume) on this rank; returns losses, plan and a parameter digest."""
    torch.manual_seed(cfg.seed)  # same initial weights on every rank before sharding
    env = init_from_env(device=cfg.device)
    data = _rank_data(cfg, env)
    inter = (lambda f, d: CrossNetInteractionArch(f, d, num_layers=2, low_rank=16)) if cfg.interaction == "dcn" else None
    model = build_dlrm(CriteoEncoder(hash_size=cfg.hash_size).cardinalities(), N_DENSE, cfg.embedding_dim, interaction=inter)
    model = shard_model(model, env.device, cfg.sharding, cfg.batch_size, embedding_optimizer_kwargs={"lr": cfg.embedding_lr})
    opt = make_optimizer(model, torch.optim.Adam, lr=cfg.dense_lr)
    start = 0
    if cfg.resume:
        start = int(checkpoint.load(cfg.resume, model, opt).get("step", 0))
    save_at = cfg.save_at if cfg.save_at is not None else cfg.steps
    losses = train_steps(model, opt, _batches(data, cfg.batch_size, start, min(save_at, cfg.steps)), bce_loss, env.device, env.is_main)
    if cfg.save and start <= save_at <= cfg.steps:
        checkpoint.save(cfg.save, model, opt, extra={"step": save_at})
    if save_at < cfg.steps:
        losses += train_steps(model, opt, _batches(data, cfg.batch_size, max(start, save_at), cfg.steps), bce_loss, env.device, env.is_main)
    result = {"rank": env.rank, "world_size": env.world_size, "start": start, "losses": losses, "plan": describe_plan(model),
              "digest": param_digest(model, env.device), "device": str(env.device), "backend": env.backend}
    if cfg.result and env.is_main:
        Path(cfg.result).write_text(json.dumps(result))
    return result


def param_digest(model, device: torch.device | str) -> dict[str, float]:
    """Sum of all parameters per state-dict key (equal digests = equal params).

    A sharded table's sum is the all-reduce of each rank's local-shard sums: one
    float64 vector on ``device``, the job's device (NCCL reduces CUDA tensors only),
    so a rank that holds no shard of a table joins with a zero on that device.
    Collective: every rank calls it, with the same state-dict keys.
    """
    import torch.distributed as dist

    out: dict[str, float] = {}
    sharded: list[str] = []
    sums: list[torch.Tensor] = []
    for k, v in model.state_dict().items():
        shards = v.local_shards() if hasattr(v, "local_shards") else None
        if shards is None:
            out[k] = float(v.double().sum())
            continue
        sharded.append(k)
        sums.append(sum((sh.tensor.double().sum().to(device) for sh in shards), torch.zeros((), dtype=torch.float64, device=device)))
    if sharded:
        total = torch.stack(sums)  # (n_sharded,) on ``device``
        dist.all_reduce(total)  # each shard lives on exactly one rank
        out.update(zip(sharded, total.tolist()))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    optional_types = {"save_at": int}  # fields whose default is None
    for f in fields(JobConfig):
        if f.name == "sharding":
            continue
        kind = type(f.default) if f.default is not None else optional_types.get(f.name, str)
        p.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default)
    p.add_argument("--sharding", nargs="+", default=None, help="allowed sharding types, e.g. table_wise row_wise")
    cfg = JobConfig(**vars(p.parse_args(argv)))
    try:
        res = run(cfg)
        if res["rank"] == 0:
            ls = res["losses"]
            print(json.dumps({"plan": res["plan"], "first_loss": ls[0] if ls else None, "last_loss": ls[-1] if ls else None}))
    finally:
        shutdown()


if __name__ == "__main__":
    main()
