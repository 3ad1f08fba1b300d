"""Generate LLM explanations with the real Explainer on ML-100K and record what the verifier did.

    nice -n 10 python scripts/eval_explanations.py --users 50 --k 5 \
        --out experiments/explanations_smollm2.jsonl      # 250 SmolLM2 sentences, ~15-25 min on 1 CPU thread

One JSON row per LLM sentence: the user, the item, the facts given to the model, the model's first
sentence, whether the verifier accepted it (and why not), and the sentence the API returns. Judge
the rows with the independent checker: ``python scripts/check_grounding.py <out>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset-dir", default="data/ml100k")
    ap.add_argument("--pipeline", default="configs/pipeline/untrained.yaml")
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--k", type=int, default=5, help="items explained per user (all by the LLM)")
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--users-per-call", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="experiments/explanations_smollm2.jsonl")
    args = ap.parse_args(argv)

    from omegaconf import OmegaConf

    from recsys.llm.backends.transformers_backend import TransformersBackend
    from recsys.llm.explain import Explainer
    from recsys.pipeline.recommender import Recommender

    rec = Recommender(args.dataset_dir, OmegaConf.load(args.pipeline), split="loo", history="all")
    users = np.sort(np.random.default_rng(args.seed).choice(rec.contexts.n_users, args.users, replace=False))
    backend = TransformersBackend(num_threads=1, batch_size=args.batch_size)
    ex = Explainer(backend, rec.objects["items_table"], item_popularity=rec.catalog.popularity, top_k=args.k,
                   max_new_tokens=args.max_new_tokens, raw_trace=True)  # every sentence as written, for the judge
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0, n = time.perf_counter(), 0
    with out.open("w") as f:
        for s in range(0, len(users), args.users_per_call):
            pairs = [rec.recommend(int(u), k=args.k) for u in users[s : s + args.users_per_call]]
            cands_list, ctxs = [p[0] for p in pairs], [p[1] for p in pairs]
            for ctx, c in zip(ctxs, ex.explain_batch(ctxs, cands_list)):
                by_item = {int(i): (j, src) for j, (i, src) in enumerate(zip(c.items, c.sources))}
                for row in c.trace["explain"]["generated"]:
                    j, src = by_item[row["item"]]
                    facts = dataclasses.asdict(ex.facts(ctx, row["item"], src))
                    f.write(json.dumps({"user_idx": int(ctx.user_idx), **row, "facts": facts,
                                        "emitted": c.explanations[j]}) + "\n")
                    n += 1
            print(f"{n} sentences, {time.perf_counter() - t0:.0f} s", flush=True)
    print(json.dumps({"sentences": n, "seconds": round(time.perf_counter() - t0, 1), "out": str(out),
                      "generated_tokens": backend.stats.generated_tokens}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
