"""The two-tower model under torchrec DistributedModelParallel (torchrun entry point).

    torchrun --nproc_per_node=2 -m recsys.retrieval.sharded_two_tower --dataset-dir data/ml100k --steps 100
    torchrun --nproc_per_node=8 -m recsys.retrieval.sharded_two_tower --dataset-dir data/ml1m --device cuda \
        --sharding row_wise --save ckpt/

Uses the project's generic harness (``recsys.distributed``): the planner picks
a plan for every ``t_<feature>`` table of both towers (restricted by
``--sharding``), the tables get the fused in-backward optimiser (row-wise
Adagrad) and the dense layers Adam (one owner per parameter), checkpoints
are DCP directories. Each rank trains on its own slice of the next-item
examples (batch r, r+W, ... of a stream that cycles epochs, so every rank runs exactly
``--steps`` steps); in-batch negatives are the rank's batch.

Mean history pooling only: attention pooling uses an unpooled
``EmbeddingCollection``, which the harness does not shard yet.
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from recsys.distributed import checkpoint
from recsys.distributed.env import init_from_env, shutdown
from recsys.distributed.loop import rank_batches, train_steps
from recsys.distributed.sharding import describe_plan, make_optimizer, shard_model


@dataclass
class JobConfig:
    dataset_dir: str
    split: str = "loo"
    steps: int = 50
    batch_size: int = 128
    max_history: int = 20
    dim: int = 32
    temperature: float = 0.1
    embedding_lr: float = 0.05
    dense_lr: float = 3e-3
    sharding: list[str] | None = None
    save: str | None = None
    resume: str | None = None
    seed: int = 0
    device: str | None = None


def build(cfg: JobConfig):
    """-> (TwoTower, ItemFeatures, UserFeatures, TwoTowerDataModule) on CPU, same init on every rank."""
    from recsys.data.io import load_dataset, load_split
    from recsys.data.two_tower_data import TwoTowerDataModule
    from recsys.models.two_tower import ItemTower, TwoTower, UserTower
    from recsys.models.two_tower_features import ItemFeatures, UserFeatures

    ds = load_dataset(cfg.dataset_dir)
    meta = ds.meta
    itf = ItemFeatures.from_dir(cfg.dataset_dir, meta)
    uf = UserFeatures.from_dir(cfg.dataset_dir, meta, max_history=cfg.max_history)
    torch.manual_seed(cfg.seed)
    model = TwoTower(
        UserTower(meta.n_users, meta.n_items, uf.demographics, cfg.dim, cfg.dim, [2 * cfg.dim]),
        ItemTower(meta.n_items, itf.n_categories, itf.n_year_buckets, itf.text_dim, cfg.dim, cfg.dim, [2 * cfg.dim]),
    )
    dm = TwoTowerDataModule(ds, load_split(cfg.dataset_dir, cfg.split), cfg.batch_size, cfg.max_history, seed=cfg.seed)
    return model, itf, uf, dm


def run(cfg: JobConfig) -> dict:
    """Train this rank's share of ``steps`` batches; returns losses and the plan (rank 0 prints)."""
    from recsys.models.two_tower_loss import sampled_softmax_loss, sampling_log_q

    env = init_from_env(device=cfg.device)
    model, itf, uf, dm = build(cfg)
    itf, uf = itf.to(env.device), uf.to(env.device)
    log_q_all = sampling_log_q(((dm.item_counts + 1) / (dm.item_counts.sum() + len(dm.item_counts))).to(env.device), cfg.batch_size)
    model = shard_model(model, env.device, cfg.sharding, cfg.batch_size, embedding_optimizer_kwargs={"lr": cfg.embedding_lr})
    opt = make_optimizer(model, torch.optim.Adam, lr=cfg.dense_lr)
    if cfg.resume:
        checkpoint.load(cfg.resume, model, opt)

    # Exactly cfg.steps batches on every rank (cycling epochs): unequal step counts hang DMP.
    loader = dm.train_dataloader()
    stream = rank_batches(lambda: (tuple(b) for b in loader), env.rank, env.world_size, max(cfg.steps, 1))
    first = next(stream)  # plain tuples: the harness rebuilds containers by type; kept for the final loss

    def loss_fn(m, batch):
        users, items, history = batch
        items = items.to(env.device)
        u, v = m(uf.kjt(users, history), itf.kjt(items), itf.text(items))  # (B, D), (B, D)
        return sampled_softmax_loss(u, v, items, cfg.temperature, log_q_all[items])

    batches = itertools.chain([first], stream) if cfg.steps else []
    losses = train_steps(model, opt, batches, loss_fn, env.device, env.is_main, desc="two-tower")
    if cfg.save:
        checkpoint.save(cfg.save, model, opt, extra={"steps": len(losses)})
    with torch.no_grad():
        eval_loss = float(loss_fn(model, first))  # same batch after training (and after a resume)
    return {"rank": env.rank, "world_size": env.world_size, "losses": losses, "plan": describe_plan(model),
            "eval_loss_first_batch": eval_loss, "batches_per_epoch": len(loader), "device": str(env.device),
            "backend": env.backend}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in JobConfig.__dataclass_fields__.values():
        if f.name == "sharding":
            continue
        kind = type(f.default) if f.default is not None and f.name != "dataset_dir" else str
        p.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default, required=f.name == "dataset_dir")
    p.add_argument("--sharding", nargs="+", default=None, help="allowed sharding types, e.g. table_wise row_wise")
    p.add_argument("--result", default=None, help="rank 0 writes its result JSON here")
    args = vars(p.parse_args(argv))
    result = args.pop("result")
    try:
        res = run(JobConfig(**args))
        if res["rank"] == 0:
            ls = res["losses"]
            summary = {"plan": res["plan"], "first_loss": ls[0] if ls else None, "last_loss": ls[-1] if ls else None}
            print(json.dumps(summary))
            if result:
                Path(result).write_text(json.dumps(res))
    finally:
        shutdown()


if __name__ == "__main__":
    main()
