"""Offline evaluation of a whole pipeline: top-k lists for every test user, then metrics.

The recommender is the one the server builds (``build_recommender`` over the composed
serve config, :func:`evaluate_config`), except that it sees only what a model would
see at that point of the split (``history=test``: train + valid for test), so the
held-out item is never filtered as "consumed" nor shown to any stage. The lists go through
``Evaluator.evaluate_topk`` (accuracy + coverage, intra-list diversity,
novelty, popularity bias), and the per-request latency is measured around
the pipeline call.
"""

from __future__ import annotations

import time

import numpy as np
from tqdm import tqdm


def pipeline_topk(rec, users: np.ndarray, k: int, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """-> (U, k) item_idx (-1 pads short lists) and (U,) latency in ms."""
    topk = np.full((len(users), k), -1, dtype=np.int64)
    lat = np.zeros(len(users))
    for j, u in enumerate(tqdm(users, desc="pipeline", disable=not progress, leave=False)):
        t = time.perf_counter()
        cands, _ = rec.recommend(int(u), k=k)
        lat[j] = (time.perf_counter() - t) * 1e3
        topk[j, : len(cands)] = cands.items[:k]
    return topk, lat


def evaluate_pipeline(rec, stage: str = "test", k: int = 10, max_users: int | None = None, seed: int = 0,
                      evaluator=None, progress: bool = True) -> dict:
    """Metrics ``<stage>/<metric>@k`` plus ``latency_ms/p50|p95|mean`` over (a sample of) the stage's users."""
    from recsys.eval.evaluator import Evaluator

    if rec.split is None:
        raise ValueError("evaluate_pipeline needs a Recommender with a split")
    if rec.info["history"] != stage:
        raise ValueError(f"evaluating on {stage!r} needs history={stage} (got {rec.info['history']!r}): "
                         "otherwise the held-out items are part of the users' past")
    part = rec.split.part(stage)
    users = np.unique(part["user_idx"].to_numpy())
    if max_users is not None and len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    topk, lat = pipeline_topk(rec, users, k, progress)
    ev = evaluator or Evaluator(ks=(k,), item_embeddings=rec.text_emb, progress=False)
    out = ev.evaluate_topk(topk, users, part, stage=stage, dataset=rec.dataset, split=rec.split)
    out.update({"latency_ms/p50": float(np.percentile(lat, 50)), "latency_ms/p95": float(np.percentile(lat, 95)),
                "latency_ms/mean": float(lat.mean()), "short_lists": float((topk < 0).any(1).mean())})
    return out


def evaluate_config(overrides=(), stage: str = "test", k: int = 10, max_users: int | None = None, seed: int = 0,
                    progress: bool = True) -> tuple[dict, object]:
    """Compose ``configs/serve.yaml`` with ``overrides`` (+ ``history=<stage>``), build it, evaluate it.

    -> (metrics, the Recommender). ``overrides`` are command-line overrides of the server,
    e.g. ``["pipeline.stages.mmr=null", "llm=smollm2", "dataset_dir=data/ml100k"]``.
    """
    from recsys.pipeline.build import build_recommender, compose_serve

    rec = build_recommender(compose_serve([*overrides, f"history={stage}"]))
    return evaluate_pipeline(rec, stage, k=k, max_users=max_users, seed=seed, progress=progress), rec
