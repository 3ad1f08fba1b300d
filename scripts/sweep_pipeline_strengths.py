"""Accuracy cost of the filters, MMR, category cap and exploration as their strength varies (validation).

    OMP_NUM_THREADS=1 python scripts/sweep_pipeline_strengths.py --seeds 0 1 2 \
        --out experiments/ml100k/pipeline_strengths

Each point is the served pipeline (``pipeline=seq_ranked`` on each seed's runs: sequential two-tower +
merged sources + DLRM) with one stage at one strength and the other diversifying stages off, built and
evaluated on the validation users (``history=valid``: the held-out item never seen) by
``scripts/pipeline_eval.evaluate_lists``: NDCG@10 against catalogue coverage@10 and intra-list
diversity (category ILD@10), averaged over ``--seeds``. The default strength of each stage is the
strongest one whose mean validation NDCG@10 stays within ``--tolerance`` (relative) of the pipeline
without it. Why the mean over seeds: one seed's choice is noise at this scale (on the 2026-12-03 runs
seeds 0, 1 and 2 alone chose MMR 0.5 / 0.7 / 0.5, a cap of 6 / 8 / off, exploration 2 slots / off / off).
The chosen settings go into configs/pipeline/seq_ranked.yaml by hand (the script prints them; the
report flags a config that differs) and the test set is read only by scripts/reproduce_ml100k.py for
the chosen configuration.
Writes <out>.json, <out>.md and <out>.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from pipeline_eval import DIVERSIFY, FILTERS, evaluate_lists, off, runs_for  # noqa: E402

# stage -> (the key its strength sets, strengths from weak to strong)
KNOBS = {"mmr": ("lambda_", [0.95, 0.9, 0.8, 0.7, 0.5]),
         "category_cap": ("max_per_category", [8, 6, 4, 3]),
         "exploration": ("n_slots", [1, 2, 3])}
METRICS = [("NDCG@10", "ndcg@10"), ("recall@10", "recall@10"), ("coverage@10", "coverage@10"), ("ILD@10", "ild_category@10"),
           ("novelty@10", "novelty@10")]


def render(value) -> str:
    """A plain value as a Hydra override value (dicts and lists in its grammar, strings quoted)."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{render(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(render(v) for v in value) + "]"
    if value is None:
        return "null"
    return f"'{value}'" if isinstance(value, str) else str(value)


def stage_nodes() -> dict:
    """The diversifying stages' nodes as seq_ranked's parent pipeline (seq_two_tower.yaml) declares them:
    a stage seq_ranked switches off (null) comes back from here when the sweep turns it on."""
    from omegaconf import OmegaConf

    from recsys.pipeline.build import compose_serve

    stages = compose_serve(["pipeline=seq_two_tower"]).pipeline.stages
    return {s: OmegaConf.to_container(stages[s]) for s in KNOBS}


def variants() -> dict[str, tuple[str, object, list[str]]]:
    """name -> (stage, strength, overrides on top of the base, which has every diversifying stage off)."""
    out = {"none (ranked + filters)": ("none", None, []), "filters off": ("filters", "off", off(*FILTERS))}
    nodes = stage_nodes()
    for stage, (key, strengths) in KNOBS.items():
        for v in strengths:
            out[f"{stage} {key}={v}"] = (stage, v, [f"pipeline.stages.{stage}={render({**nodes[stage], key: v})}"])
    return out


def choose(results: dict, tolerance: float) -> dict:
    """Per stage: the strongest strength whose NDCG@10 >= (1 - tolerance) x the base's (None: keep it off)."""
    base = results["none (ranked + filters)"]["ndcg@10"]
    chosen = {}
    for stage, (key, strengths) in KNOBS.items():
        ok = [v for v in strengths if results[f"{stage} {key}={v}"]["ndcg@10"] >= (1 - tolerance) * base]
        chosen[stage] = {"key": key, "value": ok[-1] if ok else None}
    return chosen


