"""Does the ranker beat its input? Merged candidates (input order) vs + DLRM vs + DCN-v2 on ML-100K.

    python scripts/run_ranking.py                                   # 3 seeds, valid + test: the report
    python scripts/run_ranking.py --seeds 0 --stages valid          # choices: validation only
    python scripts/run_ranking.py --variant "bce=ml100k/dlrm:model.module.ranker.loss=bce" --stages valid

Each seed composes the real experiment configs (``experiment=ml100k/dlrm``, ``ml100k/dcn``, with
``model.module.retriever_run=null``: each seed fits its own two-tower instead of ranking behind the
served run), fits the first one's retrievers and builds its training/validation lists once (``TwoStageRanker.prepare``),
and trains every variant's ranker on those same lists (``share_data``). Every user with a target
is then served by the same candidate pipeline (the served two-tower pipeline's sources + RRF
merger); the input order is the merged list, each variant re-ranks it with its rank stage. The
lists are full rankings (every unconsumed item; sources drop consumed ones) and are scored by
``Evaluator.evaluate_topk``; per-user NDCG@10 differences to the input order get a paired t-test
and a Wilcoxon signed-rank test. Writes ``--out`` (markdown table) and its ``.json`` beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "offline")
ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"dlrm": "ml100k/dlrm", "dcn": "ml100k/dcn"}
LABELS = {"dlrm": "input + DLRM ranker", "dcn": "input + DCN-v2 ranker"}
KS = (10, 20)


def compose(experiment: str, overrides: list[str], out: Path):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = hcompose("train", overrides=[f"experiment={experiment}", "logger=none", "model.module.retriever_run=null",
                                           *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        cfg.paths.data_dir = os.environ.get("RECSYS_DATA", str(ROOT / "data"))
    return cfg


def parse_variant(text: str) -> tuple[str, str, list[str]]:
    """``name=experiment[:override;override...]`` or a known name -> (name, experiment, overrides)."""
    if "=" not in text.split(":")[0]:
        return text, VARIANTS[text], []
    name, rest = text.split("=", 1)
    exp, _, ovr = rest.partition(":")
    return name, exp, [o for o in ovr.split(";") if o]


def served_lists(model, stages: dict, split, stage: str, k: int):
    """users (U,), targets (U,), and name -> (U, k) final lists: "input" (merged order) and each stage's."""
    import numpy as np

    from recsys.ranking.data import context_of, user_sequences

    hist = user_sequences(split.history_for(stage))
    part = split.part(stage).drop_duplicates("user_idx").sort_values("user_idx")
    users, targets = part["user_idx"].to_numpy(), part["item_idx"].to_numpy()
    lists = {name: np.full((len(users), k), -1, np.int64) for name in ["input", *stages]}
    for j, u in enumerate(users):
        h = hist.get(int(u), np.zeros(0, np.int64))
        ctx = context_of(int(u), h, model.negatives.of(int(u), h))  # the context served for that history
        cands = model.generator(ctx, model.meta.n_items)
        lists["input"][j, : min(k, len(cands))] = cands.items[:k]
        for name, st in stages.items():
            out = st(ctx, cands).items[:k]
            lists[name][j, : len(out)] = out
    return users, targets, lists


def paired(ranker, base) -> dict:
    """recsys.eval.paired.paired_test, plus the paired t-test's p (``t_p``) this sweep's table shows beside it."""
    from scipy import stats

    from recsys.eval.paired import paired_test

    return {**paired_test(ranker, base), "t_p": float(stats.ttest_rel(ranker, base).pvalue)}


