"""Train and evaluate every baseline on MovieLens-100K and write the paper-style table.

    python scripts/run_baselines.py                       # pop, itemknn, bpr, sasrec; seed 42
    python scripts/run_baselines.py --models pop bpr --seeds 1 2 3 -- trainer=gpu

Each model runs through ``recsys.train.run`` with the configs composed from
``configs/`` (``experiment=ml100k/<model>``), exactly as
``python -m recsys.train experiment=ml100k/<model>`` would, so the table
comes from the same code path as any single run. Extra arguments after
``--`` are Hydra overrides applied to every run. Writes
``experiments/ml100k/baselines.md`` (and ``baselines.json`` beside it);
``--from-json experiments/ml100k/baselines.json`` rewrites the report without training.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = [("Recall@10", "recall@10"), ("Recall@20", "recall@20"), ("NDCG@10", "ndcg@10"),
           ("NDCG@20", "ndcg@20"), ("MRR@10", "mrr@10"), ("Coverage@10", "coverage@10")]
BEYOND_COLUMNS = [("ILD (categories)@10", "ild_category@10"), ("Novelty@10 (bits)", "novelty@10"),
                  ("Popularity percentile@10", "popularity_bias@10"), ("ARP@10", "arp@10")]
NAMES = {"pop": "Popularity", "itemknn": "ItemKNN", "bpr": "BPR-MF", "sasrec": "SASRec"}


def compose(model: str, seed: int, overrides: list[str], out_root: Path):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = hydra_compose("train", overrides=[f"experiment=ml100k/{model}", f"seed={seed}", *overrides],
                            return_hydra_config=False)
    with open_dict(cfg):
        # compose() has no Hydra run directory; give each run its own, fresh (no resume,
        # no stale checkpoints of an earlier run of this script).
        run_dir = out_root / f"{model}-seed{seed}"
        shutil.rmtree(run_dir, ignore_errors=True)
        cfg.paths.output_dir = str(run_dir)
        cfg.resume = False
    return cfg


def fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def dataset_notes(dataset_dir: str | Path, split_name: str = "loo") -> str:
    """Size of the prepared dataset, and the same-second ties of the leave-one-out split (measured)."""
    import numpy as np

    from recsys.data.io import load_dataset, load_split

    ds, split = load_dataset(dataset_dir), load_split(dataset_dir, split_name)
    v = split.valid.set_index("user_idx")
    t = split.test.set_index("user_idx").reindex(v.index)
    same = (v["timestamp"] == t["timestamp"]).to_numpy()
    counts = np.bincount(split.train["item_idx"], minlength=ds.meta.n_items)
    # prepared directories from before the tie rule became an option broke ties by item_idx
    rule = ds.meta.extra.get("prepare", {}).get("split", {}).get("tie_break", "item_idx")
    text = f"Dataset after filtering: {ds.meta.n_users:,} users, {ds.meta.n_items:,} items, {ds.meta.n_interactions:,} interactions."
    if same.any():
        text += (
            f" For {same.mean():.0%} of users the validation and test items carry the same timestamp (MovieLens logs"
            f" many ratings in the same second); the split orders such ties by {'the source file' if rule == 'row' else 'item id'}"
            f" (`tie_break: {rule}`), and in those cases the test item has a median of"
            f" {np.median(counts[t['item_idx'].to_numpy()[same]]):.0f} training interactions against"
            f" {np.median(counts[v['item_idx'].to_numpy()[same]]):.0f} for the validation item."
        )
    return text


def write_report(results: dict, seeds: list[int], overrides: list[str], wall: float, path: Path, notes: str = "") -> None:
    results = {m: results[m] for m in sorted(results, key=lambda m: list(NAMES).index(m) if m in NAMES else len(NAMES))}
    header = "| Model | " + " | ".join(c for c, _ in COLUMNS) + " | val NDCG@10 | train s |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 3)]
    for model, runs in results.items():
        cells = [fmt([r[f"test/{key}"] for r in runs]) for _, key in COLUMNS]
        cells.append(fmt([r["val/ndcg@10"] for r in runs]))
        cells.append(f"{statistics.mean(r.get('train/time_s', 0.0) for r in runs):.0f}")
        lines.append(f"| {NAMES.get(model, model)} | " + " | ".join(cells) + " |")
    beyond = ["| Model | " + " | ".join(c for c, _ in BEYOND_COLUMNS) + " |", "|" + "---|" * (len(BEYOND_COLUMNS) + 1)]
    for model, runs in results.items():
        cells = [fmt([r[f"test/{key}"] for r in runs]) if f"test/{key}" in runs[0] else "-" for _, key in BEYOND_COLUMNS]
        beyond.append(f"| {NAMES.get(model, model)} | " + " | ".join(cells) + " |")
    cmd = "python scripts/run_baselines.py " + " ".join(
        (["--models", *results] if list(results) != list(NAMES) else []) + ["--seeds", *map(str, seeds)]
        + (["--", *overrides] if overrides else []))
    users = int(next(iter(results.values()))[0].get("test/n_users", 0))
    seeds_txt = f"mean ± std over seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else f"seed {seeds[0]}"
    text = f"""# MovieLens-100K baselines (leave-one-out, full ranking)

