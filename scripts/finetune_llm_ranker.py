"""LlamaRec-style LoRA fine-tuning of the LLM ranker on ML-100K, then the LlamaRec evaluation.

1. Training examples from the TRAIN split only (``recsys.llm.finetune.build_examples``): every
   training user's last 3 train items are targets (history = the train items before each),
   candidates = ItemKNN's top-19 (fitted before the first cut-off) + the target, shuffled;
   ``finetune.examples.max_examples`` (960 in configs/llm/finetune_smollm2.yaml) is a seeded sample.
2. One epoch of LoRA (``LoRAFinetuner``), adapter and its training record (``finetune.json``) saved
   to ``--adapter-dir`` (default ``$RECSYS_CACHE/llm/adapters/<config name>``, ``$RECSYS_CACHE`` = ``~/.cache/recsys``
   unless set).
3. LlamaRec protocol on the same seeded test-user sample as
   ``scripts/eval_llm_rerank.py`` (ItemKNN fitted on train, history = train +
   valid, consumed items masked, top-20 re-ranked with verbalizer scores):
   input order vs zero-shot LLM vs fine-tuned LLM (adapter re-loaded from disk).

    OMP_NUM_THREADS=1 python scripts/finetune_llm_ranker.py --train-only     # the report's adapter (~36 min)
    OMP_NUM_THREADS=1 python scripts/finetune_llm_ranker.py                      # + the LlamaRec evaluation (500 users)
    python scripts/finetune_llm_ranker.py --config finetune_gpu --threads 8     # GPU box

Writes the adapter and its ``finetune.json`` to ``--adapter-dir``; without ``--train-only`` also ``--out``
(JSON: the training record and the three rows).
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


def load_cfg(name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs" / "llm"), version_base="1.3"):
        cfg = compose(name, overrides=overrides)
    GlobalHydra.instance().clear()
    if cfg.rerank.max_history != cfg.finetune.trainer.max_history:
        raise ValueError(f"configs/llm/{name}.yaml: rerank.max_history ({cfg.rerank.max_history}) must equal "
                         f"finetune.trainer.max_history ({cfg.finetune.trainer.max_history}): same prompt as in training")
    return cfg


def train(cfg, ds, split, backend, adapter_dir: Path) -> dict:
    from hydra.utils import instantiate

    from recsys.llm.finetune import build_examples

    t0 = time.perf_counter()
    ex = build_examples(ds, split.train, **cfg.finetune.examples)
    build_s = time.perf_counter() - t0
    ft = instantiate(cfg.finetune.trainer)(backend=backend, items_table=ds.items)
    t0 = time.perf_counter()
    ft.fit(ex)
    train_s = time.perf_counter() - t0
    pos = np.bincount([e.target_pos for e in ex], minlength=cfg.finetune.examples.n_candidates)
    info = {"n_examples": len(ex), "n_users": len({e.user_idx for e in ex}), "build_s": build_s, "train_s": train_s, "s_per_example": train_s / len(ex),
            "steps": len(ft.history), "loss_first": ft.history[0]["loss"], "loss_last": ft.history[-1]["loss"],
            "loss_curve": [round(h["loss"], 4) for h in ft.history], "target_position_counts": pos.tolist(),
            "trainable_params": int(sum(p.numel() for p in ft.model.parameters() if p.requires_grad))}
    ft.save(adapter_dir, extra={"train": info})
    return info


def main() -> None:
    from recsys.utils.cache import cache_root
    from recsys.utils.cli import ScriptHelp

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=ScriptHelp)
    ap.add_argument("--config", default="finetune_smollm2", help="configs/llm/<name>.yaml")
    ap.add_argument("--override", action="append", default=[], help="Hydra override, e.g. finetune.examples.max_users=32")
    ap.add_argument("--data-dir", default=str(cache_root("data")),
                    help="where ML-100K is prepared without text embeddings (as eval_llm_rerank.py; made here if missing)")
    ap.add_argument("--adapter-dir", default=None, help=f"None: {cache_root('llm', 'adapters')}/<--config> ($RECSYS_CACHE moves it)")
    ap.add_argument("--skip-train", action="store_true", help="evaluate the adapter already in --adapter-dir")
    ap.add_argument("--train-only", action="store_true",
                    help="write the adapter and stop (evaluate it on a pipeline's top-20 with scripts/eval_llm_pipeline.py)")
    ap.add_argument("--n-eval-users", type=int, default=500, help="seeded test-user sample, as eval_llm_rerank.py")
    ap.add_argument("--seed", type=int, default=0, help="test-user sample seed (eval_llm_rerank.py --seed)")
    ap.add_argument("--top-n", type=int, default=20, help="ItemKNN candidates re-ranked per user")
    ap.add_argument("--batch-size", type=int, default=6, help="users per backend call at evaluation")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--out", default="experiments/ml100k/llm_finetune.json", help="the evaluation's JSON")
    args = ap.parse_args()

    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from recsys.data.history import History
    from recsys.data.io import load_dataset, load_split
    from recsys.data.prepare import prepare_from_config
    from recsys.eval.evaluator import Evaluator
    from recsys.llm.finetune import load_adapter
    from recsys.llm.rerank import blend_order
    from recsys.models.itemknn import ItemKNN
    from recsys.core.candidates import Candidates, UserContext

    cfg = load_cfg(args.config, args.override)
    adapter_dir = Path(args.adapter_dir) if args.adapter_dir else cache_root("llm", "adapters", cfg.name)
    ds_dir = prepare_from_config("ml100k", Path(args.data_dir), ["data.text_embeddings=false"])  # as eval_llm_rerank.py
    ds, split = load_dataset(ds_dir), load_split(ds_dir, "loo")

    t0 = time.perf_counter()
    base = instantiate(cfg.backend)
    result = {"config": {"args": vars(args), "llm": OmegaConf.to_container(cfg, resolve=True)},
              "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores shared, torch threads={args.threads}",
              "model_load_s": time.perf_counter() - t0, "adapter_dir": str(adapter_dir)}
    if args.skip_train:
        result["train"] = json.loads((adapter_dir / "finetune.json").read_text())["train"]
    else:
        result["train"] = train(cfg, ds, split, base, adapter_dir)
    if args.train_only:
        print(json.dumps({k: v for k, v in result["train"].items() if k != "loss_curve"}, indent=2))
        return
    tuned = load_adapter(base, adapter_dir)  # from disk: what a deployment would load

    # -- LlamaRec evaluation: the sample, retriever and masking of eval_llm_rerank.py --
    known = split.history_for("test")
    users_all = np.sort(split.test["user_idx"].unique())
    rng = np.random.default_rng(args.seed)
    n = args.n_eval_users
    users = np.sort(rng.choice(users_all, size=n, replace=False)) if 0 < n < len(users_all) else users_all
    hist = History.from_interactions(known, users)
    target = split.test.set_index("user_idx").loc[users, "item_idx"].to_numpy()
    scores = ItemKNN(ds.meta).fit(ds, split).score(hist).float()  # (U, N)
    for b in range(len(users)):
        scores[b, hist.of(b)] = -float("inf")
    top_s, top_i = torch.topk(scores, args.top_n, dim=1)  # (U, K)
    hit = np.array([t in set(r) for t, r in zip(target, top_i.numpy())])
    sel = np.flatnonzero(hit)  # a miss scores 0 under every order of its top-n: LLM only for hits (exact)
    cl = [Candidates(top_i[b].numpy(), top_s[b].numpy(), np.array(["itemknn"] * args.top_n)) for b in range(len(users))]
    ctxs = [UserContext(user_idx=int(users[b]), history=hist.of(b).numpy()) for b in range(len(users))]

    lists = {"input (itemknn)": top_i.numpy()}
    timing = {}
    for name, be in (("zero-shot", base), ("fine-tuned", tuned)):
        rr = instantiate(cfg.rerank)(backend=be, items_table=ds.items, blend=1.0)
        llm = {}
        t = time.perf_counter()
        for s in tqdm(range(0, len(sel), args.batch_size), desc=name):
            bs = sel[s : s + args.batch_size]
            for b, o in zip(bs, rr.rerank_batch([ctxs[b] for b in bs], [cl[b] for b in bs])):
                pos = {int(it): j for j, it in enumerate(o.items)}
                llm[b] = np.array([o.features["llm_score"][pos[int(it)]] for it in cl[b].items], dtype=np.float64)
        timing[name] = {"total_s": time.perf_counter() - t, "llm_users": int(len(sel))}
        timing[name]["latency_ms_per_user"] = 1000 * timing[name]["total_s"] / max(1, len(sel))
        for blend in (1.0, 0.5, 0.2):
            ranked = [c.items[blend_order(llm[b], c.scores, blend)] if b in llm else c.items for b, c in enumerate(cl)]
            lists[f"{name} blend={blend}"] = np.stack(ranked)
        # rank of the target among the 20 (0 = first) for the LLM alone: a per-user view of the same lists
        lists_rank = {int(users[b]): int(np.flatnonzero(lists[f"{name} blend=1.0"][b] == target[b])[0]) for b in sel}
        result.setdefault("target_rank_llm_only", {})[name] = lists_rank
    ev = Evaluator(ks=(1, 5, 10, 20), metrics=("ndcg", "recall", "mrr"), beyond_metrics=(), progress=False, device="cpu")
    res = {}
    for name, topk in lists.items():
        m = ev.evaluate_topk(topk, users, [[t] for t in target], stage="test")
        res[name] = {k: v for k, v in m.items() if any(k.endswith(f"@{kk}") for kk in (1, 10, 20)) and "n_users" not in k}
    result.update({"n_eval_users": int(len(users)), "target_in_top_n": float(hit.mean()), "llamarec": res,
                   "timing": timing, "users": users.tolist()})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("train", "target_in_top_n", "llamarec", "timing")}, indent=2))


if __name__ == "__main__":
    main()
