"""RRF weights and caps of the merge in front of the ranker (validation): merged-list NDCG@10 and candidate recall.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/sweep_merge_weights.py --seed 0 \
        --out experiments/ml100k/merge_weights \
        --compare "low-rated items dropped=pipeline.sources.two_tower.negatives_in_history=false"

The served ``pipeline=seq_two_tower`` on one seed's sequential two-tower run, built once for the
validation users (``history=valid``: the held-out item never seen) with the filters and diversifying
stages off, as the "seq two-tower + merged sources" row of ``scripts/reproduce_ml100k.py``. Every
source's list is computed once per user (``per_source`` candidates, consumed items already dropped);
each setting then re-merges those lists in memory with ``recsys.retrieval.merge.CandidateMerger``
(the config's ``rrf_k`` and caps unless the setting names caps) and runs the pipeline's remaining
stages, so a setting's top 10 is exactly what the served pipeline returns with that merger. Reported
per setting: NDCG@10 of the merged list, Recall@50/100/200 of the merged candidate set (the ranker
re-ranks the top ``n_rank`` = 200, configs/model/dlrm.yaml: Recall@200 is its ceiling), and a paired
Wilcoxon test of per-user NDCG@10 against the config's current weights. ``--compare LABEL=OVR,...``
adds what the sources are fed (serve overrides, e.g. the two-tower's history or nprobe), each variant
built and evaluated at the config's weights and at the two-tower's own order.

Rule (``choose``): the setting with the highest validation NDCG@10 among those whose Recall@200 is at
least the current weights' (the ranker's ceiling is not lowered). The chosen weights go into
configs/pipeline/seq_two_tower.yaml by hand; test users are not read here.
Writes <out>.json and <out>.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from pipeline_eval import DIVERSIFY, FILTERS, off, paired, per_user_ndcg, runs_for  # noqa: E402

from recsys.eval.paired import gain_text  # noqa: E402

DEPTHS = (50, 100, 200)
TOWER = "two_tower"
OTHERS = ("item2item", "content", "popularity")


class Replay:
    """A source that returns the list recorded for the request's user (``lists[user_idx][name]``)."""

    def __init__(self, name: str, lists: dict):
        self.name, self.lists = name, lists

    def __call__(self, ctx, k: int):
        return self.lists[ctx.user_idx][self.name]


def record_lists(rec, users: np.ndarray) -> tuple[dict, dict]:
    """Every source's list for every user, once -> ({user: {source: Candidates}}, {user: UserContext})."""
    pipe = rec.pipeline
    lists, ctxs = {}, {}
    for u in users.tolist():
        ctx = rec.contexts.build(int(u))
        ctxs[u] = ctx
        lists[u] = {n: s(ctx, pipe.per_source(pipe.k)) for n, s in pipe.sources.items()}
    return lists, ctxs


def evaluate_setting(rec, lists, ctxs, target: dict, merger) -> dict:
    """One merger over the recorded lists -> NDCG@10 (per user too), Recall@50/100/200."""
    from recsys.pipeline.pipeline import Pipeline

    pipe = rec.pipeline
    # the served pipeline's own stages after the merge up to the cut to k (here the consumed filter; none of
    # them depends on k, so the top 10 of a 200 list is the served top 10); the explanations after it only
    # add text (at 200 items they would be 95% of the time)
    names = list(pipe.stages)
    stages = {n: pipe.stages[n] for n in names[: names.index("top_k") + 1]} if "top_k" in names else pipe.stages
    replay = Pipeline({n: Replay(n, lists) for n in pipe.sources}, merger, stages, k=pipe.k, per_source=pipe.per_source)
    users = np.array(sorted(ctxs))
    ranked = [replay(ctxs[u], max(DEPTHS)).items for u in users.tolist()]
    topk = np.full((len(users), 10), -1, np.int64)
    for j, r in enumerate(ranked):
        topk[j, : min(10, len(r))] = r[:10]
    pu = per_user_ndcg(topk, users, target)
    out = {"ndcg@10": float(np.mean(list(pu.values())))}
    out |= {f"recall@{d}": float(np.mean([target[u] in set(r[:d].tolist()) for u, r in zip(users.tolist(), ranked)]))
            for d in DEPTHS}
    return out | {"per_user": pu}


def settings(tower_w, other_w, caps) -> list[dict]:
    """Every weight combination (config caps), then each cap of the other sources at every combination."""
    grid = [{"weights": {TOWER: t, **dict(zip(OTHERS, o))}, "cap": None}
            for t in tower_w for o in itertools.product(other_w, repeat=len(OTHERS))]
    return grid + [{**g, "cap": c} for c in caps for g in grid]


