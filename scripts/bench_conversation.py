"""Latency per conversation turn through the app (``POST /conversation``), with or without the LLM.

    OMP_NUM_THREADS=1 nice -n 10 python scripts/bench_conversation.py --llm none
    OMP_NUM_THREADS=1 nice -n 10 python scripts/bench_conversation.py --llm smollm2 --sessions 20

The app is built as ``python -m recsys.serve`` builds it (``build_state`` over the composed
``configs/serve.yaml`` with ``llm=<choice>``) and called in process (FastAPI TestClient, so the
figures are the server's work without the network). The turns are the conversation set's
(``tests/conversation/cases.yaml``): every session, or ``--sessions N`` spread evenly over it,
all turns of each session in order. One warm-up turn (lazy model loading) is not counted.
With ``llm=smollm2`` a turn may run three LLM calls: reading a message the rules cannot (the
non-English ones), the re-rank and the explanations of the top items. Prints JSON: p50/p95/mean
per turn, overall and per reader (``source``: rules, llm, llm+rules, state, none).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]


def conversation_sessions(path: Path) -> list[list[dict]]:
    """The set's sessions in file order: each single message is a one-turn session."""
    cases = yaml.safe_load(path.read_text())
    return [[c] for c in cases["single"]] + [c["turns"] for c in cases["multi"]]


def summary(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 1), "p95_ms": round(float(np.percentile(a, 95)), 1),
            "mean_ms": round(float(a.mean()), 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llm", default="none", help="the llm= choice (configs/llm/*.yaml)")
    ap.add_argument("--data-dir", default=str(ROOT / "data"))
    ap.add_argument("--cases", default=str(ROOT / "tests/conversation/cases.yaml"))
    ap.add_argument("--sessions", type=int, default=0, help="sessions timed, spread over the set (0 = all)")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--override", action="append", default=[], help="more serve.yaml overrides")
    ap.add_argument("--work-dir", default="/tmp/bench_conversation")
    args = ap.parse_args(argv)

    from fastapi.testclient import TestClient

    from recsys.pipeline.build import compose_serve
    from recsys.serve.app import build_state, create_app

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    db = work / f"feedback-{time.time_ns()}.sqlite"
    cfg = compose_serve(["pipeline=untrained", f"paths.data_dir={args.data_dir}", f"llm={args.llm}", f"feedback_db={db}", *args.override])
    state = build_state(cfg)
    client = TestClient(create_app(state), base_url="http://127.0.0.1")
    sessions = conversation_sessions(Path(args.cases))
    if args.sessions and args.sessions < len(sessions):
        sessions = [sessions[i] for i in np.linspace(0, len(sessions) - 1, args.sessions).round().astype(int)]
    client.post("/conversation", json={"session_id": "warm-up", "message": "a comedy", "k": args.k})
    every, by_source, failures = [], defaultdict(list), 0
    for n, turns in enumerate(sessions):
        for turn in turns:
            payload = {"session_id": f"bench-{n}", "message": turn["m"], "k": args.k}
            if turn.get("user"):
                payload["user_id"] = turn["user"]
            t = time.perf_counter()
            r = client.post("/conversation", json=payload)
            ms = 1000 * (time.perf_counter() - t)
            failures += r.status_code != 200
            every.append(ms)
            by_source[r.json().get("source") or "none" if r.status_code == 200 else "error"].append(ms)
    state.store.close()
    print(json.dumps({"llm": args.llm, "sessions": len(sessions), "http_errors": failures, "turn": summary(every),
                      "by_source": {s: summary(v) for s, v in sorted(by_source.items())}}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
