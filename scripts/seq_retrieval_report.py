"""Write experiments/ml100k/retrieval.md: the retrievers over seeds, and candidate recall per source.

(``scripts/retrieval_report.py`` is the older one-run report of the bag-of-items two-tower that
``scripts/reproduce_ml100k.py`` calls into its own work directory.)

    for s in 0 1 2; do
      python -m recsys.train experiment=ml100k/two_tower_seq seed=$s 'eval.ks=[10,20,50,100,200]'
      python -m recsys.train experiment=ml100k/two_tower seed=$s 'eval.ks=[10,20,50,100,200]'
      python -m recsys.train experiment=ml100k/sasrec seed=$s 'eval.ks=[10,20,50,100,200]'
    done
    python scripts/seq_retrieval_report.py --dataset-dir data/ml100k \
        --seq-runs 'outputs/train/ml100k-two_tower_seq-seed?' --bag-runs 'outputs/train/ml100k-two_tower-seed?' \
        --sasrec-runs 'outputs/train/ml100k-sasrec-seed?'

Everything is leave-one-out, full ranking over all items with consumed items masked
(``recsys.eval.evaluator.Evaluator``), on the test part (history = train + valid):

1. full-ranking accuracy, mean ± std over the seeds' runs (their ``metrics.json``;
   Popularity and ItemKNN are fitted here), and paired tests on per-user NDCG@10
   (each user's value averaged over seeds; Wilcoxon signed-rank and paired t);
2. candidate recall@50/100/200 of each source alone and of the merged set
   (``recsys.retrieval.merge.CandidateMerger``: RRF over capped lists) for the sequential
   two-tower + ItemKNN item-to-item + time-decayed popularity + MiniLM content, and the
   same with the bag-of-items two-tower instead; the two-tower's RRF weight is chosen on
   the validation part (history = train), then test is read once;
3. ANN recall@100 / QPS of each index kind over the first sequential run's item embeddings.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

TRAIN_COMMANDS = [
    "for s in 0 1 2; do  # nice -n 10, OMP_NUM_THREADS=1",
    "  python -m recsys.train experiment=ml100k/two_tower_seq seed=$s 'eval.ks=[10,20,50,100,200]'",
    "  python -m recsys.train experiment=ml100k/two_tower seed=$s 'eval.ks=[10,20,50,100,200]'",
    "  python -m recsys.train experiment=ml100k/sasrec seed=$s 'eval.ks=[10,20,50,100,200]'",
    "done",
]
KS = (10, 50, 100, 200)
DEPTHS = (50, 100, 200)
CAPS = {"two_tower_seq": 200, "two_tower": 200, "item2item": 100, "popularity": 50, "content": 50}
SETS = {"sequential two-tower + item2item + popularity + content": ("two_tower_seq", "item2item", "popularity", "content"),
        "bag two-tower + item2item + popularity + content": ("two_tower", "item2item", "popularity", "content")}


def runs_of(pattern: str | None) -> list[Path]:
    """Completed runs only: a directory without metrics.json (a run cut off) is left out."""
    return sorted(Path(p) for p in glob.glob(pattern) if (Path(p) / "metrics.json").exists()) if pattern else []


def checkpoint_of(run: Path) -> Path:
    """The best checkpoint of a run (``best_checkpoint`` in metrics.json), else its only epoch file."""
    best = json.loads((run / "metrics.json").read_text()).get("best_checkpoint")
    if best and Path(best).exists():
        return Path(best)
    return sorted((run / "checkpoints").glob("epoch_*.ckpt"))[-1]


def load_model(run: Path, dataset_dir: str):
    """The run's model class (its ``.hydra/config.yaml``) from its best checkpoint.

    Weights-only loading (``recsys.utils.artifacts.load_torch``): no pickled code runs.
    """
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from recsys.models.lit_two_tower import LitTwoTower
    from recsys.utils.artifacts import load_torch

    cls = get_class(OmegaConf.load(run / ".hydra" / "config.yaml").model.module._target_)
    ckpt = load_torch(checkpoint_of(run))  # weights only, the project's allow-list: our runs need no more
    if issubclass(cls, LitTwoTower):
        return cls.from_checkpoint(ckpt, dataset_dir=dataset_dir).eval()
    model = cls(**ckpt["hyper_parameters"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


@torch.no_grad()
def per_user_ndcg(model, ds, split, stage: str = "test", k: int = 10) -> dict[int, float]:
    """user_idx -> NDCG@k of the single held-out item, by the Evaluator's rules (consumed masked, ties by index)."""
    from recsys.data.history import History
    from recsys.eval.evaluator import slice_history, topk_deterministic

    part = split.part(stage)
    users = np.unique(part["user_idx"].to_numpy())
    hist = History.from_interactions(split.history_for(stage), users)
    target = dict(zip(part["user_idx"].tolist(), part["item_idx"].tolist()))
    out = {}
    for s in range(0, len(users), 256):
        hb = slice_history(hist, s, min(s + 256, len(users)))
        scores = model.score(hb).float().clone()
        rows = torch.repeat_interleave(torch.arange(len(hb)), hb.lengths)
        scores[rows, hb.items] = float("-inf")
        top = topk_deterministic(scores, k)
        for b, u in enumerate(hb.users.tolist()):
            pos = (top[b] == target[u]).nonzero()
            out[u] = float(1.0 / np.log2(pos.item() + 2)) if len(pos) else 0.0
    return out


