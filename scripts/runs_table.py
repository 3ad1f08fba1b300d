"""Markdown table of training runs (mean ± std over each group's seeds) from their ``metrics.json``.

    python scripts/runs_table.py "ours=outputs/train/ml100k-sasrec-seed?" "RecBole settings=outputs/train/rb-seed?"

One row per ``label=glob`` group: runs, val/test NDCG@10, the relative val->test change,
training wall time (``train/time_s``) and epochs; with ``--paired A B`` also a paired test of
test NDCG@10 per user between the groups' best checkpoints (Wilcoxon signed-rank and paired t,
each user's value averaged over the group's seeds; ``seq_retrieval_report.per_user_ndcg``).
"""

from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

import numpy as np


def group(pattern: str) -> list[Path]:
    runs = sorted(Path(p) for p in glob.glob(pattern) if (Path(p) / "metrics.json").exists())
    if not runs:
        raise SystemExit(f"no run with a metrics.json matches {pattern!r}")
    return runs


def ms(values) -> str:
    values = list(values)
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def table(groups: dict[str, list[Path]]) -> list[str]:
    lines = ["| configuration | runs | val NDCG@10 | test NDCG@10 | val -> test | train s | epochs |", "|---|---|---|---|---|---|---|"]
    for label, runs in groups.items():
        m = [json.loads((r / "metrics.json").read_text()) for r in runs]
        val, test = [x["val/ndcg@10"] for x in m], [x["test/ndcg@10"] for x in m]
        drop = 100 * (np.mean(test) / np.mean(val) - 1)
        t = [x["train/time_s"] for x in m]
        ep = [x.get("train/epochs", 0) for x in m]
        secs = f"{np.mean(t):.0f} ± {np.std(t):.0f}" if len(t) > 1 else f"{t[0]:.0f}"
        lines.append(f"| {label} | {len(m)} | {ms(val)} | {ms(test)} | {drop:+.1f}% | {secs} | {np.mean(ep):.0f} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("groups", nargs="+", help="label=glob of run directories")
    p.add_argument("--paired", nargs=2, metavar=("A", "B"), help="labels of two groups to test per user")
    p.add_argument("--dataset-dir", default="data/ml100k")
    a = p.parse_args()
    groups = dict(g.split("=", 1) for g in a.groups)
    groups = {k: group(v) for k, v in groups.items()}
    lines = table(groups)
    if a.paired:
        import sys

        sys.path.insert(0, str(Path(__file__).parent))
        from seq_retrieval_report import load_model, paired, per_user_ndcg

        from recsys.data.io import load_dataset, load_split

        ds, split = load_dataset(a.dataset_dir), load_split(a.dataset_dir, "loo")
        per = {}
        for label in a.paired:
            vals = [per_user_ndcg(load_model(r, a.dataset_dir), ds, split) for r in groups[label]]
            per[label] = {u: float(np.mean([v[u] for v in vals])) for u in vals[0]}
        t = paired(per[a.paired[0]], per[a.paired[1]])
        lines += ["", f"Paired over {t['n_users']} test users (NDCG@10 averaged over seeds): {a.paired[0]} {t['mean_a']:.4f} vs "
                  f"{a.paired[1]} {t['mean_b']:.4f}; Wilcoxon p = {t['wilcoxon_p']:.2g}, paired t p = {t['ttest_p']:.2g}."]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
