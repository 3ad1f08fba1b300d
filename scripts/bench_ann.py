"""Recall/QPS of every FAISS index kind on synthetic item embeddings (default 1M x 64).

    python scripts/bench_ann.py --n-items 1000000 --dim 64 --out experiments/ml100k/ann_synthetic

Items are unit vectors drawn around 1,000 random centres (clustered like learned
embeddings; isotropic random vectors are the worst case for any ANN index) and
queries come from the same mixture. Ground truth is exact inner-product search.
Writes <out>.md (table), <out>.json (rows) and <out>.png (recall vs QPS).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from recsys.retrieval import ann_eval
from recsys.retrieval.index import ItemIndex, exact_topk

SWEEPS = {"flat": [], "ivf_flat": [1, 4, 16, 64], "ivf_pq": [1, 4, 16, 64], "hnsw": [16, 64, 256]}


def clustered(n: int, d: int, n_centres: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).normal(size=(n_centres, d)).astype(np.float32)
    x = centres[rng.integers(0, n_centres, n)] + 0.5 * rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-items", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--n-queries", type=int, default=200)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--kinds", nargs="+", default=list(SWEEPS))
    p.add_argument("--hnsw-m", type=int, default=16)
    p.add_argument("--out", default="experiments/ml100k/ann_synthetic")
    a = p.parse_args()
    items = clustered(a.n_items, a.dim, 1000, seed=0)
    queries = clustered(a.n_queries, a.dim, 1000, seed=1)
    t0 = time.perf_counter()
    truth = exact_topk(items, queries, a.k)  # once, shared by every index
    print(f"exact top-{a.k} for {a.n_queries} queries: {time.perf_counter() - t0:.1f} s", flush=True)
    rows = []
    for kind in a.kinds:
        t0 = time.perf_counter()
        index = ItemIndex(kind, nlist=None, pq_m=8, hnsw_m=a.hnsw_m, ef_construction=80).build(items)
        build_s = time.perf_counter() - t0
        for r in ann_eval.evaluate(items, queries, index, a.k, SWEEPS[kind], truth=truth):
            rows.append({**r, "build_s": build_s, "device": "GPU" if index.on_gpu else "CPU"})
            print(json.dumps(rows[-1]), flush=True)
        del index
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = ann_eval.format_table(rows, a.k)
    header = (f"{a.n_items:,} synthetic items x {a.dim} dims, {a.n_queries} queries, k={a.k}, "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; build seconds: "
              + ", ".join(f"{k} {next(r['build_s'] for r in rows if r['kind'] == k):.0f}" for k in dict.fromkeys(r["kind"] for r in rows)))
    out.with_suffix(".md").write_text(header + "\n\n" + table + "\n")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    ann_eval.plot(rows, out.with_suffix(".png"), f"{a.n_items:,} synthetic items")
    print(header)
    print(table)


if __name__ == "__main__":
    main()