def paired(a: dict, b: dict) -> dict:
    from scipy import stats

    users = sorted(set(a) & set(b))
    x, y = np.array([a[u] for u in users]), np.array([b[u] for u in users])
    return {"n_users": len(users), "mean_a": float(x.mean()), "mean_b": float(y.mean()),
            "wilcoxon_p": float(stats.wilcoxon(x, y).pvalue) if np.any(x != y) else 1.0,
            "ttest_p": float(stats.ttest_rel(x, y).pvalue) if np.any(x != y) else 1.0}


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def accuracy_rows(named_runs: dict[str, list[Path]], fitted: dict[str, dict]) -> list[str]:
    cols = ["ndcg@10", *(f"recall@{k}" for k in KS)]
    lines = ["| Model | seeds | NDCG@10 | " + " | ".join(f"Recall@{k}" for k in KS) + " | train s |", "|" + "---|" * (len(cols) + 3)]
    for name, m in fitted.items():
        lines.append(f"| {name} | - | " + " | ".join(f"{m[f'test/{c}']:.4f}" for c in cols) + " | - |")
    for name, runs in named_runs.items():
        ms = [json.loads((r / "metrics.json").read_text()) for r in runs]
        cells = [mean_std([m[f"test/{c}"] for m in ms]) if all(f"test/{c}" in m for m in ms) else "-" for c in cols]
        lines.append(f"| {name} | {len(ms)} | " + " | ".join(cells) + f" | {np.mean([m['train/time_s'] for m in ms]):.0f} |")
    return lines


def source_lists(sources, ds, split, stage: str) -> tuple[list[dict], dict]:
    """Per user of ``stage``: every source's top-200 (consumed items excluded) and the target."""
    from recsys.core.candidates import UserContext
    from recsys.data.splits import chronological

    hist = chronological(split.history_for(stage))
    seqs = {u: g["item_idx"].to_numpy() for u, g in hist.groupby("user_idx", sort=False)}
    targets = dict(zip(split.part(stage)["user_idx"], split.part(stage)["item_idx"]))
    per_user = []
    for u in sorted(targets):
        ctx = UserContext(user_idx=int(u), history=seqs.get(u, np.zeros(0, np.int64)))
        per_user.append({s.name: s(ctx, max(DEPTHS)) for s in sources})
    return per_user, targets


def recall_at(ranked: list[np.ndarray], targets: list[int]) -> dict[int, float]:
    return {k: float(np.mean([t in set(r[:k].tolist()) for r, t in zip(ranked, targets)])) for k in DEPTHS}


def merged_recall(per_user, targets: dict, names, weight: float) -> dict[int, float]:
    from recsys.retrieval.merge import CandidateMerger

    merger = CandidateMerger(caps={n: CAPS[n] for n in names}, weights={n: weight for n in names if n.startswith("two_tower")})
    ranked = [merger({n: lists[n] for n in names}).items for lists in per_user]
    return recall_at(ranked, [targets[u] for u in sorted(targets)])