def run_seed(seed: int, variants, stages_to_read, extra: list[str], work: Path) -> dict:
    from hydra.utils import instantiate

    from recsys.core.inject import instantiate_with
    from recsys.data.io import load_dataset, load_split
    from recsys.eval.evaluator import Evaluator
    from recsys.eval.paired import per_user_ndcg

    ev = Evaluator(ks=KS, progress=False)
    res: dict = {"variants": {}}
    first = None
    for name, exp, ovr in variants:
        cfg = compose(exp, [f"seed={seed}", *ovr, *extra], work / f"{name}-seed{seed}")
        dataset_dir = Path(instantiate(cfg.data))
        ds, sp = load_dataset(dataset_dir), load_split(dataset_dir, cfg.data.split.name)
        model = instantiate_with(cfg.model.module, meta=ds.meta, dataset_dir=str(dataset_dir))
        t0 = time.perf_counter()
        if first is None:
            model.prepare(ds, sp)
            res["data_s"] = time.perf_counter() - t0
            res["retriever"] = ev.evaluate(model.retriever, ds, sp, "valid") | (
                ev.evaluate(model.retriever, ds, sp, "test") if "test" in stages_to_read else {})
            first = model
        else:
            model.share_data(first)
        t1 = time.perf_counter()
        model.fit(ds, sp)
        res["variants"][name] = {"experiment": exp, "overrides": ovr, "ranker_fit_s": time.perf_counter() - t1,
                                 "fit_stats": model.fit_stats, "stage": model.stage}
        print(f"seed {seed} {name}: best val ndcg@10 {model.fit_stats.get('ranker/best_val_ndcg@10', float('nan')):.4f} "
              f"({time.perf_counter() - t1:.0f} s)", flush=True)
    stages = {name: v.pop("stage") for name, v in res["variants"].items()}
    for stage in stages_to_read:
        t0 = time.perf_counter()
        users, targets, lists = served_lists(first, stages, sp, stage, max(KS))
        res[f"{stage}_eval_s"] = time.perf_counter() - t0
        base = per_user_ndcg(lists["input"], targets)
        for name, top in lists.items():
            m = ev.evaluate_topk(top, users, [[t] for t in targets], stage, ds, sp)
            entry = res.setdefault("input", {}) if name == "input" else res["variants"][name]
            entry.update(m)
            if name != "input":
                entry[f"{stage}/paired"] = paired(per_user_ndcg(top, targets), base)
    return res


def table(results: dict, names: list[str], stage: str) -> list[str]:
    import numpy as np

    from recsys.eval.paired import gain_text

    p = "val" if stage == "valid" else stage
    seeds = sorted(results, key=int)

    def cell(vals):
        return f"{np.mean(vals):.4f} ± {np.std(vals):.4f}"

    lines = [f"| {stage} | NDCG@10 | Recall@10 | MRR@10 | NDCG@20 | gain NDCG@10 | paired t p (per seed) | Wilcoxon p (per seed) |",
             "|---|---|---|---|---|---|---|---|"]
    rows = [("two-tower alone (the serving retriever)", [results[s]["retriever"] for s in seeds])]
    rows.append(("merged candidates (input order)", [results[s]["input"] for s in seeds]))
    rows += [(LABELS.get(n, f"input + {n}"), [results[s]["variants"][n] for s in seeds]) for n in names]
    for label, ms in rows:
        if f"{p}/ndcg@10" not in ms[0]:
            continue
        cols = [cell([m[f"{p}/{c}"] for m in ms]) for c in ("ndcg@10", "recall@10", "mrr@10", "ndcg@20")]
        pt = [m.get(f"{stage}/paired") for m in ms]
        if pt[0]:
            rels = [x["rel_gain"] for x in pt]
            gain = (f"{gain_text(float(np.mean(rels)))} (" + ", ".join(gain_text(r) for r in rels) + ")"
                    if None not in rels else ", ".join(gain_text(r) for r in rels))
            tp = ", ".join(f"{x['t_p']:.1e}" for x in pt)
            wp = ", ".join(f"{x['wilcoxon_p']:.1e}" for x in pt)
        else:
            gain = tp = wp = "-"
        lines.append(f"| {label} | " + " | ".join(cols) + f" | {gain} | {tp} | {wp} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variant", action="append", help="name | name=experiment[:override;...] (default: dlrm, dcn); the first one's features must cover the others'")
    ap.add_argument("--stages", nargs="+", default=["valid", "test"], choices=["valid", "test"])
    ap.add_argument("-o", "--override", action="append", default=[], help="Hydra override for every variant")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "ml100k" / "ranking.md"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    variants = [parse_variant(v) for v in (args.variant or ["dlrm", "dcn"])]
    out = Path(args.out)
    work = ROOT / "outputs" / "ranking"
    out.parent.mkdir(parents=True, exist_ok=True)
    results, t0 = {}, time.perf_counter()
    for seed in args.seeds:
        results[str(seed)] = run_seed(seed, variants, args.stages, args.override, work)
        out.with_suffix(".json").write_text(json.dumps({"results": results, "argv": sys.argv[1:]}, indent=2, default=str))
    lines = []
    for stage in args.stages:
        lines += table(results, [n for n, _, _ in variants], stage) + [""]
    lines.append(f"{len(args.seeds)} seeds {args.seeds}; {time.perf_counter() - t0:.0f} s in all; python {platform.python_version()}, "
                 f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    out.with_suffix(".table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"written {out.with_suffix('.json')} and {out.with_suffix('.table.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
