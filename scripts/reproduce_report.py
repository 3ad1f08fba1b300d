"""Write ``experiments/ml100k/README.md`` and its plot from ``reproduce.json``.

Called by ``scripts/reproduce_ml100k.py`` (step ``report``); rerun alone with
``python scripts/reproduce_ml100k.py --steps report``. Every number comes from the JSON the
steps wrote; a step that did not run shows as "not run".
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from recsys.eval.paired import gain_text

# the single models of a default `scripts/reproduce_ml100k.py` run (its --models default; the others are
# one flag away): the rows the pipeline is judged against and the pipeline's own retriever
DEFAULT_MODELS = ["pop", "itemknn", "sasrec", "two_tower_seq"]
MODEL_ROWS = [("pop", "Popularity"), ("itemknn", "ItemKNN"), ("bpr", "BPR-MF"), ("sasrec", "SASRec"),
              ("two_tower", "Two-tower (bag of history)"), ("two_tower_seq", "seq two-tower")]
RANKER_LABEL = {"seq_dlrm": "DLRM", "seq_dcn": "DCN-v2"}
NOTES = ("<!-- notes:begin (kept by scripts/reproduce_report.py) -->", "<!-- notes:end -->")
COLUMNS = [("val NDCG@10", "val/ndcg@10"), ("test NDCG@10", "test/ndcg@10"), ("test Recall@10", "test/recall@10"),
           ("test coverage@10", "test/coverage@10"), ("test ILD@10", "test/ild_category@10")]


def mean_std(vals: list[float], digits: int = 4) -> str:
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def cells(runs: list[dict]) -> str:
    return " | ".join(mean_std([r[k] for r in runs if k in r]) for _, k in COLUMNS)


def seconds(vals: list[float]) -> str:
    return mean_std(vals, 0) if vals else "-"


def signs(per_seed: list[dict]) -> str:
    """Each seed's paired delta as +, - or 0 (the main and the paired table print the same string)."""
    return "".join("+" if s["delta"] > 0 else "-" if s["delta"] < 0 else "0" for s in per_seed)


def delta(p: dict | None) -> str:
    if not p:
        return "- | -"
    sign = signs(p.get("test_per_seed") or [])
    t = p["test"]
    return f"{gain_text(t['rel_gain'])} ({sign}) | {t['wilcoxon_p']:.1e}"


def main_table(data: dict) -> list[str]:
    lines = ["| configuration | " + " | ".join(c for c, _ in COLUMNS) + " | test Δ vs input (per seed) | Wilcoxon p | train s |",
             "|---|" + "---|" * (len(COLUMNS) + 3)]
    train, rank, pipe = data.get("train", {}), data.get("rank", {}), data.get("pipeline", {})
    for key, name in MODEL_ROWS:
        runs = list(train.get(key, {}).values())
        if runs:
            lines.append(f"| {name} | {cells(runs)} | - | - | {seconds([r['train/time_s'] for r in runs if 'train/time_s' in r])} |")
        else:  # every column, so the table stays rectangular; an optional model says what adds it
            why = "not run" if key in DEFAULT_MODELS else f"not run (add `{key}` to `--models`)"
            lines.append(f"| {name} | {why} |" + " |" * (len(COLUMNS) + 2))
    ranker = pipe.get("ranker")
    seq_runs, rank_runs = train.get("two_tower_seq", {}), rank.get(ranker, {})
    seq_t = [r.get("train/time_s", 0.0) for r in seq_runs.values()]
    # the tower and the ranker of the same seed (the runs finish, and are recorded, in any order)
    ranked_t = [seq_runs[s].get("train/time_s", 0.0) + r.get("train/time_s", r.get("ranker/fit_s", 0.0))
                for s, r in sorted(rank_runs.items()) if s in seq_runs]
    for name, runs in (pipe.get("rows") or {}).items():
        # "input + stage": the row's input is its name without the last stage
        paired = pipe.get("paired", {}).get(f"{name} vs {name.rsplit(' + ', 1)[0]}")
        # end-to-end training: the seq two-tower (+ the ranker behind it in the rows that have it)
        ranked = f"+ {RANKER_LABEL.get(ranker, ranker)}" in name
        t = ranked_t if ranked else seq_t
        lines.append(f"| {name} | {cells(list(runs.values()))} | {delta(paired)} | {seconds(t)} |")
    return lines


