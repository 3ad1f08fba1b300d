"""Training throughput of the DLRM / DCN-v2 ranker on synthetic Criteo-format rows.

    python scripts/bench_dlrm.py                                  # 1 process, DMP + fused row-wise Adagrad
    python scripts/bench_dlrm.py --mode plain                     # unsharded EBC, torch Adagrad
    torchrun --nproc_per_node=2 scripts/bench_dlrm.py --sharding table_wise
    python scripts/bench_dlrm.py --device cuda --batch 8192       # on a GPU box

Rows come from ``recsys.data.criteo.generate_rows`` (TSV lines parsed and
hashed exactly like a real file), encoded once; the timed loop cycles over
them, so the figure is model + optimiser + sharding cost, not parsing.
Prints one JSON line and a markdown table row for experiments/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from recsys.data.criteo import N_DENSE, CriteoEncoder, generate_rows, parse_line, to_kjt
from recsys.models.dlrm import CrossNetInteractionArch, build_dlrm


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=16384, help="generated rows per process")
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--hash-size", type=int, default=100_000, help="rows per table (26 tables)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--dense-layers", type=int, nargs="+", default=[512, 256])
    p.add_argument("--over-layers", type=int, nargs="+", default=[512, 256])
    p.add_argument("--interaction", choices=["dot", "dcn"], default="dot")
    p.add_argument("--mode", choices=["sharded", "plain"], default="sharded")
    p.add_argument("--sharding", nargs="+", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from recsys.distributed.env import init_from_env, shutdown

    env = init_from_env(device=args.device)
    enc = CriteoEncoder(hash_size=args.hash_size)
    data = enc.transform(parse_line(x) for x in generate_rows(args.rows, seed=env.rank, cardinality=args.hash_size))
    inter = (lambda f, d: CrossNetInteractionArch(f, d, num_layers=3, low_rank=64)) if args.interaction == "dcn" else None
    model = build_dlrm(enc.cardinalities(), N_DENSE, args.dim, args.dense_layers, args.over_layers, inter)
    n_emb = sum(p.numel() for n, p in model.named_parameters() if "embedding_bags" in n)
    n_dense = sum(p.numel() for n, p in model.named_parameters() if "embedding_bags" not in n)
    if args.mode == "sharded":
        from recsys.distributed.sharding import describe_plan, make_optimizer, shard_model

        model = shard_model(model, env.device, args.sharding, args.batch)
        opt = make_optimizer(model, torch.optim.Adam, lr=1e-3)
        plan = sorted(set(describe_plan(model).values()))
    else:
        model = model.to(env.device)
        opt = torch.optim.Adagrad(model.parameters(), lr=0.05)
        plan = ["unsharded"]
    n = data["labels"].numel() // args.batch
    batches = [(data["dense"][i * args.batch:(i + 1) * args.batch].to(env.device),
                to_kjt(data["sparse"][i * args.batch:(i + 1) * args.batch]).to(env.device),
                data["labels"][i * args.batch:(i + 1) * args.batch].to(env.device)) for i in range(n)]

    def step(i: int) -> float:
        dense, kjt, labels = batches[i % n]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(dense, kjt), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()  # .item() synchronises, so the timer sees finished work

    for i in range(args.warmup):
        step(i)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(args.steps):
        loss = step(args.warmup + i)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    sps = args.steps * args.batch * env.world_size / dt
    # On a shared CPU box wall time depends on the neighbours; samples per CPU-second of this
    # process does not (with one thread per process it is the uncontended single-core rate).
    sps_cpu = args.steps * args.batch / cpu
    res = {
        "samples_per_s": round(sps, 1), "samples_per_cpu_s_per_proc": round(sps_cpu, 1),
        "load_avg_1m": os.getloadavg()[0], "world_size": env.world_size, "device": str(env.device),
        "device_name": torch.cuda.get_device_name(env.device) if env.device.type == "cuda" else platform.processor() or platform.machine(),
        "threads_per_proc": args.threads, "batch_per_proc": args.batch, "tables": f"26 x {args.hash_size} x {args.dim}",
        "embedding_params": n_emb, "dense_params": n_dense, "interaction": args.interaction, "mode": args.mode,
        "plan": plan, "precision": "fp32", "steps": args.steps, "final_loss": round(loss, 4), "torch": torch.__version__,
    }
    if env.is_main:
        print(json.dumps(res))
        print(f"| {res['device']} x{env.world_size} | {args.mode} ({', '.join(plan)}) | {args.interaction} | {res['tables']} "
              f"({n_emb / 1e6:.1f}M emb + {n_dense / 1e6:.2f}M dense) | {args.batch} | fp32 | {args.threads} | {sps:,.0f} | {sps_cpu:,.0f} |")
    shutdown()


if __name__ == "__main__":
    main()
