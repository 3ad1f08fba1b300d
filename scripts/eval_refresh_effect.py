"""What one refresh does with a user's high ratings of a category, stage by stage, on several users.

    OMP_NUM_THREADS=1 nice -n 10 python scripts/eval_refresh_effect.py --users 20 --category Western

For each user with a short history (<= ``--max-history`` interactions) who has none of the category,
the ``--n-rated`` most watched items of the category the user has not seen are rated 5 stars
through the feedback store, the dataset is refreshed (``recsys.serve.refresh``) and the default
pipeline (exploration off) is rebuilt on it. Counted before and after, per user: items of the
category in the served top 20 and top 50, in the merged candidates' top 100, and in each source's
top 20. Prints one JSON row per user, then per count the mean before/after and how many users
went up, stayed, went down. About 20 s per user on one thread.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def counts(rec, user: int, cat_id: int) -> dict:
    """Items of ``cat_id`` in the served lists, the merged candidates and each source's head."""
    has = lambda items: int(sum(cat_id in rec.catalog.category_ids(int(i)) for i in items))  # noqa: E731
    out = {f"served@{k}": has(rec.recommend(user, k=k)[0].items) for k in (20, 50)}
    ctx = rec.contexts.build(user)
    lists = {name: source(ctx, 300) for name, source in rec.pipeline.sources.items()}
    out["merged@100"] = has(rec.pipeline.merger(lists).items[:100])
    out.update({f"{name}@20": has(c.items[:20]) for name, c in lists.items() if len(c)})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset-dir", default=str(ROOT / "data/ml100k"))
    ap.add_argument("--pipeline", default=str(ROOT / "configs/pipeline/untrained.yaml"))
    ap.add_argument("--category", default="Western")
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--max-history", type=int, default=30)
    ap.add_argument("--n-rated", type=int, default=8)
    args = ap.parse_args(argv)

    from omegaconf import OmegaConf

    from recsys.pipeline.recommender import Recommender
    from recsys.serve.refresh import refresh_dataset
    from recsys.serve.stores import Event, open_store

    cfg = OmegaConf.merge(OmegaConf.load(args.pipeline), OmegaConf.from_dotlist(["stages.exploration=null"]))
    before = Recommender(args.dataset_dir, cfg, history="all")
    cat = before.catalog
    cat_id = cat.category_id(args.category)
    if cat_id is None:
        raise SystemExit(f"unknown category {args.category!r}; valid: {', '.join(cat.categories)}")
    lengths = before.dataset.interactions.groupby("user_idx").size()
    rows = []
    for user in (int(u) for u in lengths.index[lengths.to_numpy() <= args.max_history]):
        seen = set(before.contexts.build(user).history.tolist())
        if any(cat_id in cat.category_ids(i) for i in seen):
            continue
        rated = [int(i) for i in np.argsort(-cat.popularity)
                 if cat_id in cat.category_ids(int(i)) and int(i) not in seen][: args.n_rated]
        with tempfile.TemporaryDirectory() as tmp:
            with open_store(Path(tmp) / "fb.sqlite") as store:
                store.log_request("r", None, user, rated)
                store.append_many([Event("r", None, user, i, "rating", 5.0) for i in rated])
            refresh_dataset(args.dataset_dir, Path(tmp) / "fb.sqlite", Path(tmp) / "refreshed")
            after = Recommender(Path(tmp) / "refreshed", cfg, history="all")
            rows.append({"user_idx": user, "before": counts(before, user, cat_id), "after": counts(after, user, cat_id)})
            shutil.rmtree(Path(tmp) / "refreshed")
        print(json.dumps(rows[-1]), flush=True)
        if len(rows) >= args.users:
            break
    summary = {}
    for key in rows[0]["before"]:
        b = np.array([r["before"].get(key, 0) for r in rows])
        a = np.array([r["after"].get(key, 0) for r in rows])
        summary[key] = {"mean_before": round(float(b.mean()), 2), "mean_after": round(float(a.mean()), 2),
                        "up": int((a > b).sum()), "same": int((a == b).sum()), "down": int((a < b).sum())}
    print(json.dumps({"category": args.category, "users": len(rows), "n_rated": args.n_rated, "counts": summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
