"""Per-user evaluation of served pipelines and trained models, for paired tests between table rows.

A pipeline row is the server's own config (``configs/serve.yaml`` + ``pipeline=<name>`` + overrides,
built by ``recsys.pipeline.build.build_recommender`` with ``history=<stage>``: train for validation,
train + valid for test, so the held-out item is never part of the past); a model row is a training
run's best checkpoint scored over the full catalogue with the user's past masked
(``seq_retrieval_report.per_user_ndcg``). Both give user_idx -> NDCG@10 of the one held-out item,
the quantity the Evaluator averages, so two rows can be compared user by user (Wilcoxon signed-rank).
"""

from __future__ import annotations

import numpy as np

STAGE_PREFIX = {"valid": "val", "test": "test"}
# the filters of configs/pipeline/untrained.yaml other than `consumed` (the protocol masks what was
# consumed in every row, so that one is always on)
FILTERS = ("available", "age", "negative", "constraints")
DIVERSIFY = ("mmr", "category_cap", "exploration")


def off(*stages: str) -> list[str]:
    """Overrides switching pipeline stages off."""
    return [f"pipeline.stages.{s}=null" for s in stages]


def runs_for(seed: int, ranker: str | None = "seq_dlrm", runs_root: str = "outputs/train", data: str = "ml100k") -> list[str]:
    """Overrides pointing seq_two_tower (``ranker=None``) / seq_ranked at one seed's runs."""
    ovr = [f"pipeline.artifacts.two_tower.run_dir={runs_root}/{data}-two_tower_seq-seed{seed}"]
    return ovr + ([f"pipeline.artifacts.ranker.run_dir={runs_root}/{data}-{ranker}-seed{seed}"] if ranker else [])


def evaluate_lists(overrides, stage: str, max_users: int | None = None, sample_seed: int = 0, k: int = 10) -> dict:
    """Build the served recommender of ``overrides`` for ``stage`` and evaluate its top-k lists.

    -> {"metrics": Evaluator.evaluate_topk output + latency, "per_user": {user_idx: NDCG@k}}.
    """
    from recsys.eval.evaluator import Evaluator
    from recsys.pipeline.build import build_recommender, compose_serve
    from recsys.pipeline.evaluate import pipeline_topk

    rec = build_recommender(compose_serve([*overrides, f"history={stage}"]))
    part = rec.split.part(stage)
    users = np.unique(part["user_idx"].to_numpy())
    if max_users is not None and len(users) > max_users:
        users = np.sort(np.random.default_rng(sample_seed).choice(users, max_users, replace=False))
    topk, lat = pipeline_topk(rec, users, k, progress=False)
    ev = Evaluator(ks=(k,), item_embeddings=rec.text_emb, progress=False)
    metrics = ev.evaluate_topk(topk, users, part, stage=stage, dataset=rec.dataset, split=rec.split)
    metrics.update({"latency_ms/p50": float(np.percentile(lat, 50)), "latency_ms/p99": float(np.percentile(lat, 99))})
    target = dict(zip(part["user_idx"].tolist(), part["item_idx"].tolist()))
    return {"metrics": metrics, "per_user": per_user_ndcg(topk, users, target)}


def per_user_ndcg(topk: np.ndarray, users: np.ndarray, target: dict) -> dict[int, float]:
    """(U, k) lists + user -> held-out item  ->  user -> NDCG@k (one relevant item: 1/log2(rank + 2))."""
    out = {}
    for row, u in zip(topk, users.tolist()):
        pos = np.flatnonzero(row == target[u])
        out[int(u)] = float(1.0 / np.log2(pos[0] + 2)) if len(pos) else 0.0
    return out


def model_per_user(run_dir, dataset_dir, stage: str) -> dict[int, float]:
    """A training run's best checkpoint over the full catalogue (consumed masked): user -> NDCG@10."""
    from recsys.data.io import load_dataset, load_split
    from seq_retrieval_report import load_model
    from seq_retrieval_report import per_user_ndcg as model_ndcg
    from recsys.utils.run_dir import resolve_run

    ds, sp = load_dataset(dataset_dir), load_split(dataset_dir, "loo")
    return model_ndcg(load_model(resolve_run(run_dir), str(dataset_dir)), ds, sp, stage)


def paired(new: dict, base: dict) -> dict:
    """recsys.eval.paired.paired_test over the users both rows scored (user_idx -> value dicts)."""
    from recsys.eval.paired import paired_test

    users = sorted(set(new) & set(base))
    return paired_test([new[u] for u in users], [base[u] for u in users])


def mean_per_user(per_seed: list[dict]) -> dict[int, float]:
    """Each user's value averaged over seeds (the paired test of a 3-seed row against another)."""
    users = set.intersection(*(set(d) for d in per_seed))
    return {u: float(np.mean([d[u] for d in per_seed])) for u in users}