def candidate_recall(seq_model, bag_model, knn, ds, split, dataset_dir: str, weights=(1.0, 2.0, 4.0, 8.0, 16.0)) -> dict:
    """Per source and merged recall@50/100/200 on test; the two-tower RRF weight chosen on valid."""
    from recsys.retrieval.index import ItemIndex
    from recsys.retrieval.sources import ContentSource, ItemToItemSource, PopularitySource, TwoTowerSource

    text = np.load(Path(dataset_dir) / "item_text_emb.npy")
    cats = ds.items.sort_values("item_idx")["categories"].tolist()
    out: dict = {}
    for stage in ("valid", "test"):
        sources = [TwoTowerSource(m, ItemIndex("flat", device="cpu").build(m.item_embeddings().numpy()), name=n)
                   for n, m in (("two_tower_seq", seq_model), ("two_tower", bag_model)) if m is not None]
        sources += [ItemToItemSource.from_similarity(knn.sim, n_neighbours=100),
                    PopularitySource(split.history_for(stage), ds.meta.n_items, half_life_days=30, item_categories=cats),
                    ContentSource(text, cats)]
        per_user, targets = source_lists(sources, ds, split, stage)
        tg = [targets[u] for u in sorted(targets)]
        out[stage] = {"alone": {s.name: recall_at([lists[s.name].items for lists in per_user], tg) for s in sources}, "merged": {}}
        for label, names in SETS.items():
            if all(n in out[stage]["alone"] for n in names):
                out[stage]["merged"][label] = {w: merged_recall(per_user, targets, names, w) for w in weights}
    out["chosen_weight"] = {label: max(weights, key=lambda w: np.mean(list(v[w].values())))
                            for label, v in out["valid"]["merged"].items()}
    return out


def candidate_rows(per_seed: list[dict]) -> list[str]:
    lines = ["| Candidate set | " + " | ".join(f"Recall@{k}" for k in DEPTHS) + " |", "|---|" + "---|" * len(DEPTHS)]
    # a source (the bag two-tower) may have fewer runs than the sequential one: each row says over how many
    for name in dict.fromkeys(n for r in per_seed for n in r["test"]["alone"]):
        rs = [r for r in per_seed if name in r["test"]["alone"]]
        lines.append(f"| {name} alone ({len(rs)} runs) | " + " | ".join(mean_std([r["test"]["alone"][name][k] for r in rs]) for k in DEPTHS) + " |")
    for label in dict.fromkeys(n for r in per_seed for n in r["test"]["merged"]):
        rs = [r for r in per_seed if label in r["test"]["merged"]]
        w = [r["chosen_weight"][label] for r in rs]
        cells = [mean_std([r["test"]["merged"][label][r["chosen_weight"][label]][k] for r in rs]) for k in DEPTHS]
        lines.append(f"| **merged: {label}** ({len(rs)} runs; two-tower RRF weight {sorted(set(w))}, chosen on valid) | "
                     + " | ".join(cells) + " |")
    return lines


