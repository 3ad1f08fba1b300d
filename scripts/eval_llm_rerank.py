"""Evaluate LLM re-ranking on MovieLens-100K leave-one-out (CPU by default).

Two protocols, on the same seeded sample of test users:

* LlamaRec (Yue et al. 2023): a retriever (ItemKNN here) ranks the full
  catalogue minus consumed items; its top-20 is re-ranked by the LLM
  (verbalizer scores). NDCG@10 / Recall@10 / MRR@10 of the input order, the
  LLM order (blend=1) and blends, through ``Evaluator.evaluate_topk``.
* LLMRank (Hou et al. 2024): the ground-truth item + 19 random unseen items
  in random order; NDCG@1/5/10 of the LLM order beside the random order (and
  its expectation).

    OMP_NUM_THREADS=1 python scripts/eval_llm_rerank.py --n-users 100 --out experiments/ml100k/llm_rerank.json

Writes a JSON of metrics, latency and accounting; the report is
experiments/ml100k/llm_rerank.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def prepare_ml100k(data_dir: Path) -> Path:
    """ML-100K as the training configs prepare it (no text embeddings: the LLM reads titles)."""
    from recsys.data.prepare import prepare_from_config

    return prepare_from_config("ml100k", data_dir, ["data.text_embeddings=false"])


def main() -> None:
    from recsys.utils.cache import cache_root
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(cache_root("data")))
    ap.add_argument("--n-users", type=int, default=100, help="seeded sample of test users (0 = all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top-n", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8, help="users per backend call")
    ap.add_argument("--permutations", type=int, default=1)
    ap.add_argument("--max-history", type=int, default=10)
    ap.add_argument("--protocols", default="llamarec,llmrank")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-misses", action="store_true",
                    help="LlamaRec protocol: call the LLM only for users whose target is in the top-n; the others "
                         "score 0 under every order of the same top-n, so their metrics are unchanged (exact, cheaper)")
    ap.add_argument("--out", default="experiments/ml100k/llm_rerank.json")
    ap.add_argument("--llm", default=None, help="a configs/llm/*.yaml choice (e.g. vllm, openai) instead of CPU SmolLM2")
    ap.add_argument("--explain-users", type=int, default=3, help="'explain' protocol: users whose top items are explained")
    ap.add_argument("--explain-k", type=int, default=3, help="items explained per user by the LLM")
    args = ap.parse_args()

    import torch
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from recsys.data.history import History
    from recsys.data.io import load_dataset, load_split
    from recsys.eval.evaluator import Evaluator
    from recsys.llm.accounting import LLMAccounting
    from recsys.llm.backends.transformers_backend import TransformersBackend
    from recsys.llm.rerank import LLMReranker, blend_order
    from recsys.models.itemknn import ItemKNN
    from recsys.core.candidates import Candidates, UserContext

    ds_dir = prepare_ml100k(Path(args.data_dir))
    ds, split = load_dataset(ds_dir), load_split(ds_dir, "loo")
    n_items = ds.meta.n_items
    known = split.history_for("test")
    users_all = np.sort(split.test["user_idx"].unique())
    rng = np.random.default_rng(args.seed)
    users = np.sort(rng.choice(users_all, size=args.n_users, replace=False)) if 0 < args.n_users < len(users_all) else users_all
    hist = History.from_interactions(known, users)
    target = split.test.set_index("user_idx").loc[users, "item_idx"].to_numpy()

    t0 = time.perf_counter()
    knn = ItemKNN(ds.meta).fit(ds, split)
    scores = knn.score(hist).float()  # (U, N)
    for b in range(len(users)):
        scores[b, hist.of(b)] = -float("inf")  # consumed items are not recommended
    top_s, top_i = torch.topk(scores, args.top_n, dim=1)
    retrieve_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    if args.llm:  # the GPU box: same protocol, backend from configs/llm/<name>.yaml
        from hydra import compose, initialize_config_dir
        from hydra.utils import instantiate

        with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "configs" / "llm"), version_base="1.3"):
            backend = instantiate(compose(args.llm).backend)
    else:
        backend = TransformersBackend(device=args.device, num_threads=args.threads, batch_size=args.batch_size)
    load_s = time.perf_counter() - t0
    acc = LLMAccounting()
    rr = LLMReranker(backend, ds.items, top_n=args.top_n, blend=1.0, n_permutations=args.permutations,
                     max_history=args.max_history, seed=args.seed, accounting=acc)
    ctxs = [UserContext(user_idx=int(u), history=hist.of(b).numpy()) for b, u in enumerate(users)]
    ev = Evaluator(ks=(1, 5, 10, 20), metrics=("ndcg", "recall", "mrr"), beyond_metrics=(), progress=False, device="cpu")
    result = {
        "config": vars(args), "n_users": int(len(users)), "retriever": "itemknn(k=100, shrink=10)",
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF, de-quantised fp32, transformers)",
        "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores shared, torch threads={args.threads}",
        "retrieve_s": retrieve_s, "model_load_s": load_s, "users": users.tolist(),
    }
    protocols = args.protocols.split(",")

    def run(cands_list, name, run_ctxs=None):
        run_ctxs = ctxs if run_ctxs is None else run_ctxs
        outs, lat = [], []
        for s in tqdm(range(0, len(cands_list), args.batch_size), desc=name):
            t = time.perf_counter()
            outs += rr.rerank_batch(run_ctxs[s : s + args.batch_size], cands_list[s : s + args.batch_size])
            lat.append((time.perf_counter() - t, len(cands_list[s : s + args.batch_size])))
        total = sum(t for t, _ in lat)
        timing = {"total_s": total, "latency_ms_per_user": 1000 * total / max(1, len(cands_list)),
                  "users_per_s": len(cands_list) / max(total, 1e-9), "batch_size": args.batch_size}
        return outs, timing

    if "llamarec" in protocols:
        cl = [Candidates(top_i[b].numpy(), top_s[b].numpy(), np.array(["itemknn"] * args.top_n)) for b in range(len(users))]
        hit = np.array([t in set(r) for t, r in zip(target, top_i.numpy())])
        if args.skip_misses:
            sel = np.flatnonzero(hit)
            sub, timing = run([cl[b] for b in sel], "llamarec", [ctxs[b] for b in sel])
            outs = list(cl)
            for b, o in zip(sel, sub):
                outs[b] = o
            for b in np.flatnonzero(~hit):  # identity "re-rank": keep the input order
                outs[b] = cl[b].with_scores(cl[b].scores, "prev_score")
                outs[b].features["llm_score"] = np.zeros(len(cl[b]), np.float32)
                outs[b].trace["llm_rerank"] = {"fallback": False, "skipped": True}
            timing["llm_users"] = int(len(sel))
        else:
            outs, timing = run(cl, "llamarec")
        lists = {"input (itemknn)": top_i.numpy()}
        for blend in (1.0, 0.5, 0.2):
            ranked = []
            for c, o in zip(cl, outs):
                pos = {int(it): j for j, it in enumerate(o.items)}
                llm = np.array([o.features["llm_score"][pos[int(it)]] for it in c.items], dtype=np.float64)
                ranked.append(c.items[blend_order(llm, c.scores, blend)])
            lists[f"llm blend={blend}"] = np.stack(ranked)
        res = {}
        for name, topk in lists.items():
            m = ev.evaluate_topk(topk, users, [[t] for t in target], stage="test")
            res[name] = {k: v for k, v in m.items() if any(k.endswith(f"@{kk}") for kk in (10, 20)) and "n_users" not in k}
        res["target_in_top_n"] = float(hit.mean())
        res["fallbacks"] = int(sum(o.trace["llm_rerank"]["fallback"] for o in outs))
        res["timing"] = timing
        result["llamarec"] = res
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))  # partial results survive a later crash

    if "llmrank" in protocols:
        cl = []
        for b in range(len(users)):
            r = np.random.default_rng([args.seed, 1, int(users[b])])
            seen = set(hist.of(b).tolist()) | {int(target[b])}
            pool = np.setdiff1d(np.arange(n_items), np.fromiter(seen, dtype=np.int64))
            items = np.concatenate([[target[b]], r.choice(pool, size=args.top_n - 1, replace=False)])
            items = items[r.permutation(len(items))]  # random input order
            cl.append(Candidates(items, np.linspace(1.0, 0.0, len(items)), np.array(["random"] * len(items))))
        outs, timing = run(cl, "llmrank")
        res = {}
        for name, topk in {"random order": np.stack([c.items for c in cl]), "llm": np.stack([o.items for o in outs])}.items():
            m = ev.evaluate_topk(topk, users, [[t] for t in target], stage="test")
            res[name] = {k: v for k, v in m.items() if "ndcg" in k and not k.endswith("@20")}
        k_all = args.top_n  # expectation of a random order: one relevant item uniform over K positions
        res["random expectation"] = {f"test/ndcg@{k}": float(sum(1 / np.log2(p + 2) for p in range(min(k, k_all))) / k_all) for k in (1, 5, 10)}
        res["fallbacks"] = int(sum(o.trace["llm_rerank"]["fallback"] for o in outs))
        res["timing"] = timing
        result["llmrank"] = res

    if "explain" in protocols:
        from recsys.llm.explain import Explainer
        from recsys.eval.evaluator import item_counts

        pop = item_counts(split.train, n_items).numpy()
        ex = Explainer(backend, ds.items, item_popularity=pop, top_k=args.explain_k, accounting=acc)
        n = min(args.explain_users, len(users))
        cl = [Candidates(top_i[b, : args.explain_k].numpy(), top_s[b, : args.explain_k].numpy(),
                         np.array(["itemknn"] * args.explain_k)) for b in range(n)]
        t = time.perf_counter()
        outs = ex.explain_batch(ctxs[:n], cl)
        dt = time.perf_counter() - t
        result["explain"] = {
            "users": n, "llm_sentences": n * args.explain_k,
            "ungrounded": int(sum(o.trace["explain"]["ungrounded"] for o in outs)),
            "reasons": [o.trace["explain"]["reasons"] for o in outs],
            "explanations": [[f"{ds.items.title[int(i)]}: {e}" for i, e in zip(o.items, o.explanations)] for o in outs],
            "latency_s_per_sentence": dt / max(1, n * args.explain_k),
        }

    result["accounting"] = acc.summary()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
