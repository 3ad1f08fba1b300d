"""Write ``experiments/ml100k/README.md`` and its plots from ``reproduce.json``.

Called by ``scripts/reproduce_ml100k.py`` (step ``report``); rerun alone with
``python scripts/reproduce_ml100k.py --steps report``. Every number comes from
the JSON the steps wrote; a step that did not run shows as "not run".
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = [("Recall@10", "test/recall@10"), ("Recall@20", "test/recall@20"), ("NDCG@10", "test/ndcg@10"),
           ("NDCG@20", "test/ndcg@20"), ("MRR@10", "test/mrr@10"), ("Coverage@10", "test/coverage@10"),
           ("ILD@10", "test/ild_category@10")]
TRAIN_ROWS = [("pop", "Popularity"), ("itemknn", "ItemKNN"), ("bpr", "BPR-MF"), ("sasrec", "SASRec"), ("two_tower", "Two-tower")]
STEP_ORDER = ["prepare", "train", "index", "retrieval", "ranking", "llm", "ablation", "latency", "determinism", "report"]
RANK_ROWS = [("retriever", "Two-tower (ranking's retriever)"), ("dlrm", "Two-tower + DLRM"), ("dcn", "Two-tower + DCN-v2")]


def cell(runs: list[dict], key: str) -> str:
    vals = [r[key] for r in runs if key in r]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.4f}"
    return f"{statistics.mean(vals):.4f} ± {statistics.stdev(vals):.4f}"


def row(name: str, runs: list[dict], note: str = "") -> str:
    return f"| {name} | " + " | ".join(cell(runs, k) for _, k in COLUMNS) + f" | {note} |"


def finetuned_llm() -> list[str]:
    """Rows of the LoRA fine-tuned LLM ranker (scripts/finetune_llm_ranker.py), on that script's own user sample,
    beside the zero-shot LLM and the input order on the same users."""
    path = ROOT / "experiments" / "ml100k" / "llm_finetune.json"
    if not path.exists():
        return ["| + fine-tuned LLM re-rank (LoRA) | not available (no `experiments/ml100k/llm_finetune.json`) |"]
    rec = json.loads(path.read_text())
    lr, n = rec.get("llamarec", {}), rec.get("n_eval_users", "?")
    note = f"{n} sampled users, `{path.name}`"
    names = [("input (itemknn)", "ItemKNN top-20 (input order), fine-tuning sample"),
             ("zero-shot blend=1.0", "ItemKNN top-20 + LLM re-rank (zero-shot), fine-tuning sample"),
             ("fine-tuned blend=1.0", "+ fine-tuned LLM re-rank (LoRA)"),
             ("fine-tuned blend=0.5", "+ fine-tuned LLM re-rank (LoRA), blend 0.5")]
    rows = [row(label, [lr[key]], note) for key, label in names if key in lr]
    return rows or [f"| + fine-tuned LLM re-rank (LoRA) | `{path.name}` has no LlamaRec metrics |"]


def main_table(data: dict) -> list[str]:
    lines = ["| Model | " + " | ".join(c for c, _ in COLUMNS) + " | notes |", "|" + "---|" * (len(COLUMNS) + 2)]
    train, ranking = data.get("train", {}), data.get("ranking", {})
    for key, name in TRAIN_ROWS:
        runs = list(train.get(key, {}).values())
        lines.append(row(name, runs, f"{len(runs)} seeds") if runs else f"| {name} | not run |")
    for key, name in RANK_ROWS:
        runs = list(ranking.get(key, {}).values())
        lines.append(row(name, runs, f"{len(runs)} seeds") if runs else f"| {name} | not run |")
    llm = data.get("llm", {}).get("llamarec")
    if llm:
        n = data["llm"]["n_users"]
        lines.append(row("ItemKNN top-20 (LLM input order)", [llm["input (itemknn)"]], f"{n} sampled users"))
        lines.append(row("ItemKNN top-20 + LLM re-rank (SmolLM2, zero-shot)", [llm["llm blend=1.0"]], f"{n} sampled users"))
        lines.append(row("ItemKNN top-20 + LLM re-rank, blend 0.5", [llm["llm blend=0.5"]], f"{n} sampled users"))
    else:
        lines.append("| + LLM re-rank | not run |")
    lines += finetuned_llm()
    return lines


def plot_metric_vs_k(data: dict, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {name: list(data.get("train", {}).get(key, {}).values()) for key, name in TRAIN_ROWS}
    groups |= {name: list(data.get("ranking", {}).get(key, {}).values()) for key, name in RANK_ROWS[1:]}
    groups = {n: r for n, r in groups.items() if r}
    if not groups:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("recall", "ndcg")):
        for name, runs in groups.items():
            ks = sorted({int(k.split("@")[1]) for k in runs[0] if k.startswith(f"test/{metric}@")})
            ax.plot(ks, [statistics.mean(r[f"test/{metric}@{k}"] for r in runs) for k in ks], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("K (list length)")
        ax.set_ylabel(f"test {metric}@K (mean over seeds)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("MovieLens-100K, leave-one-out, full ranking")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_recall_vs_depth(data: dict, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ret = data.get("retrieval")
    if not ret:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    seed0 = f"-seed{data.get('settings', {}).get('seeds', [0])[0]},"
    for name, m in ret["results"].items():
        # retrieval_report adds every baseline run it finds; keep one seed of the trained ones (Pop and
        # ItemKNN it fits itself, to depth 200)
        if "run_baselines" in name and (seed0 not in name or name.startswith(("Popularity", "ItemKNN"))):
            continue
        name = name.split(" (")[0] if "run_baselines" in name else name
        ks = sorted(int(k.split("@")[1]) for k in m if k.startswith("test/recall@"))
        if len(ks) >= 2:
            ax.plot(ks, [m[f"test/recall@{k}"] for k in ks], marker="o", label=name)
    cand = ret["candidates"]["recall"]
    ax.scatter([200], [cand["merged"]], marker="*", s=150, color="k", label="merged sources (RRF), top 200", zorder=5)
    ax.set_xscale("log")
    ax.set_xlabel("candidate depth")
    ax.set_ylabel("test recall@depth")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Recall vs candidate depth (seed 0 runs)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_latency(data: dict, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat = {k: v["mean"] for k, v in data.get("latency", {}).items() if not k.startswith("_") and k != "total"}
    llm = data.get("llm", {}).get("llamarec", {}).get("timing")
    if llm and llm.get("llm_users", 1):
        lat["LLM re-rank (top-20, per user)"] = llm["total_s"] * 1000 / max(1, llm.get("llm_users", data["llm"]["n_users"]))
    if not lat:
        return False
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(lat) + 1.5))
    names = list(lat)
    ax.barh(names, [lat[n] for n in names], color="tab:blue")
    ax.set_xscale("log")
    ax.set_xlabel("mean ms per request (log scale, one CPU thread)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def ablation_table(data: dict) -> list[str]:
    ab = data.get("ablation")
    if not ab:
        return ["Not run."]
    cols = [("Recall@10", "test/recall@10"), ("NDCG@10", "test/ndcg@10"), ("Coverage@10", "test/coverage@10"),
            ("ILD@10", "test/ild_category@10"), ("novelty", "test/novelty@10"), ("p50 ms", "latency_ms/p50")]
    lines = ["| variant | " + " | ".join(c for c, _ in cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for name, m in ab["results"].items():
        lines.append(f"| {name} | " + " | ".join(f"{m[k]:.1f}" if "ms" in k else f"{m[k]:.4f}" for _, k in cols) + " |")
    return lines + [f"\nSkipped: {ab['skipped']}" if ab.get("skipped") else ""]


def latency_table(data: dict) -> list[str]:
    lat = {k: v for k, v in data.get("latency", {}).items() if not k.startswith("_")}
    if not lat:
        return ["Not run."]
    lines = ["| stage | mean ms | p95 ms |", "|---|---|---|"]
    lines += [f"| {k} | {v['mean']:.2f} | {v['p95']:.2f} |" for k, v in lat.items()]
    timing = data.get("llm", {}).get("llamarec", {}).get("timing")
    if timing and timing.get("total_s"):
        n = timing.get("llm_users", data["llm"]["n_users"])
        lines.append(f"| LLM re-rank of a top-20 (SmolLM2 on CPU, batches of {timing['batch_size']}) | "
                     f"{timing['total_s'] * 1000 / max(1, n):.0f} | - |")
    return lines


def write_report(data: dict, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    s, hw = data.get("settings", {}), data.get("hardware", {})
    plots = {"metric_vs_k.png": plot_metric_vs_k(data, out / "metric_vs_k.png"),
             "recall_vs_depth.png": plot_recall_vs_depth(data, out / "recall_vs_depth.png"),
             "latency_breakdown.png": plot_latency(data, out / "latency_breakdown.png")}
    ds = data.get("dataset", {})
    llm = data.get("llm", {})
    det = data.get("determinism")
    det_txt = (f"BPR-MF, seed {det['seed']}, trained twice: {det['compared']} validation/test metrics compared, "
               f"max |difference| = {det['max_abs_diff']:g} ({'identical' if det['identical'] else 'NOT identical'})."
               if det and "max_abs_diff" in det else "Not checked in this run.")
    cand = data.get("retrieval", {}).get("candidates")
    steps = data.get("steps", {})
    text = [
        "# MovieLens-100K: reproduction of the paper-style table",
        "",
        f"Generated by `scripts/reproduce_ml100k.py` (`{s.get('command', '')}`); every number below is read from "
        "`reproduce.json` beside this file. Rerun with the same seeds for the same numbers (CPU).",
        "" if not s.get("quick") else "\n**`--quick` run: one epoch of three batches per model; the numbers only show that every step runs.**\n",
        "## Main table (test, mean ± std over seeds)",
        "",
        *main_table(data),
        "",
        "## Protocol",
        "",
        f"MovieLens-100K (RecBole's offline copy of the GroupLens ratings), every rating an implicit interaction, "
        f"5-core filtered ({ds.get('users', '?')} users, {ds.get('items', '?')} items, {ds.get('interactions', '?')} "
        "interactions). Leave-one-out by time: each user's last interaction is the test target, the second last the "
        "validation target (same-second interactions in the source file's row order, `data.split.tie_break`). Every test user is scored against **all** items with consumed items masked (no sampled "
        "negatives), ties broken by item index; Coverage@10 is the share of the catalogue in any top-10 list, ILD@10 "
        "the mean pairwise genre dissimilarity (1 - Jaccard) inside a list. Trainable models keep the checkpoint with the "
        f"best validation NDCG@10; seeds {s.get('seeds')}; epochs capped at {s.get('epochs')} (the reproduction budget; "
        "the experiment configs allow more, early stopping on validation NDCG@10 ends most runs before). The rankers "
        "(DLRM, DCN-v2; `TwoStageRanker`) re-rank the top-50 candidates of their own two-tower retriever, trained with the "
        "same seed (its own row). The LLM rows follow LlamaRec (Yue et al. 2023): ItemKNN's top-20 is re-ranked by "
        f"SmolLM2-135M-Instruct verbalizer scores, on a seeded sample of {llm.get('n_users', s.get('llm_users'))} test users "
        "(sample seed 0; the LLM is called only for users whose target is in the top-20, the others score 0 under any "
        "order), so compare those rows with the ItemKNN input-order row on the same users, not with the full-population rows. "
        "The fine-tuned rows (LoRA on SmolLM2, one epoch, LlamaRec verbalizer targets) are read from "
        "`experiments/ml100k/llm_finetune.json`, written by `scripts/finetune_llm_ranker.py` on its own seeded sample "
        "(not re-run by this script); compare them with the zero-shot and input-order rows of that sample.",
        "",
        "## Plots",
        "",
        *[f"![{n}]({n})" if ok else f"{n}: not produced (its step did not run)" for n, ok in plots.items()],
        "",
        "`metric_vs_k.png`: Recall@K and NDCG@K of each model (mean over seeds). `recall_vs_depth.png`: full-ranking "
        "recall at candidate depth 10-200 for each retriever (seed 0) and the merged candidate set (two-tower ANN + "
        "ItemKNN item-to-item + popularity + content, RRF) at 200"
        + (f": {cand['recall']['merged']:.4f} over {cand['n_users']} users." if cand else ".")
        + " `latency_breakdown.png`: mean per-stage latency of the default pipeline "
        f"({data.get('latency', {}).get('_users', '?')} users) and of the LLM re-rank per user.",
        "",
        "## Latency per stage (default pipeline, per request, one thread)",
        "",
        *latency_table(data),
        "",
        f"## Pipeline ablations ({s.get('ablation_users')} seeded test users, `configs/pipeline/untrained.yaml`)",
        "",
        *ablation_table(data),
        "",
        "## Determinism",
        "",
        det_txt,
        "",
        "## Hardware and wall time",
        "",
        f"CPU: {hw.get('cpu')}, {hw.get('cores')} cores (shared; load average {hw.get('load_avg_start', 0):.1f} at start), "
        f"GPU: {hw.get('gpu') or 'none'}; torch {hw.get('torch')}, Python {hw.get('python')}, "
        f"OMP_NUM_THREADS={hw.get('omp_threads')}.",
        "",
        "| step | wall time (s) |",
        "|---|---|",
        *[f"| {k} | {v:.0f} |" for k, v in sorted(steps.items(), key=lambda kv: STEP_ORDER.index(kv[0])) if k != "report"],
        f"| **total** | **{data.get('total_s', 0):.0f}** ({data.get('total_s', 0) / 60:.1f} min) |",
        "",
    ]
    path = out / "README.md"
    path.write_text("\n".join(text))
    return path
