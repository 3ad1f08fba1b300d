"""Load test on loopback: N concurrent clients for T seconds against `python -m recsys.serve`.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/loadtest.py --clients 50 --duration 60 \
        --data-dir data --report experiments/benchmarks.md            # steady state
    ... --kill-at 30 --report experiments/benchmarks.md               # kill -9 the server at 30 s, restart it

Each client loops: POST /recommend (a known user, 1 in 10 unknown -> cold
start), then POST /feedback for the first item (impression, and a click
1 in 3). Bounded: exactly ``--clients`` coroutines, a per-request timeout,
a fixed duration. Reports throughput, latency percentiles, errors by kind,
and feedback events acknowledged vs found in the SQLite store afterwards
(every acknowledged id must be there, across the kill).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MARK_BEGIN, MARK_END = "<!-- loadtest:{}:begin -->", "<!-- loadtest:{}:end -->"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, port: int, db: Path, log_dir: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "recsys.serve", f"paths.data_dir={args.data_dir}", f"data_name={args.data_name}",
           f"feedback_db={db}", f"port={port}", f"paths.log_dir={log_dir}", *args.override]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(log_dir / "server.err", "ab"),
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 180.0) -> float:
    import httpx

    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; see its stderr")
        try:
            if httpx.get(base + "/health", timeout=1.0).status_code == 200:
                return time.time() - t0
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"server not ready after {timeout} s")


async def client(cid: int, base: str, users: list[str], stop_at: float, stats: dict, rng: random.Random, timeout: float):
    import httpx

    async with httpx.AsyncClient(base_url=base, timeout=timeout) as c:
        while time.time() < stop_at:
            user = users[rng.randrange(len(users))] if rng.random() > 0.1 else f"new-user-{cid}-{rng.randrange(10**6)}"
            t = time.perf_counter()
            try:
                r = await c.post("/recommend", json={"user_id": user, "k": 10})
                stats["rec_ms"].append((time.perf_counter() - t) * 1e3)
                if r.status_code != 200:
                    stats["errors"][f"recommend HTTP {r.status_code}"] += 1
                    continue
                body = r.json()
                stats["ok"] += 1
                if not body["items"]:
                    continue
                events = [{"request_id": body["request_id"], "item_id": body["items"][0]["item_id"], "event": "impression"}]
                if rng.random() < 1 / 3:
                    events.append({**events[0], "event": "click"})
                for ev in events:
                    stats["fb_sent"] += 1
                    t = time.perf_counter()
                    f = await c.post("/feedback", json=ev)
                    stats["fb_ms"].append((time.perf_counter() - t) * 1e3)
                    if f.status_code == 200:
                        stats["acked"].extend(f.json()["event_ids"])
                    else:
                        stats["errors"][f"feedback HTTP {f.status_code}"] += 1
            except httpx.HTTPError as e:  # connection refused/reset while the server is down
                stats["errors"][type(e).__name__ + (" (server down)" if stats["down"] else "")] += 1
                await asyncio.sleep(0.2)


async def run(args, base: str, users: list[str], server_box: list, db: Path, log_dir: Path, port: int) -> dict:
    stats = {"rec_ms": [], "fb_ms": [], "acked": [], "errors": Counter(), "ok": 0, "fb_sent": 0, "down": False}
    t0 = time.time()
    stop_at = t0 + args.duration
    tasks = [asyncio.create_task(client(i, base, users, stop_at, stats, random.Random(args.seed * 1000 + i), args.timeout))
             for i in range(args.clients)]
    restart_s = None
    if args.kill_at is not None:
        await asyncio.sleep(args.kill_at)
        stats["down"] = True
        server_box[0].send_signal(signal.SIGKILL)  # kill -9 mid-run
        server_box[0].wait()
        acked_before_kill = len(stats["acked"])
        server_box[0] = start_server(args, port, db, log_dir)
        restart_s = await asyncio.to_thread(wait_ready, base, server_box[0])
        stats["down"] = False
        stats["acked_before_kill"] = acked_before_kill
    await asyncio.gather(*tasks)
    stats["wall_s"] = time.time() - t0
    stats["restart_s"] = restart_s
    return stats


def pct(a) -> dict:
    a = np.asarray(a) if len(a) else np.zeros(1)
    return {p: float(np.percentile(a, q)) for p, q in (("p50", 50), ("p95", 95), ("p99", 99))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--kill-at", type=float, default=None, help="kill -9 the server this many seconds in, then restart it")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--data-name", default="ml100k")
    ap.add_argument("--work-dir", default="outputs/loadtest")
    ap.add_argument("--override", action="append", default=[], help="extra serve.yaml override")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report", default=None)
    args = ap.parse_args(argv)

    import pandas as pd

    work = Path(args.work_dir) / ("kill" if args.kill_at is not None else "steady")
    work.mkdir(parents=True, exist_ok=True)
    db = work / "feedback.sqlite"
    for f in work.glob("feedback.sqlite*"):
        f.unlink()
    users = pd.read_parquet(Path(args.data_dir) / args.data_name / "users.parquet")["user_id"].astype(str).tolist()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = [start_server(args, port, db, work)]
    try:
        startup = wait_ready(base, server[0])
        stats = asyncio.run(run(args, base, users, server, db, work, port))
    finally:
        if server[0].poll() is None:
            server[0].send_signal(signal.SIGTERM)
            server[0].wait(30)
    from recsys.serve.feedback_store import FeedbackStore

    present = FeedbackStore(db).event_ids()
    acked = set(stats["acked"])
    result = {
        "clients": args.clients, "duration_s": args.duration, "kill_at_s": args.kill_at, "startup_s": startup,
        "restart_s": stats["restart_s"], "wall_s": stats["wall_s"],
        "recommend_ok": stats["ok"], "throughput_rps": stats["ok"] / stats["wall_s"],
        "recommend_ms": pct(stats["rec_ms"]), "feedback_ms": pct(stats["fb_ms"]),
        "errors": dict(stats["errors"]), "feedback_sent": stats["fb_sent"], "feedback_acked": len(acked),
        "feedback_written": len(present), "acked_missing": len(acked - present),
        "written_not_acked": len(present - acked),
    }
    print(json.dumps(result, indent=2))
    if args.report:
        write_report(Path(args.report), result, argv)
    return 0 if result["acked_missing"] == 0 else 1


def write_report(path: Path, r: dict, argv) -> None:
    kind = "kill" if r["kill_at_s"] is not None else "steady"
    cmd = "OMP_NUM_THREADS=1 .venv/bin/python scripts/loadtest.py " + " ".join(sys.argv[1:] if argv is None else argv)
    title = (f"## Load test with kill -9 of the server at {r['kill_at_s']:.0f} s (scripts/loadtest.py)" if kind == "kill"
             else "## Load test, steady state (scripts/loadtest.py)")
    errors = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "none"
    lines = [MARK_BEGIN.format(kind), title, "", f"Command: `{cmd}`", "",
             f"{r['clients']} concurrent clients for {r['duration_s']:.0f} s on loopback against one server process "
             f"(ML-100K, default pipeline, ready {r['startup_s']:.1f} s after start); shared 2-core machine.", "",
             "| metric | value |", "|---|---|",
             f"| /recommend OK | {r['recommend_ok']} ({r['throughput_rps']:.1f} req/s) |",
             f"| /recommend latency p50 / p95 / p99 | {r['recommend_ms']['p50']:.0f} / {r['recommend_ms']['p95']:.0f} / {r['recommend_ms']['p99']:.0f} ms |",
             f"| /feedback latency p50 / p95 / p99 | {r['feedback_ms']['p50']:.0f} / {r['feedback_ms']['p95']:.0f} / {r['feedback_ms']['p99']:.0f} ms |",
             f"| errors | {errors} |",
             f"| feedback sent / acknowledged / in the store | {r['feedback_sent']} / {r['feedback_acked']} / {r['feedback_written']} |",
             f"| acknowledged but missing | **{r['acked_missing']}** |",
             f"| in the store but not acknowledged (reply lost in the kill) | {r['written_not_acked']} |"]
    if kind == "kill":
        lines.append(f"| server restart (kill -9 -> healthy) | {r['restart_s']:.1f} s |")
    lines += ["", MARK_END.format(kind)]
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    b, e = MARK_BEGIN.format(kind), MARK_END.format(kind)
    if b in old and e in old:
        pre, rest = old.split(b, 1)
        path.write_text(pre + "\n".join(lines) + rest.split(e, 1)[1])
    else:
        path.write_text(old.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