Generated by `scripts/run_baselines.py`; regenerate with

    {cmd}

Protocol. MovieLens-100K (RecBole's offline copy of the GroupLens data), every
rating treated as an implicit interaction, 5-core filtered. Leave-one-out by
time: each user's last interaction is the test target, the second last the
validation target, the rest is training. Models see train for validation and
train + valid for test. Every one of the {users} test users is scored against
**all** items; items already in the user's history are excluded; ties are
broken by item index. Numbers are test-set means over users ({seeds_txt});
trainable models keep the checkpoint with the best validation NDCG@10
(early stopping on it); the validation NDCG@10 column shows that number.
Coverage@10 is the share of the catalogue that appears in at least one top-10
list. No sampled negatives anywhere.

{notes}

{chr(10).join(lines)}

Beyond accuracy (test, top-10 lists; definitions in `recsys/eval/beyond.py`): intra-list
diversity as mean pairwise 1 - Jaccard of genres, novelty as mean -log2 of the items'
training-popularity share, popularity percentile of recommended items (0.5 = catalogue
average) and average recommendation popularity (training interactions per item).

{chr(10).join(beyond)}

Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores (shared), torch CPU,
`OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS", "unset")}`; total wall time {wall / 60:.1f} min.
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    record = {"seeds": seeds, "overrides": overrides, "wall_s": wall, "results": results}
    path.with_suffix(".json").write_text(json.dumps(record, indent=2, sort_keys=True))


REPORT = ROOT / "experiments" / "ml100k" / "baselines.md"


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    overrides: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, overrides = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(NAMES), choices=list(NAMES))
    p.add_argument("--seeds", nargs="+", type=int, default=[42])
    p.add_argument("--out", type=Path, default=None,
                   help=f"report path (default: {REPORT.relative_to(ROOT)} for the full run of every model with no "
                        "overrides, else <runs-dir>/baselines.md, so a partial or shortened run never replaces it)")
    p.add_argument("--runs-dir", type=Path, default=ROOT / "outputs" / "baselines")
    p.add_argument("--from-json", type=Path, default=None,
                   help="rewrite the report from a baselines.json of an earlier run instead of training")
    args = p.parse_args(argv)
    if args.out is None:
        full = args.from_json is not None or (set(args.models) == set(NAMES) and not overrides)
        args.out = REPORT if full else args.runs_dir / "baselines.md"
        if not full:
            print(f"a partial or overridden run: the report goes to {args.out} "
                  f"({REPORT.relative_to(ROOT)} keeps the full run; --out chooses)", flush=True)
    os.environ.setdefault("WANDB_MODE", "offline")

    from recsys.train import prepare_data, run

    if args.from_json:
        record = json.loads(args.from_json.read_text())
        cfg = compose(next(iter(record["results"])), record["seeds"][0], ["logger=none", *record["overrides"]], args.runs_dir)
        notes = dataset_notes(prepare_data(cfg)[0], cfg.data.split.name)
        write_report(record["results"], record["seeds"], record["overrides"], record["wall_s"], args.out, notes)
        print(f"wrote {args.out}")
        return record["results"]

    t0 = time.perf_counter()
    artifacts: dict = {}
    results: dict[str, list[dict]] = {}
    for model in args.models:
        for seed in args.seeds:
            cfg = compose(model, seed, ["logger=none", "eval.progress=false", *overrides], args.runs_dir)
            metrics, artifacts = run(cfg)
            results.setdefault(model, []).append({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
            print(f"{model} seed {seed}: test/ndcg@10 {metrics['test/ndcg@10']:.4f}", flush=True)
    notes = dataset_notes(artifacts["dataset_dir"], cfg.data.split.name)
    write_report(results, args.seeds, overrides, time.perf_counter() - t0, args.out, notes)
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