def ranker_table(data: dict) -> list[str]:
    rank = data.get("rank", {})
    if not rank:
        return ["Rankers: not run."]
    lines = ["| ranker behind the seq two-tower | val NDCG@10 (its run) | test NDCG@10 (its run) | train lists | fit s |",
             "|---|---|---|---|---|"]
    for key, runs in rank.items():
        r = list(runs.values())
        lines.append(f"| {RANKER_LABEL.get(key, key)} (`experiment=ml100k/{key}`) | {mean_std([x['val/ndcg@10'] for x in r])} | "
                     f"{mean_std([x['test/ndcg@10'] for x in r])} | {mean_std([x.get('ranker/train_lists', 0) for x in r], 0)} | "
                     f"{seconds([x.get('train/time_s', 0.0) for x in r])} |")
    return lines


def paired_table(data: dict) -> list[str]:
    pairs = (data.get("pipeline") or {}).get("paired") or {}
    lines = ["| comparison | stage | mean delta | relative | Wilcoxon p | users better / worse | per-seed signs |",
             "|---|---|---|---|---|---|---|"]
    for key, p in pairs.items():
        for stage in ("valid", "test"):
            if stage in p:
                s = p[stage]
                per_seed = signs(p.get(f"{stage}_per_seed", []))
                lines.append(f"| {key} | {stage} | {s['delta']:+.4f} | {gain_text(s['rel_gain'])} | {s['wilcoxon_p']:.1e} | "
                             f"{s['users_better']} / {s['users_worse']} | {per_seed} |")
    return lines