def ann_section(model, ds, split, out: Path) -> tuple[list[str], list[dict]]:
    from recsys.data.history import History
    from recsys.retrieval import ann_eval
    from recsys.retrieval.index import ItemIndex

    items = model.item_embeddings().numpy()
    h = History.from_interactions(split.history_for("test"))
    with torch.no_grad():
        queries = model.user_embeddings(h.users, h).numpy()
    rows = []
    for kind, vals in (("flat", []), ("ivf_flat", [1, 2, 4, 8, 16]), ("ivf_pq", [1, 2, 4, 8, 16]), ("hnsw", [8, 16, 32, 64, 128])):
        rows += ann_eval.evaluate(items, queries, ItemIndex(kind, pq_m=8, hnsw_m=32, device="cpu").build(items), k=100, values=vals)
    ann_eval.plot(rows, out.with_name("retrieval_ann_ml100k.png"), f"ML-100K sequential two-tower items ({len(items)}), {len(queries)} user queries")
    return [f"Recall@100 against exact inner-product search, queries = the {len(queries)} users' vectors "
            "(one batched search call; QPS on a shared 2-core CPU, so read them as relative).", "",
            ann_eval.format_table(rows, 100), "", "![recall vs QPS](retrieval_ann_ml100k.png)"], rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset-dir", required=True)
    p.add_argument("--split", default="loo")
    p.add_argument("--seq-runs", required=True, help="glob of sequential two-tower run dirs (one per seed)")
    p.add_argument("--bag-runs", default=None, help="glob of bag-of-items two-tower run dirs (same seeds)")
    p.add_argument("--sasrec-runs", default=None, help="glob of SASRec run dirs (same seeds)")
    p.add_argument("--out", default="experiments/ml100k/retrieval.md")
    a = p.parse_args()
    torch.set_num_threads(1)

    from recsys.data.io import load_dataset, load_split
    from recsys.eval.evaluator import Evaluator
    from recsys.models.itemknn import ItemKNN
    from recsys.models.pop import Popularity

    ds, split = load_dataset(a.dataset_dir), load_split(a.dataset_dir, a.split)
    runs = {"Two-tower, sequential user tower": runs_of(a.seq_runs), "Two-tower, bag-of-items user tower": runs_of(a.bag_runs),
            "SASRec": runs_of(a.sasrec_runs)}
    runs = {k: v for k, v in runs.items() if v}
    ev = Evaluator(ks=KS, metrics=("recall", "ndcg"), beyond_metrics=(), progress=False, device="cpu")
    knn = ItemKNN(ds.meta).fit(ds, split)
    fitted = {"Popularity": ev.evaluate(Popularity(ds.meta).fit(ds, split), ds, split, "test"), "ItemKNN": ev.evaluate(knn, ds, split, "test")}

    models = {name: [load_model(r, a.dataset_dir) for r in rs] for name, rs in runs.items()}
    ndcg = {name: [per_user_ndcg(m, ds, split) for m in ms] for name, ms in models.items()}
    avg = {name: {u: float(np.mean([d[u] for d in ds_])) for u in ds_[0]} for name, ds_ in ndcg.items()}
    seq = "Two-tower, sequential user tower"
    tests = {other: paired(avg[seq], avg[other]) for other in avg if other != seq}

    bags = models.get("Two-tower, bag-of-items user tower", [])
    per_seed = [candidate_recall(m, bags[i] if i < len(bags) else None, knn, ds, split, a.dataset_dir)
                for i, m in enumerate(models[seq])]
    out = Path(a.out)
    ann_lines, ann_rows = ann_section(models[seq][0], ds, split, out)

    lines = ["# Retrieval on MovieLens-100K (leave-one-out, full ranking)", "",
             f"Dataset `{a.dataset_dir}` ({ds.meta.n_users} users, {ds.meta.n_items} items, {ds.meta.n_interactions} interactions), "
             f"split `{a.split}` (leave-one-out, same-second ties by the source file's row order: `tie_break: row`). "
             f"Test part, history = train + valid, consumed items masked, {len(avg[seq])} users. "
             f"CPU, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; training wall times from a shared, loaded 2-core machine.", "",
             "Runs: " + "; ".join(f"{n}: " + ", ".join(f"`{r}`" for r in rs) for n, rs in runs.items()) + ".", "",
             "## Full-ranking accuracy (test, mean ± std over seeds)", ""]
    lines += accuracy_rows(runs, fitted)
    lines += ["", "Paired tests on per-user NDCG@10 (each user's value averaged over the seeds), sequential tower against:", "",
              "| other model | users | sequential | other | Wilcoxon p | paired t p |", "|---|---|---|---|---|---|"]
    lines += [f"| {o} | {t['n_users']} | {t['mean_a']:.4f} | {t['mean_b']:.4f} | {t['wilcoxon_p']:.2g} | {t['ttest_p']:.2g} |" for o, t in tests.items()]
    lines += ["", "## Candidate recall (what later stages start from)", "",
              f"Each source's top-200 (consumed items excluded); merged = RRF (k=60) over the sources capped at {CAPS}; "
              f"the two-tower's RRF weight is picked from (1, 2, 4, 8, 16) by mean valid recall@50/100/200 of the merged set; "
              f"mean ± std over the {len(per_seed)} sequential runs (each with the bag run in the same position of its sorted glob, where there is one).", ""]
    lines += candidate_rows(per_seed)
    lines += ["", "## ANN over the sequential two-tower's item embeddings (first run)", "", *ann_lines, "",
              "## Commands", "", "```", *TRAIN_COMMANDS, "python " + " ".join(sys.argv), "```", ""]
    out.write_text("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps({"fitted": fitted, "runs": {k: [str(r) for r in v] for k, v in runs.items()},
                                                    "paired": tests, "candidates": per_seed, "ann": ann_rows}, indent=2, default=float))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