def label(s: dict) -> str:
    w = s["weights"]
    return " ".join(f"{n}={w[n]:g}" for n in (TOWER, *OTHERS)) + (f" cap={s['cap']}" if s["cap"] is not None else "")


def choose(results: dict, current: str) -> str:
    """Highest NDCG@10 among the settings with Recall@200 >= the current weights' (ties: first listed)."""
    floor = results[current]["recall@200"]
    ok = {k: v for k, v in results.items() if v["recall@200"] >= floor}
    return max(ok, key=lambda k: ok[k]["ndcg@10"])


def sweep(a, extra: list[str], specs: list[dict]) -> dict:
    """Build the pipeline once with ``extra`` overrides, record its lists, evaluate the config's weights + ``specs``."""
    from omegaconf import OmegaConf

    from recsys.pipeline.build import build_recommender, compose_serve
    from recsys.retrieval.merge import CandidateMerger

    overrides = ["pipeline=seq_two_tower", f"dataset_dir={a.dataset_dir}", "llm=none", *off(*FILTERS, *DIVERSIFY),
                 *runs_for(a.seed, None, a.runs_root), *extra, "history=valid"]
    cfg = compose_serve(overrides)
    rec = build_recommender(cfg)
    part = rec.split.part("valid")
    users = np.unique(part["user_idx"].to_numpy())
    if a.max_users is not None and len(users) > a.max_users:
        users = np.sort(np.random.default_rng(0).choice(users, a.max_users, replace=False))
    target = dict(zip(part["user_idx"].tolist(), part["item_idx"].tolist()))
    lists, ctxs = record_lists(rec, users)
    node = OmegaConf.to_container(cfg.pipeline.merger, resolve=True)
    base_caps, default_cap, rrf_k = dict(node.get("caps") or {}), node.get("default_cap", 200), node.get("rrf_k", 60.0)
    current = {"weights": {TOWER: 1.0, **dict.fromkeys(OTHERS, 1.0), **(node.get("weights") or {})}, "cap": None}
    results, per_user = {}, {}
    for s in [current, *specs]:
        name = label(s)
        if name in results:
            continue
        caps = base_caps | (dict.fromkeys(OTHERS, s["cap"]) if s["cap"] is not None else {})
        r = evaluate_setting(rec, lists, ctxs, target, CandidateMerger(caps=caps, default_cap=default_cap,
                                                                        weights=s["weights"], rrf_k=rrf_k))
        per_user[name] = r.pop("per_user")
        results[name] = r | {"weights": s["weights"], "cap": s["cap"]}
        print(name, {k: round(v, 4) for k, v in r.items()}, flush=True)
    cur = label(current)
    for name in results:
        results[name]["vs_current"] = paired(per_user[name], per_user[cur]) if name != cur else None
    return {"overrides": overrides, "n_users": len(users), "merger": node, "current": cur, "results": results}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0, help="the seed of the seq two-tower run")
    ap.add_argument("--tower-weights", type=float, nargs="+", default=[2.0, 4.0, 8.0, 16.0])
    ap.add_argument("--other-weights", type=float, nargs="+", default=[0.0, 0.3, 1.0],
                    help="weights tried for each of item2item, content, popularity")
    ap.add_argument("--other-caps", type=int, nargs="*", default=[50, 100],
                    help="caps of item2item/content/popularity in the merge tried beside the config's (none: skip)")
    ap.add_argument("--max-users", type=int, default=None, help="a seeded sample of validation users (default all)")
    ap.add_argument("--dataset-dir", default="data/ml100k")
    ap.add_argument("--runs-root", default="outputs/train", help="where ml100k-two_tower_seq-seed<seed> is")
    ap.add_argument("--override", nargs="*", default=[], help="further configs/serve.yaml overrides of the sweep")
    ap.add_argument("--compare", nargs="*", default=[], metavar="LABEL=OVR[,OVR...]",
                    help="source-input variants (serve overrides) evaluated at the config's weights and the two-tower's order")
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "ml100k" / "merge_weights")
    a = ap.parse_args(argv)
    t0 = time.time()
    tower_only = {"weights": {TOWER: a.tower_weights[0], **dict.fromkeys(OTHERS, 0.0)}, "cap": None}
    variants = {}
    for spec in a.compare:
        name, _, ovr = spec.partition("=")
        variants[name] = sweep(a, [*a.override, *(o for o in ovr.split(",") if o)], [tower_only])
    main_sweep = sweep(a, a.override, settings(a.tower_weights, a.other_weights, a.other_caps))
    results, cur = main_sweep["results"], main_sweep["current"]
    chosen = choose(results, cur)
    record = {"seed": a.seed, **main_sweep, "chosen": chosen, "tower_order": label(tower_only) if label(tower_only) in results else None,
              "variants": variants, "seconds": time.time() - t0,
              "command": shlex.join(["python", "scripts/sweep_merge_weights.py", *(sys.argv[1:] if argv is None else argv)])}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    write_md(record, a.out.with_suffix(".md"))
    print("current:", cur, results[cur])
    print("chosen:", chosen, results[chosen])
    return 0