def verdict(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


def targets(data: dict) -> list[str]:
    """The issue's three accuracy targets, each with its figure and a met / NOT met verdict.

    The best pipeline row and the best single model are the ones with the highest mean *validation* NDCG@10
    (the protocol's rule: every choice on validation); their test means are what the targets compare. The
    ratio is printed to 3 decimals: at 2, a 1.098 x SASRec reads as the 1.10 it misses.
    """
    train, pipe = data.get("train", {}), data.get("pipeline", {})
    rows = list((pipe.get("rows") or {}).items())
    mean = lambda runs, key: statistics.mean(r[key] for r in runs.values())  # noqa: E731
    singles = [(mean(train[k], "val/ndcg@10"), mean(train[k], "test/ndcg@10"), n) for k, n in MODEL_ROWS if train.get(k)]
    if not rows or not singles:
        return ["Targets: not measured (the `pipeline` step has not run)."]
    # on validation alone (a tie goes to the earlier, simpler row, never to the better test score)
    best_val, best, best_name = max(((mean(runs, "val/ndcg@10"), mean(runs, "test/ndcg@10"), name) for name, runs in rows),
                                    key=lambda r: r[0])
    served, single = mean(rows[-1][1], "test/ndcg@10"), max(singles, key=lambda r: r[0])
    out = [f"- served pipeline test NDCG@10 {served:.4f}; best pipeline row on validation ({best_name}, val "
           f"{best_val:.4f}) {best:.4f} on test."]
    if train.get("sasrec"):
        sas = mean(train["sasrec"], "test/ndcg@10")
        out.append(f"- best pipeline vs SASRec: {best / sas:.3f} x ({sas:.4f}; target >= 1.10): {verdict(best / sas >= 1.10)}.")
    else:
        out.append("- best pipeline vs SASRec: SASRec not trained in this reproduction (target >= 1.10 x not checked here).")
    gain = best / single[1] - 1
    out.append(f"- best pipeline vs the best single model of this table on validation ({single[2]}, val {single[0]:.4f}, "
               f"test {single[1]:.4f}): {100 * gain:+.1f}% (target >= +5%): {verdict(gain >= 0.05)}.")
    ranked = next((name for name, _ in rows if name.endswith(f" + {RANKER_LABEL.get(pipe.get('ranker'), '')}")), None)
    pair = next((p for k, p in (pipe.get("paired") or {}).items() if ranked and k.startswith(f"{ranked} vs ")), None)
    if pair and "test" in pair:
        t, seeds = pair["test"], pair.get("test_per_seed", [])
        ok = (t["rel_gain"] or 0.0) >= 0.05 and t["wilcoxon_p"] < 0.05 and bool(seeds) and all(s["delta"] > 0 for s in seeds)
        out.append(f"- the ranker over its input: {gain_text(t['rel_gain'])}, Wilcoxon p = {t['wilcoxon_p']:.3f}, per-seed signs "
                   f"{signs(seeds)} (target >= +5%, p < 0.05, + on every seed): {verdict(ok)}.")
    return out


def plot_stages(data: dict, path: Path) -> bool:
    rows = (data.get("pipeline") or {}).get("rows") or {}
    train = data.get("train", {})
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, means, stds = [], [], []
    for key, name in MODEL_ROWS:
        if train.get(key):
            v = [r["test/ndcg@10"] for r in train[key].values()]
            names.append(name), means.append(statistics.mean(v)), stds.append(statistics.stdev(v) if len(v) > 1 else 0.0)
    for name, runs in rows.items():
        v = [r["test/ndcg@10"] for r in runs.values()]
        names.append(name.split(" (served")[0].replace("seq two-tower + merged sources", "merged")), means.append(statistics.mean(v))
        stds.append(statistics.stdev(v) if len(v) > 1 else 0.0)  # the table's sample std
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.barh(range(len(names)), means, xerr=stds, color=["#999"] * (len(names) - len(rows)) + ["#3a7"] * len(rows))
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("test NDCG@10 (LOO, full catalogue; mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


LLM_FILE = "llm_pipeline_seq_ranked.json"  # scripts/eval_llm_pipeline.py --pipeline seq_ranked --out <this>
ADAPTER = "~/.cache/recsys/llm/adapters/finetune_smollm2"  # finetune_llm_ranker.py's default --adapter-dir
# the LoRA adapter (configs/llm/finetune_smollm2.yaml: 960 training-split examples, ~36 min on one core),
# then the LLM rows behind the seed-0 runs of the reproduction (~10 min)
FINETUNE_CMD = "OMP_NUM_THREADS=1 python scripts/finetune_llm_ranker.py --train-only"


def llm_cmd(out: str = f"experiments/ml100k/{LLM_FILE}", runs: str = "outputs/train") -> str:
    """The LLM rows' command for a report written to ``out`` from the runs under ``runs``."""
    return ("OMP_NUM_THREADS=1 python scripts/eval_llm_pipeline.py --pipeline seq_ranked "
            f"--override pipeline.artifacts.two_tower.run_dir={runs}/ml100k-two_tower_seq-seed0 "
            f"--override pipeline.artifacts.ranker.run_dir={runs}/ml100k-seq_dlrm-seed0 "
            f"--adapter {ADAPTER} --n-users 150 --seed 0 --out {out}")


LLM_CMD = llm_cmd()  # the default run's (outputs/train, experiments/ml100k)


def adapter_line(a: dict | None) -> list[str]:
    """What the fine-tuned rows' adapter was trained on (finetune_llm_ranker.py's record, via the JSON)."""
    if not a or "n_examples" not in a:
        return ["The fine-tuned rows' adapter has no training record (finetune.json) next to it.", ""] if a else []
    return [f"The fine-tuned rows' LoRA adapter was trained on {a['n_examples']} examples of {a['n_users']} training "
            f"users (train split only), {a['steps']} steps in {a['train_s'] / 60:.0f} min on one thread; training loss "
            f"{a['loss_first']:.2f} -> {a['loss_last']:.2f} (ln 20 = 3.00 is a uniform guess over the 20 letters).", ""]


def llm_section(path: Path, runs: str | None = None) -> list[str]:
    """The LLM re-rank of the served pipeline's top 20 (zero-shot, fine-tuned; b chosen on validation) from
    ``scripts/eval_llm_pipeline.py``'s JSON, or the command that makes it (for this report's file and runs)."""
    if not path.exists():
        here = llm_cmd(str(path), runs or "outputs/train")
        return [f"Not run in this reproduction. `{FINETUNE_CMD}` writes the adapter, then `{here}` writes "
                f"`{path.name}`; this section then shows its rows."]
    d = json.loads(path.read_text())
    inp, timing = d.get("input", {}).get("test", {}), d.get("timing", {})
    n = next((r["paired_vs_input"]["n_users"] for r in d["rows"] if "paired_vs_input" in r), "?")
    out = [f"The LLM stage re-ranks the top {inp.get('top_n', 20)} that `pipeline={inp.get('pipeline', '?')}` hands its "
           f"`llm_rerank` slot (runs: {', '.join(f'{k} {v}' for k, v in (inp.get('artifacts') or {}).items())}), for a "
           f"seeded sample of {n} users (the same on validation and test; seed 0 runs only). The blend "
           "b*z(llm) + (1-b)*z(pipeline) is chosen on validation NDCG@10 (0 = the input order is always a candidate); "
           f"test is read once per row. Chosen: {', '.join(f'{m} b={b:g}' for m, b in d.get('chosen_blend', {}).items())}. "
           f"From `{path.name}`, made by `{FINETUNE_CMD}` (the adapter) and `{LLM_CMD}` (the default run's paths; the "
           "JSON records the ones it used).", "",
           *adapter_line(d.get("adapter")),
           "| row | b | val NDCG@10 | test NDCG@10 | test Δ vs input | Wilcoxon p | users better / worse |",
           "|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        pv = r.get("paired_vs_input")
        delta = gain_text(pv["rel_gain"]) if pv else "-"
        p = f"{pv['wilcoxon_p']:.2g}" if pv else "-"
        bw = f"{pv['users_better']} / {pv['users_worse']}" if pv else "-"
        out.append(f"| {r['row']} | {r['blend']:g} | {r['valid_ndcg@10']:.4f} | {r['ndcg@10']:.4f} | {delta} | {p} | {bw} |")
    secs = sum(t.get("total_s", 0) for m in timing.values() for t in m.values())
    out += ["", f"LLM scoring took {secs:.0f} s on CPU (SmolLM2-135M, 1 thread; lists whose target is outside the top 20 "
            "are not scored: every order gives them 0)."]
    return out


def epoch_budget(settings: dict) -> str:
    """The protocol's sentence on epoch caps, from the settings reproduce_ml100k.py recorded (its EPOCHS)."""
    if settings.get("quick"):
        return "--quick: every model trains 1 epoch of 3 batches (a smoke run; its numbers mean nothing)"
    epochs = settings.get("epochs")
    caps = {m: o.split("=", 1)[1] for m, ovr in (epochs.items() if isinstance(epochs, dict) else ())
            if isinstance(ovr, list) for o in ovr if o.startswith("trainer.max_epochs=")}
    if not caps:
        return ("every model trains as its experiment config says (configs/experiment/<dataset>/: max_epochs, "
                "early stopping on validation NDCG@10)")
    names = dict(MODEL_ROWS)
    capped = ", ".join(f"the {names.get(m, m)} at most {n} epochs" for m, n in caps.items())
    return (f"{capped} (the served pipeline's training-time budget; early stopping on validation NDCG@10 within it), "
            "every other model as its experiment config says")


def served_stages(stages, names) -> dict:
    """The composed pipeline's ``stages`` node -> {name: the plain node, or None where switched off}: what a
    served row ran, as ``served_differs`` reads it."""
    from omegaconf import OmegaConf

    return {s: OmegaConf.to_container(stages[s]) if stages.get(s) is not None else None for s in names}


def served_differs(chosen: dict, served: dict | None, k: int = 10) -> list[str]:
    """Where the served row's stages (recorded by the pipeline step) differ from the sweep's choice, at the
    sweep's list length k (a relative size in the config resolves to the sweep's fixed value there)."""
    from recsys.pipeline.sizing import as_size

    if served is None:  # a record from before the pipeline step wrote its stages
        return []
    out = []
    for stage, c in chosen.items():
        node = served.get(stage)
        ran = None if node is None else node.get(c["key"])
        if ran is not None and not isinstance(ran, float):
            ran = as_size(ran)(k)
        if ran != c["value"]:
            want = "off" if c["value"] is None else f"{c['key']}={c['value']}"
            out.append(f"`{stage}` chose {want}, the served config ran {'off' if node is None else ran}")
    return out


def write_report(data: dict, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    s, hw = data.get("settings", {}), data.get("hardware", {})
    has_plot = plot_stages(data, out / "stages_ndcg.png")
    strengths = data.get("strengths")
    users = "20 users per pipeline row (--quick)" if s.get("quick") else "all 943 users"
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in data.get("steps", {}).items())
    lines = [
        "# MovieLens-100K: every stage against its input", "",
        f"<!-- generated by scripts/reproduce_ml100k.py; settings {s} -->",
        f"Command: `OMP_NUM_THREADS=1 {s.get('command', 'python scripts/reproduce_ml100k.py')}` (seeds {s.get('seeds')}).", "",
        "Protocol: the prepared ML-100K (943 users, 1,349 items), leave-one-out split `loo` with same-second ties broken by the "
        "source file's row order (`recsys.data.splits.chronological`), full-catalogue ranking, the user's past masked, "
        f"{users}; validation = each user's second-to-last item (history = train), test = the last (history = train + valid). "
        "Every choice (ranker, strengths, blend) was made on validation, test read once per configuration; "
        f"{epoch_budget(s)}. A row named "
        "\"input + stage\" adds one stage to the row it names; its Δ is the paired per-user change of test NDCG@10 over "
        "that input (users' values averaged over seeds; the sign per seed in brackets), Wilcoxon signed-rank p.", "",
        *main_table(data), "",
        *targets(data), "",
        "Training wall time (`train s`) is the runs' own `train/time_s` (the pipeline rows: seq two-tower + the ranker "
        "behind it); measured on a shared machine "
        f"({hw.get('cores', '?')} cores, {hw.get('cpu', '?')}, load average {float(hw.get('load_avg_start', 0)):.1f} at start), so "
        f"noisy. Step wall times: {steps or 'not run'}; total {data.get('total_s', 0):.0f} s.", "",
    ]
    if has_plot:
        lines += ["![test NDCG@10 per row](stages_ndcg.png)", ""]
    trained = [k for k, runs in data.get("rank", {}).items() if runs]
    served = (data.get("pipeline") or {}).get("ranker", "?")
    why = "the higher mean validation NDCG@10" if len(trained) > 1 else \
        "the only ranker trained; `--rankers seq_dlrm seq_dcn` adds DCN-v2 and chooses on validation"
    lines += ["## The ranker (chosen on validation)", "", *ranker_table(data), "",
              f"Served: `{served}` ({why}).", "",
              "## Paired tests", "", *paired_table(data), "",
              "## Filters, MMR, category cap, exploration", ""]
    if strengths:
        seeds = strengths.get("seeds", [strengths.get("seed")])  # a single-seed record of an earlier sweep: "seed"
        quick = s.get("quick")
        differ = [] if quick else served_differs(strengths["chosen"], (data.get("pipeline") or {}).get("served_stages"))
        lines += [f"Validation sweep, mean over seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}: "
                  "[pipeline_strengths.md](pipeline_strengths.md) (![NDCG@10 vs coverage/ILD](pipeline_strengths.png)); "
                  + ("its choice (a --quick smoke sweep on 20 users: not compared with the served config):" if quick else
                     "its choice (not what the served row ran, below):" if differ else
                     "its choice, which configs/pipeline/seq_ranked.yaml serves:"), ""]
        lines += [f"- `{k}`: {c['key']}={c['value']}" if c["value"] is not None else f"- `{k}`: off" for k, c in strengths["chosen"].items()]
        if differ:
            lines += ["", "**The served row did not run the sweep's choice:** " + "; ".join(differ) +
                      ". To serve the sweep's choice, copy it into configs/pipeline/seq_ranked.yaml and rerun `--steps pipeline report`."]
    else:
        lines += ["Sweep not run in this reproduction (`--steps strengths`)."]
    lines += ["", "## LLM stage", "", *llm_section(out / LLM_FILE, data.get("runs_root")), ""]
    path = out / "README.md"
    # the hand-written closing note (what the figures mean, what did not help) survives regeneration
    old = path.read_text() if path.exists() else ""
    notes = old[old.index(NOTES[0]):old.index(NOTES[1]) + len(NOTES[1])] if NOTES[0] in old and NOTES[1] in old else \
        f"{NOTES[0]}\n## Notes\n\n(none yet)\n{NOTES[1]}"
    path.write_text("\n".join(lines) + "\n" + notes + "\n")
    return path
