"""The LLM re-rank stage on a pipeline's own top-20: zero-shot, fine-tuned, blend chosen on validation.

1. Input: the real pipeline from config (``--pipeline NAME`` + ``--override``s of configs/serve.yaml),
   run for each user with the LLM slot replaced by a recorder (``recsys.llm.rerank_eval``): the top-20
   and the pipeline's final scores, at validation time (history = train, target = the valid item) and
   at test time (history = train + valid, target = the test item).
2. The LLM (``--llm``: a configs/llm/*.yaml with a backend and a ``rerank`` node) scores each list
   with ``blend=1`` (verbalizer letter log-probabilities), only for users whose target is in the list
   (exact: the others score 0 under every order).
3. For each model (zero-shot; fine-tuned = ``--adapter``): b of ``--grid`` (0 included) chosen on
   VALIDATION NDCG@10 of ``b*z(llm) + (1-b)*z(pipeline score)``; test read once, for b=1 and the chosen b.
4. Wilcoxon signed-rank over test users (per-user NDCG@10) of each row against the input order.

    OMP_NUM_THREADS=1 python scripts/eval_llm_pipeline.py --pipeline seq_ranked \\
        --adapter ~/.cache/recsys/llm/adapters/finetune_smollm2   # -> experiments/ml100k/llm_pipeline_seq_ranked.json
    # GPU box, same protocol, a 7-8B instruct model through vLLM:
    python scripts/eval_llm_pipeline.py --pipeline seq_ranked --llm vllm --batch-size 64 --n-users 0   # docs/gpu.md

Writes ``--out`` (JSON: ``rows``, ``valid_curves``, ``chosen_blend``, ``timing``, ``input``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def compose_llm(name: str, overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs" / "llm"), version_base="1.3"):
        cfg = compose(name, overrides=list(overrides))
    GlobalHydra.instance().clear()
    if cfg.get("backend") is None or cfg.get("rerank") is None:
        raise ValueError(f"configs/llm/{name}.yaml has no backend or rerank node: nothing to evaluate")
    return cfg


def metrics_of(ev, lists, users, targets) -> dict:
    m = ev.evaluate_topk(lists, users, [[int(t)] for t in targets], stage="test")
    return {k.split("/", 1)[1]: float(v) for k, v in m.items() if k.endswith(("ndcg@10", "recall@10", "ndcg@20", "recall@20"))}


def main() -> None:
    from recsys.utils.cli import ScriptHelp

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=ScriptHelp)
    ap.add_argument("--pipeline", required=True, help="configs/pipeline/<NAME>.yaml (serve.yaml's pipeline= choice)")
    ap.add_argument("--override", action="append", default=[],
                    help="serve.yaml override for the pipeline, e.g. pipeline.artifacts.ranker.run_dir=outputs/train/x")
    ap.add_argument("--llm", default="finetune_smollm2", help="configs/llm/<name>.yaml: backend + rerank node")
    ap.add_argument("--llm-override", action="append", default=[], help="override of that LLM config")
    ap.add_argument("--adapter", default=None, help="LoRA adapter dir (scripts/finetune_llm_ranker.py): adds the fine-tuned rows")
    ap.add_argument("--n-users", type=int, default=150, help="seeded sample of users, the same for valid and test (0 = all)")
    ap.add_argument("--seed", type=int, default=0, help="user sample seed")
    ap.add_argument("--top-n", type=int, default=20, help="the pipeline's top-N the LLM re-ranks")
    ap.add_argument("--grid", default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1", help="blend weights (must include 0)")
    ap.add_argument("--batch-size", type=int, default=8, help="lists per backend call")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--out", default=None,
                    help="rows, choices and paired tests (JSON); None: experiments/ml100k/llm_pipeline_<--pipeline>.json, "
                         "the file the report reads")
    args = ap.parse_args()
    args.out = args.out or f"experiments/ml100k/llm_pipeline_{args.pipeline}.json"

    from hydra.errors import HydraException

    from recsys.utils.cli import user_errors

    # a missing config, run, adapter or a bad --grid: one line, before any pipeline or LLM runs
    with user_errors("eval_llm_pipeline.py", extra=(HydraException,)):
        run(args)


def run(args) -> None:

    import torch
    from hydra.utils import instantiate

    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from omegaconf import OmegaConf

    from recsys.data.io import load_split
    from recsys.eval.evaluator import Evaluator
    from recsys.eval.paired import paired_test, per_user_ndcg
    from recsys.llm.factory import build_llm, with_adapter
    from recsys.llm.rerank_eval import compose_pipeline_cfg, llm_scores, pipeline_input, select_then_test, targets_of

    from recsys.utils.cli import UsageError

    grid = [float(x) for x in args.grid.split(",")]
    if 0.0 not in grid:
        raise UsageError(f"--grid {args.grid}: must include 0 (the input order is always a candidate)")
    if args.adapter and not Path(args.adapter).is_dir():
        raise FileNotFoundError(f"--adapter {args.adapter}: no such directory (scripts/finetune_llm_ranker.py --train-only "
                                "writes one)")
    llm_cfg = compose_llm(args.llm, args.llm_override)
    overrides = [f"pipeline={args.pipeline}", *args.override]
    serve_cfg = compose_pipeline_cfg(overrides, "test")
    split = load_split(serve_cfg.dataset_dir, serve_cfg.split)
    users = np.intersect1d(split.valid["user_idx"].unique(), split.test["user_idx"].unique())
    if 0 < args.n_users < len(users):
        users = np.sort(np.random.default_rng(args.seed).choice(users, size=args.n_users, replace=False))
    inputs = {h: pipeline_input(overrides, h, args.top_n, users) for h in ("valid", "test")}
    targets = {h: targets_of(split, h, users) for h in ("valid", "test")}

    t0 = time.perf_counter()
    base = build_llm(OmegaConf.merge(llm_cfg, {"adapter": None})).backend
    models = {"zero-shot": base}
    adapter_meta = {}
    if args.adapter:
        meta = Path(args.adapter) / "finetune.json"
        adapter_meta = json.loads(meta.read_text()) if meta.exists() else {}
        tuned_on = adapter_meta.get("max_history")
        if tuned_on is not None and tuned_on != llm_cfg.rerank.max_history:
            raise ValueError(f"{args.adapter} was tuned on prompts with max_history={tuned_on}, the rerank node "
                             f"writes {llm_cfg.rerank.max_history}: pass --llm-override rerank.max_history={tuned_on}")
        models["fine-tuned"] = with_adapter(base, args.adapter)
    load_s = time.perf_counter() - t0

    ev = Evaluator(ks=(10, 20), metrics=("ndcg", "recall"), beyond_metrics=(), progress=False, device="cpu")
    test_in = inputs["test"].lists(args.top_n)
    base_ndcg = per_user_ndcg(test_in, targets["test"])
    hit = {h: float(np.mean([t in set(c.items.tolist()) for t, c in zip(targets[h], inputs[h].cands)])) for h in inputs}
    rows = [{"row": "input", "model": None, "blend": 0.0, **metrics_of(ev, test_in, users, targets["test"]),
             "valid_ndcg@10": float(per_user_ndcg(inputs["valid"].lists(args.top_n), targets["valid"]).mean())}]
    curves, chosen, timing, all_scores = {}, {}, {}, {}
    for name, backend in models.items():
        rr = instantiate(llm_cfg.rerank, _convert_="all")(backend=backend, items_table=inputs["test"].items_table, blend=1.0)
        scores, timing[name] = {}, {}
        for h in ("valid", "test"):
            scores[h], timing[name][h] = llm_scores(rr, inputs[h], targets[h], args.batch_size)
        all_scores[name] = scores
        sel = select_then_test(inputs, scores, targets, grid)  # b from validation only
        b, curves[name], chosen[name] = sel["chosen"], sel["valid_curve"], sel["chosen"]
        for label, bb in ((f"{name} b=1", 1.0), (f"{name} chosen b={b:g}", b)):
            lists = sel["test_lists"][bb]  # test read once per b
            rows.append({"row": label, "model": name, "blend": bb, **metrics_of(ev, lists, users, targets["test"]),
                         "valid_ndcg@10": curves[name][bb] if bb in curves[name] else None,
                         "paired_vs_input": paired_test(per_user_ndcg(lists, targets["test"]), base_ndcg)})

    result = {
        "protocol": "LOO full ranking; the LLM re-ranks the pipeline's top-n as its llm_rerank slot receives it; "
                    "blend chosen on validation NDCG@10, test read once per chosen configuration; misses skipped (exact)",
        "args": vars(args), "n_users": int(len(users)), "users": users.tolist(),
        "input": {h: {**inputs[h].info, "target_in_top_n": hit[h]} for h in inputs},
        "llm": OmegaConf.to_container(llm_cfg, resolve=True), "model_load_s": load_s,
        "grid": grid, "valid_curves": {m: {f"{b:g}": v for b, v in c.items()} for m, c in curves.items()},
        "chosen_blend": chosen, "rows": rows, "timing": timing,
        # what the adapter was trained on (scripts/finetune_llm_ranker.py's record), the report quotes it
        "adapter": {"dir": args.adapter, **{k: v for k, v in adapter_meta.get("train", {}).items() if k != "loss_curve"}}
        if args.adapter else None,
        "llm_scores": {m: {h: {str(j): v.round(5).tolist() for j, v in sc.items()} for h, sc in s_.items()}
                       for m, s_ in all_scores.items()},  # per row of `users`, in input order: re-blend offline
        "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores shared, torch threads={args.threads}",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    for r in rows:
        p = r.get("paired_vs_input", {}).get("wilcoxon_p")
        print(f"{r['row']:<28} test ndcg@10 {r['ndcg@10']:.4f} recall@10 {r['recall@10']:.4f} "
              f"valid ndcg@10 {r['valid_ndcg@10'] if r['valid_ndcg@10'] is None else round(r['valid_ndcg@10'], 4)} p={p}")
    n_hit = int(round(hit["test"] * len(users)))
    print(f"{n_hit} of {len(users)} test users have their item in the input top-{args.top_n} (a re-ranking can move only "
          f"those); wrote {args.out}")
    if n_hit < 30:
        print("too few to tell the rows apart: raise --n-users (the report uses 150) or --top-n")


if __name__ == "__main__":
    main()