def variant_lines(r: dict) -> list[str]:
    """The source-input variants (``--compare``): the config's weights and the two-tower's own order on each."""
    if not r["variants"]:
        return []
    lines = ["## What the sources are fed (the config's weights; the two-tower's own order)", "",
             "| variant | overrides | NDCG@10 (config's weights) | Recall@200 | NDCG@10 (two-tower order) | Recall@200 |",
             "|---|---|---|---|---|---|"]
    for name, v in r["variants"].items():
        cur, tower = v["results"][v["current"]], next(m for k, m in v["results"].items() if k != v["current"])
        extra = [o for o in v["overrides"] if o not in r["overrides"]]
        lines.append(f"| {name} | `{' '.join(extra) or '-'}` | {cur['ndcg@10']:.4f} | {cur['recall@200']:.4f} | "
                     f"{tower['ndcg@10']:.4f} | {tower['recall@200']:.4f} |")
    return lines + [""]


def write_md(r: dict, path: Path) -> None:
    res, cur = r["results"], r["current"]
    cols = ["ndcg@10", *(f"recall@{d}" for d in DEPTHS)]
    lines = ["# The merge in front of the ranker: RRF weights and caps (validation)", "",
             f"<!-- generated by scripts/sweep_merge_weights.py in {r['seconds']:.0f} s on a shared, loaded 2-core machine -->",
             f"Command: `OMP_NUM_THREADS=1 .venv/bin/python {r['command'].removeprefix('python ')}`", "",
             f"`pipeline=seq_two_tower` on the seed-{r['seed']} sequential two-tower run, {r['n_users']} validation users "
             "(LOO, full catalogue, consumed items dropped, `history=valid`; filters and diversifying stages off, as the "
             "\"seq two-tower + merged sources\" row of the reproduction). Each source's list is computed once "
             f"(`per_source` candidates); every row re-merges them with `CandidateMerger` (rrf_k {r['merger'].get('rrf_k', 60.0):g}, "
             f"default cap {r['merger'].get('default_cap')}; `cap=N`: item2item, content and popularity capped at N). "
             "NDCG@10 is the merged list's; Recall@N says whether the held-out item is in the first N merged candidates "
             "(the ranker re-ranks the first 200). Δ and p: per-user NDCG@10 against the current weights "
             f"(`{cur}`, configs/pipeline/seq_two_tower.yaml before this sweep), Wilcoxon signed-rank. "
             "Test users are not read here.", "",
             *variant_lines(r),
             "## RRF weights and caps (the sweep)", "",
             "| setting | NDCG@10 | Recall@50 | Recall@100 | Recall@200 | Δ NDCG@10 vs current | p |",
             "|---|---|---|---|---|---|---|"]
    order = sorted(res, key=lambda k: -res[k]["ndcg@10"])
    for name in order:
        m, v = res[name], res[name]["vs_current"]
        tag = " **(current)**" if name == cur else " **(chosen)**" if name == r["chosen"] else ""
        delta = f"{gain_text(v['rel_gain'])} | {v['wilcoxon_p']:.2g}" if v else "- | -"
        lines.append(f"| `{name}`{tag} | " + " | ".join(f"{m[c]:.4f}" for c in cols) + f" | {delta} |")
    c = res[r["chosen"]]
    lines += ["", "Rule: the highest validation NDCG@10 among the settings whose Recall@200 is at least the current "
              f"weights' ({res[cur]['recall@200']:.4f}): the ranker's ceiling is not lowered.", "",
              f"Chosen: `{r['chosen']}` (NDCG@10 {c['ndcg@10']:.4f}, Recall@50/100/200 "
              + "/".join(f"{c[f'recall@{d}']:.4f}" for d in DEPTHS) + ").", ""]
    if r.get("tower_order"):
        t = res[r["tower_order"]]
        lines += [f"The two-tower's own order (`{r['tower_order']}`: the other sources add candidates after its "
                  f"{r['merger'].get('default_cap')}, none above them): NDCG@10 {t['ndcg@10']:.4f}, Recall@200 {t['recall@200']:.4f}.", ""]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
