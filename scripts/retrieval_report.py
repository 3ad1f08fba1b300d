"""Write experiments/ml100k/retrieval.md from a trained two-tower run.

    python -m recsys.train experiment=ml100k/two_tower            # -> outputs/train/<run>/
    python scripts/retrieval_report.py --run-dir outputs/train/<run> --dataset-dir data/ml100k

Everything is leave-one-out, full ranking over all items with consumed items masked
(``recsys.eval.evaluator.Evaluator``), on the test part (history = train + valid):

1. deep-cutoff table (Recall@10/20/50/100/200, NDCG@10, MRR@10): Popularity and
   ItemKNN are fitted here (seconds); BPR-MF / SASRec rows come from the
   baselines report (``experiments/ml100k/baselines.json``, written by
   ``scripts/run_baselines.py``) where it exists (its cutoffs stop at 50);
2. candidate recall: Recall@200 of each source alone and of the merged set
   (``CandidateGenerator``: two-tower ANN + ItemKNN item-to-item + time-decayed
   popularity + MiniLM content, RRF merge, per-source caps);
3. ANN recall@100 / QPS sweeps of each index kind over the two-tower item
   embeddings, queried with the test users' vectors.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

KS = (10, 20, 50, 100, 200)
COLS = [("Recall@10", "recall@10"), ("Recall@20", "recall@20"), ("Recall@50", "recall@50"), ("Recall@100", "recall@100"),
        ("Recall@200", "recall@200"), ("NDCG@10", "ndcg@10"), ("MRR@10", "mrr@10")]


def row(name: str, m: dict) -> str:
    cells = [f"{m[f'test/{k}']:.4f}" if f"test/{k}" in m else "-" for _, k in COLS]
    return f"| {name} | " + " | ".join(cells) + " |"


def candidate_recall(gen_sources, merger_caps, weights, ds, split, k=200) -> dict:
    """Recall@k of each source alone and of the merged set, test users, consumed items excluded."""
    from recsys.core.candidates import UserContext
    from recsys.data.splits import chronological
    from recsys.retrieval.merge import CandidateGenerator, CandidateMerger

    hist = chronological(split.history_for("test"))
    seqs = {u: g["item_idx"].to_numpy() for u, g in hist.groupby("user_idx")}
    targets = dict(zip(split.test["user_idx"], split.test["item_idx"]))
    gen = CandidateGenerator(gen_sources, CandidateMerger(caps=merger_caps, default_cap=k, weights=weights))
    hits = {s.name: 0 for s in gen_sources} | {"merged": 0, "union": 0}
    union_sizes = []
    sizes, ms = [], []
    for u, t in targets.items():
        ctx = UserContext(user_idx=int(u), history=seqs.get(u, np.zeros(0, np.int64)))
        t0 = time.perf_counter()
        merged = gen(ctx, k)
        ms.append(1000 * (time.perf_counter() - t0))
        sizes.append(len(merged))
        hits["merged"] += int(t in set(merged.items.tolist()))
        union = gen(ctx, None)  # every capped candidate, no cut at k
        union_sizes.append(len(union))
        hits["union"] += int(t in set(union.items.tolist()))
        for s in gen_sources:  # each source alone, asked for the full k
            hits[s.name] += int(t in set(s(ctx, k).items.tolist()))
    n = len(targets)
    return {"recall": {s: h / n for s, h in hits.items()}, "n_users": n, "mean_size": float(np.mean(sizes)),
            "mean_union_size": float(np.mean(union_sizes)),
            "ms_per_request": float(np.mean(ms))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--dataset-dir", required=True)
    p.add_argument("--split", default="loo")
    p.add_argument("--baselines", default="outputs/baselines", help="run dirs of scripts/run_baselines.py")
    p.add_argument("--ablations", default=None, help="JSON list of {name, metrics} rows to add (tuning runs)")
    p.add_argument("--two-tower-weight", type=float, default=2.0, help="RRF weight of the two-tower list")
    p.add_argument("--out", default="experiments/ml100k/retrieval.md")
    a = p.parse_args()
    torch.set_num_threads(1)

    from recsys.data.io import load_dataset, load_split
    from recsys.eval.evaluator import Evaluator
    from recsys.models.itemknn import ItemKNN
    from recsys.models.lit_two_tower import LitTwoTower
    from recsys.models.pop import Popularity
    from recsys.retrieval import ann_eval
    from recsys.retrieval.index import ItemIndex
    from recsys.retrieval.sources import ContentSource, ItemToItemSource, PopularitySource, TwoTowerSource

    run = Path(a.run_dir)
    ds, split = load_dataset(a.dataset_dir), load_split(a.dataset_dir, a.split)
    ckpt = next(p for p in [run / "checkpoints" / "best.ckpt", *sorted((run / "checkpoints").glob("epoch_*.ckpt")),
                            run / "checkpoints" / "last.ckpt"] if p.exists())
    model = LitTwoTower.from_checkpoint(ckpt, dataset_dir=a.dataset_dir).eval()
    ev = Evaluator(ks=KS, metrics=("recall", "ndcg", "mrr"), beyond_metrics=(), progress=False)
    results = {"Two-tower (ours)": ev.evaluate(model, ds, split, "test")}
    knn = ItemKNN(ds.meta).fit(ds, split)
    results = {"Popularity": ev.evaluate(Popularity(ds.meta).fit(ds, split), ds, split, "test"),
               "ItemKNN": ev.evaluate(knn, ds, split, "test"), **results}
    # Trained baselines from scripts/run_baselines.py runs (their configs; its cutoffs stop at 50).
    for key, name in (("pop", "Popularity"), ("itemknn", "ItemKNN"), ("bpr", "BPR-MF"), ("sasrec", "SASRec")):
        for mfile in sorted(Path(a.baselines).glob(f"{key}-seed*/metrics.json")):
            m = json.loads(mfile.read_text())
            if "test/ndcg@10" in m:
                results[f"{name} ({mfile.parent.name}, run_baselines)"] = m
    if a.ablations:
        for r in json.loads(Path(a.ablations).read_text()):
            results[r["name"]] = r["metrics"]

    # Candidate sources over the same model and data.
    items = model.item_embeddings().numpy()
    text = np.load(Path(a.dataset_dir) / "item_text_emb.npy")
    cats = ds.items.sort_values("item_idx")["categories"].tolist()
    sources = [TwoTowerSource(model, ItemIndex("flat", device="cpu").build(items)),
               ItemToItemSource.from_similarity(knn.sim, n_neighbours=100),
               PopularitySource(split.history_for("test"), ds.meta.n_items, half_life_days=30, item_categories=cats),
               ContentSource(text, cats)]
    caps = {"two_tower": 200, "item2item": 100, "popularity": 50, "content": 50}
    weights = {"two_tower": a.two_tower_weight}
    cand = candidate_recall(sources, caps, weights, ds, split, k=200)

    # ANN sweeps on the real item embeddings with the test users' vectors as queries.
    from recsys.data.history import History

    h = History.from_interactions(split.history_for("test"))
    with torch.no_grad():
        queries = model.user_embeddings(h.users, h).numpy()
    ann_rows = []
    for kind, vals in (("flat", []), ("ivf_flat", [1, 2, 4, 8, 16]), ("ivf_pq", [1, 2, 4, 8, 16]), ("hnsw", [8, 16, 32, 64, 128])):
        idx = ItemIndex(kind, pq_m=8, hnsw_m=32, device="cpu").build(items)
        ann_rows += ann_eval.evaluate(items, queries, idx, k=100, values=vals)
    out = Path(a.out)
    ann_eval.plot(ann_rows, out.with_name("retrieval_ann_ml100k.png"), f"ML-100K two-tower items ({len(items)}), {len(queries)} user queries")

    lines = ["# Retrieval on MovieLens-100K (leave-one-out, full ranking)", "",
             f"Run: `{run}` (checkpoint `{ckpt.name}`), dataset `{a.dataset_dir}` "
             f"({ds.meta.n_users} users, {ds.meta.n_items} items, {ds.meta.n_interactions} interactions, split `{a.split}`). "
             f"Test part, history = train + valid, consumed items masked, {results['Two-tower (ours)']['test/n_users']:.0f} users. "
             f"CPU, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}.", "",
             "## Full-ranking accuracy", "",
             "| Model | " + " | ".join(c for c, _ in COLS) + " |", "|" + "---|" * (len(COLS) + 1)]
    lines += [row(n, m) for n, m in results.items()]
    lines += ["", "## Candidate recall at depth 200 (what later stages start from)", "",
              f"Caps per source in the merge: {caps}; RRF fusion (k=60, weights {weights}); {cand['n_users']} test users; "
              f"mean merged size {cand['mean_size']:.0f}; {cand['ms_per_request']:.1f} ms per request (all sources + merge, one thread).", "",
              "| Candidate set | Recall@200 |", "|---|---|"]
    lines += [f"| {s} alone | {r:.4f} |" for s, r in cand["recall"].items() if s not in ("merged", "union")]
    lines += [f"| **merged, top 200** | **{cand['recall']['merged']:.4f}** |",
              f"| merged, all capped candidates (mean {cand['mean_union_size']:.0f} items) | {cand['recall']['union']:.4f} |", "",
              "## ANN over the two-tower item embeddings", "",
              f"Recall@100 against exact inner-product search, queries = the {len(queries)} users' vectors "
              "(one batched search call; QPS on a shared 2-core CPU, so read them as relative).", "",
              ann_eval.format_table(ann_rows, 100), "", "![recall vs QPS](retrieval_ann_ml100k.png)", ""]
    out.write_text("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps({"results": results, "candidates": cand, "ann": ann_rows}, indent=2, default=float))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