def plot(results: dict, path: Path, tolerance: float | None = None) -> None:
    """NDCG@10 against coverage@10 and ILD@10 per stage and strength; a dashed line at the rule's floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    base = results["none (ranked + filters)"]
    for ax, (label, key) in zip(axes, (("coverage@10", "coverage@10"), ("category ILD@10", "ild_category@10"))):
        ax.scatter([base[key]], [base["ndcg@10"]], marker="*", s=140, c="k", zorder=3, label="ranked + filters (no diversification)")
        f = results["filters off"]
        ax.scatter([f[key]], [f["ndcg@10"]], marker="x", s=70, c="grey", zorder=3, label="filters off")
        for stage, (knob, strengths) in KNOBS.items():
            names = [f"{stage} {knob}={v}" for v in strengths]
            xs, ys = [base[key]] + [results[n][key] for n in names], [base["ndcg@10"]] + [results[n]["ndcg@10"] for n in names]
            ax.plot(xs, ys, "o-", label=f"{stage} ({knob})")
            for n, v in zip(names, strengths):
                ax.annotate(str(v), (results[n][key], results[n]["ndcg@10"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if tolerance is not None:
            ax.axhline((1 - tolerance) * base["ndcg@10"], ls="--", c="grey", lw=0.8, label=f"-{tolerance:.0%} of the base (the rule's floor)")
        ax.set_xlabel(label + " (validation)")
        ax.set_ylabel("NDCG@10 (validation)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("seq_ranked: accuracy vs coverage / diversity as each stage's strength varies")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    from recsys.utils.cli import ScriptHelp

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=ScriptHelp)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the seeds of the seq two-tower + ranker runs (the rule reads the mean over them)")
    ap.add_argument("--ranker", default="seq_dlrm", help="the ranker experiment (run name ml100k-<ranker>-seed<seed>)")
    ap.add_argument("--max-users", type=int, default=None, help="a seeded sample of validation users (None: all of them)")
    ap.add_argument("--tolerance", type=float, default=0.01, help="relative validation NDCG@10 a stage may cost")
    ap.add_argument("--dataset-dir", default="data/ml100k", help="the prepared dataset (python -m recsys.data.prepare data=ml100k)")
    ap.add_argument("--runs-root", default="outputs/train", help="where the runs ml100k-two_tower_seq-seed<seed> etc. are")
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "ml100k" / "pipeline_strengths",
                    help="file stem: writes <out>.json, <out>.md, <out>.png (the default rewrites the committed sweep)")
    a = ap.parse_args(argv)
    results, specs, t0 = {}, variants(), time.time()
    for seed in a.seeds:
        base = ["pipeline=seq_ranked", f"dataset_dir={a.dataset_dir}", "llm=none", *runs_for(seed, a.ranker, a.runs_root),
                *off(*DIVERSIFY)]
        for name, (stage, value, ovr) in specs.items():
            # a knob's stage back on at this strength (its other arguments: seq_two_tower.yaml's)
            on = [o for o in base if not o.startswith(f"pipeline.stages.{stage}=")]
            m = evaluate_lists([*on, *ovr], "valid", a.max_users)["metrics"]
            one = {key: m[f"val/{key}"] for _, key in METRICS} | {"n_users": m["val/n_users"]}
            results.setdefault(name, {"per_seed": {}})["per_seed"][str(seed)] = one
            print(f"seed {seed}", name, {k: round(v, 4) for k, v in one.items()}, flush=True)
    for r in results.values():  # the mean over seeds is what the rule reads; the spread is in the table
        runs = list(r["per_seed"].values())
        r.update({k: float(np.mean([x[k] for x in runs])) for k in runs[0]})
        r["ndcg@10_std"] = float(np.std([x["ndcg@10"] for x in runs], ddof=1)) if len(runs) > 1 else 0.0
    chosen = choose(results, a.tolerance)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    record = {"seeds": a.seeds, "ranker": a.ranker, "tolerance": a.tolerance, "base_overrides": base, "results": results,
              "chosen": chosen, "seconds": time.time() - t0,
              "command": "python scripts/sweep_pipeline_strengths.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    a.out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    plot(results, a.out.with_suffix(".png"), a.tolerance)
    write_md(record, a.out.with_suffix(".md"))
    print("chosen:", chosen)
    return 0


def write_md(r: dict, path: Path) -> None:
    n = int(next(iter(r["results"].values()))["n_users"])
    lines = ["# Filters, MMR, category cap and exploration: accuracy cost vs coverage / diversity (validation)", "",
             f"<!-- generated by scripts/sweep_pipeline_strengths.py in {r['seconds']:.0f} s on a shared, loaded 2-core machine -->",
             f"Command: `OMP_NUM_THREADS=1 {r['command']}`", "",
             f"`pipeline=seq_ranked` on the runs of seeds {', '.join(map(str, r['seeds']))} (sequential two-tower + merged "
             f"sources + `{r['ranker']}`), {n} validation users (LOO, full catalogue, consumed items filtered, `history=valid`). Every row switches "
             "the diversifying stages off and one back on at the strength named; the filters row switches the "
             "availability/age/negative/constraint filters off (the consumed filter is the protocol's masking). "
             "Test users are not read here. Each figure is the mean over the seeds (NDCG@10: ± the std over seeds).", "", f"![NDCG@10 vs coverage and ILD]({path.with_suffix('.png').name})", "",
             "| variant | " + " | ".join(c for c, _ in METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for name, m in r["results"].items():
        cells = [f"{m[k]:.4f} ± {m.get(k + '_std', 0.0):.4f}" if k == "ndcg@10" else f"{m[k]:.4f}" for _, k in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Rule: per stage, the strongest strength whose mean validation NDCG@10 is at least (1 - {r['tolerance']:g}) x the "
              "row without diversification; none such: the stage stays off.", ""]
    for stage, c in r["chosen"].items():
        lines.append(f"- `{stage}`: " + (f"`pipeline.stages.{stage}.{c['key']}={c['value']}`" if c["value"] is not None
                                         else f"off (`pipeline.stages.{stage}=null`)"))
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
