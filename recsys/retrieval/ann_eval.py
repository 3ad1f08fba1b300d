"""ANN quality vs speed: recall@K against exact search, queries/second, and a sweep.

    recall@K = |ANN top-K  ∩  exact top-K| / K, averaged over queries

QPS is measured the way an online retriever batches: all queries in one
``search`` call, repeated until at least ``min_seconds`` have passed (so a
fast index is not timed on a single noisy call). Threads are whatever faiss
uses (``OMP_NUM_THREADS``); reports state it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from recsys.retrieval.index import ItemIndex, exact_topk


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """found, truth (B, K) item ids -> mean fraction of the exact top-K that the ANN found."""
    if found.shape != truth.shape:
        raise ValueError(f"found {found.shape} and truth {truth.shape} differ in shape")
    k = truth.shape[1]
    return float(np.mean([len(np.intersect1d(f, t)) / k for f, t in zip(found, truth)]))


def measure(index: ItemIndex, queries: np.ndarray, truth: np.ndarray, min_seconds: float = 0.2) -> dict:
    """Recall@K (K = truth.shape[1]) and queries/second of one index configuration."""
    k = truth.shape[1]
    found = index.search(queries, k)[1]
    n, t0 = 0, time.perf_counter()
    while True:
        index.search(queries, k)
        n += len(queries)
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            break
    return {"recall": recall_at_k(found, truth), "qps": n / elapsed}


def sweep_param(kind: str) -> str | None:
    """The knob a sweep varies: nprobe for IVF, efSearch for HNSW, none for flat."""
    return {"ivf_flat": "nprobe", "ivf_pq": "nprobe", "hnsw": "ef_search"}.get(kind)


def sweep(index: ItemIndex, queries: np.ndarray, truth: np.ndarray, values: list[int]) -> list[dict]:
    """Recall/QPS for each value of the index's knob (see ``sweep_param``); restores the original value."""
    param = sweep_param(index.kind)
    if param is None or not values:
        return [{"kind": index.kind, "param": None, "value": None, **measure(index, queries, truth)}]
    original = index.config[param]
    rows = []
    for v in values:
        index.set_search_params(**{param: int(v)})
        rows.append({"kind": index.kind, "param": param, "value": int(v), **measure(index, queries, truth)})
    index.set_search_params(**{param: original})
    return rows


def evaluate(items: np.ndarray, queries: np.ndarray, index: ItemIndex, k: int = 100,
             values: list[int] | None = None, truth: np.ndarray | None = None) -> list[dict]:
    """Exact top-k as ground truth (pass ``truth`` (B, k) positions to reuse it across indices),
    then the sweep (or one point) of ``index`` (already built on ``items``)."""
    truth = exact_topk(items, queries, k) if truth is None else truth
    truth = index.id_map[truth] if index.id_map is not None else truth
    return sweep(index, queries, truth, list(values or []))


def format_table(rows: list[dict], k: int) -> str:
    """Markdown table of a sweep."""
    lines = [f"| index | knob | value | recall@{k} | queries/s |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['kind']} | {r['param'] or '-'} | {r['value'] if r['value'] is not None else '-'} "
                     f"| {r['recall']:.4f} | {r['qps']:,.0f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Recall (x) vs queries/s (y, log) per index kind, one point per knob value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for kind in dict.fromkeys(r["kind"] for r in rows):
        rs = [r for r in rows if r["kind"] == kind]
        ax.plot([r["recall"] for r in rs], [r["qps"] for r in rs], marker="o", label=kind)
        for r in rs:
            if r["value"] is not None:
                ax.annotate(str(r["value"]), (r["recall"], r["qps"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("recall@K vs exact")
    ax.set_ylabel("queries / s")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
