"""Load test on loopback: N concurrent clients for T seconds against `python -m recsys.serve`.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/loadtest.py --clients 50 --duration 60 --workers 2 \
        --data-dir data --report experiments/benchmarks.md                       # steady state
    ... --kill one --kill-at 30 --report experiments/benchmarks.md               # kill -9 one worker at 30 s
    ... --kill server --kill-at 30 --report experiments/benchmarks.md            # kill -9 every process, restart

Each client loops: POST /recommend (a known user, 1 in 10 unknown -> cold
start), then POST /feedback for the first item (impression, and a click
1 in 3). A feedback call that fails on the connection (its worker was killed)
is retried until it gets an answer (safe: feedback is idempotent, a retry of a
stored event is acknowledged with the stored id). Bounded: exactly
``--clients`` coroutines, a per-request timeout, a fixed duration.

Kill modes at ``--kill-at``: ``one`` kill -9 one worker (uvicorn's supervisor
starts another; the others keep serving), ``workers`` kill -9 every worker
(the supervisor restarts them), ``server`` kill -9 the supervisor and every
worker at once (this script restarts the server).

Reports throughput, latency percentiles, errors by kind, the load average, and
the store check afterwards: every acknowledged id is stored, no
(request, item, event) is stored twice, and what was stored without an ack.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MARK_BEGIN, MARK_END = "<!-- loadtest:{}:begin -->", "<!-- loadtest:{}:end -->"


def make_server(args, db: Path, log_dir: Path, port: int | None = None):
    from recsys.serve.process import ServerProcess

    return ServerProcess([f"pipeline={args.pipeline}", f"paths.data_dir={args.data_dir}", f"data_name={args.data_name}", f"feedback_db={db}",
                          f"paths.log_dir={log_dir}", f"workers={args.workers}", *args.override],
                         log_dir / "server.err", port=port)


class HttpxClient:
    """httpx with RawClient's interface (``--client httpx``: the generator the first audit used)."""

    def __init__(self, base: str, timeout: float):
        import httpx

        self.c = httpx.AsyncClient(base_url=base, timeout=timeout)

    async def post(self, path: str, payload):
        r = await self.c.post(path, json=payload)
        return r.status_code, r.json()

    def close(self) -> None:
        pass


def transport_errors() -> tuple:
    import httpx

    from http_client import ConnectionDropped

    return (ConnectionDropped, httpx.HTTPError)


async def post_feedback(c, ev: dict, stats: dict, retry_until: float) -> None:
    """POST one event; on a connection error retry (idempotent) until it is answered or ``retry_until``."""
    while True:
        t = time.perf_counter()
        try:
            status, ack = await c.post("/feedback", ev)
        except transport_errors() as e:
            stats["errors"][f"feedback {type(e).__name__} (retried)"] += 1
            if time.time() > retry_until:
                stats["fb_unanswered"] += 1
                return
            await asyncio.sleep(0.2)
            continue
        stats["fb_ms"].append((time.perf_counter() - t) * 1e3)
        if status == 200:
            stats["acked"].extend(ack["event_ids"])
            stats["acked_again"] += ack["new"].count(False)
        else:
            stats["errors"][f"feedback HTTP {status}"] += 1
        return


async def client(cid: int, base: str, users: list[str], stop_at: float, stats: dict, rng: random.Random, args):
    from http_client import RawClient

    port = int(base.rsplit(":", 1)[1])
    c = RawClient("127.0.0.1", port, args.timeout) if args.client == "raw" else HttpxClient(base, args.timeout)
    try:
        while time.time() < stop_at:
            user = users[rng.randrange(len(users))] if rng.random() > 0.1 else f"new-user-{cid}-{rng.randrange(10**6)}"
            t = time.perf_counter()
            try:
                status, body = await c.post("/recommend", {"user_id": user, "k": 10})
            except transport_errors() as e:  # connection refused/reset while a worker or the server is down
                stats["errors"][f"recommend {type(e).__name__}" + (" (during kill)" if stats["down"] else "")] += 1
                await asyncio.sleep(0.2)
                continue
            stats["rec_ms"].append((time.perf_counter() - t) * 1e3)
            if status != 200:
                stats["errors"][f"recommend HTTP {status}"] += 1
                continue
            stats["ok"] += 1
            if not body["items"]:
                continue
            events = [{"request_id": body["request_id"], "item_id": body["items"][0]["item_id"], "event": "impression"}]
            if rng.random() < 1 / 3:
                events.append({**events[0], "event": "click"})
            for ev in events:
                stats["fb_sent"] += 1
                await post_feedback(c, ev, stats, stop_at + args.retry_s)
    finally:
        c.close()


async def run(args, users: list[str], server_box: list, db: Path, work: Path) -> dict:
    stats = {"rec_ms": [], "fb_ms": [], "acked": [], "errors": Counter(), "ok": 0, "fb_sent": 0, "down": False,
             "acked_again": 0, "fb_unanswered": 0}
    base = server_box[0].base
    pids = [server_box[0].proc.pid, *server_box[0].worker_pids()]
    cpu0, own0 = cpu_s(pids), time.process_time()
    t0 = time.time()
    stop_at = t0 + args.duration
    tasks = [asyncio.create_task(client(i, base, users, stop_at, stats, random.Random(args.seed * 1000 + i), args))
             for i in range(args.clients)]
    recovery_s = killed = None
    if args.kill is not None:
        await asyncio.sleep(args.kill_at)
        stats["down"] = True
        srv = server_box[0]
        t_kill = time.time()
        if args.kill == "server":
            killed = srv.kill_all()
            server_box[0] = make_server(args, db, work, port=srv.port).start()
            await asyncio.to_thread(server_box[0].wait_ready, 300.0, args.workers)
        else:
            killed = srv.kill_workers(1 if args.kill == "one" else None)
            await asyncio.to_thread(_wait_replaced, srv, set(killed), args.workers)
        recovery_s = time.time() - t_kill
        stats["down"] = False
    await asyncio.gather(*tasks)
    # CPU used by the server and by this load generator (a kill loses the dead workers' share: steady runs only)
    stats.update(wall_s=time.time() - t0, recovery_s=recovery_s, killed=killed,
                 server_cpu_s=None if killed else cpu_s(pids) - cpu0, client_cpu_s=time.process_time() - own0)
    return stats


def _wait_replaced(srv, killed: set[int], workers: int, timeout: float = 300.0) -> None:
    """Until the supervisor runs ``workers`` workers, none of them killed, and /health answers from all."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        pids = set(srv.worker_pids())
        if len(pids) == workers and not pids & killed:
            srv.wait_ready(timeout - (time.time() - t0), workers)
            return
        time.sleep(0.2)
    raise TimeoutError("killed workers were not replaced")


def cpu_s(pids) -> float:
    """User + system CPU seconds used so far by ``pids`` (those still alive)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def pct(a) -> dict:
    a = np.asarray(a) if len(a) else np.zeros(1)
    return {p: float(np.percentile(a, q)) for p, q in (("p50", 50), ("p95", 95), ("p99", 99))}


def check_store(db: Path, acked: list[int]) -> dict:
    from recsys.serve.stores import open_store

    with open_store(db) as store:
        ev = store.events()
    present, acked_set = set(ev["event_id"].tolist()), set(acked)
    return {"feedback_acked": len(acked_set), "feedback_written": len(present),
            "acked_missing": len(acked_set - present), "written_not_acked": len(present - acked_set),
            "stored_twice": int(ev.duplicated(["request_id", "item_idx", "event"]).sum())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--workers", type=int, default=2, help="server processes (serve.yaml workers)")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--client", choices=("raw", "httpx"), default="raw",
                    help="raw: scripts/http_client.py (~10x less CPU per request); httpx: the first audit's")
    ap.add_argument("--kill", choices=("one", "workers", "server"), default=None)
    ap.add_argument("--kill-at", type=float, default=30.0, help="seconds into the run (with --kill)")
    ap.add_argument("--retry-s", type=float, default=60.0, help="how long after the end unanswered feedback is retried")
    ap.add_argument("--pipeline", default="untrained",
                    help="configs/pipeline/<name>.yaml; untrained needs no trained run (the serving default, "
                         "seq_ranked, needs its journey's runs: name them with --override pipeline.artifacts...)")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--data-name", default="ml100k")
    ap.add_argument("--work-dir", default="outputs/loadtest")
    ap.add_argument("--override", action="append", default=[], help="extra serve.yaml override")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report", default=None)
    args = ap.parse_args(argv)

    import pandas as pd

    kind = (f"kill-{args.kill}" if args.kill else "steady") + ("" if args.client == "raw" else f"-{args.client}") \
        + ("" if args.pipeline == "untrained" else f"-{args.pipeline}")
    work = Path(args.work_dir) / kind
    work.mkdir(parents=True, exist_ok=True)
    db = work / "feedback.sqlite"
    for f in work.glob("feedback.sqlite*"):
        f.unlink()
    users = pd.read_parquet(Path(args.data_dir) / args.data_name / "users.parquet")["user_id"].astype(str).tolist()
    load_before = os.getloadavg()
    server = [make_server(args, db, work).start()]
    try:
        startup = server[0].wait_ready(300.0, args.workers)
        stats = asyncio.run(run(args, users, server, db, work))
    finally:
        server[0].stop()
    result = {
        "kind": kind, "pipeline": args.pipeline, "client": args.client, "clients": args.clients, "duration_s": args.duration, "workers": args.workers,
        "kill_at_s": args.kill_at if args.kill else None, "startup_s": startup, "recovery_s": stats["recovery_s"],
        "killed_pids": stats["killed"], "wall_s": stats["wall_s"], "load_before": load_before,
        "load_after": os.getloadavg(), "recommend_ok": stats["ok"], "throughput_rps": stats["ok"] / stats["wall_s"],
        "recommend_ms": pct(stats["rec_ms"]), "feedback_ms": pct(stats["fb_ms"]), "errors": dict(stats["errors"]),
        "feedback_sent": stats["fb_sent"], "feedback_unanswered": stats["fb_unanswered"],
        "acked_again": stats["acked_again"], **check_store(db, stats["acked"]),
        "server_cpu_ms_per_ok": None if stats["server_cpu_s"] is None else 1e3 * stats["server_cpu_s"] / max(1, stats["ok"]),
        "client_cpu_ms_per_ok": 1e3 * stats["client_cpu_s"] / max(1, stats["ok"]),
    }
    if result["server_cpu_ms_per_ok"] is not None:  # what 2 otherwise idle cores would sustain at this CPU cost
        result["cpu_bound_rps_2_cores"] = 2e3 / (result["server_cpu_ms_per_ok"] + result["client_cpu_ms_per_ok"])
    print(json.dumps(result, indent=2))
    if args.report:
        write_report(Path(args.report), result, argv)
    return 0 if result["acked_missing"] == 0 and result["stored_twice"] == 0 else 1


def write_report(path: Path, r: dict, argv) -> None:
    kind = r["kind"]
    mode = kind.split("-httpx")[0].removesuffix(f"-{r['pipeline']}")
    cmd = "OMP_NUM_THREADS=1 .venv/bin/python scripts/loadtest.py " + " ".join(sys.argv[1:] if argv is None else argv)
    at = f"{r['kill_at_s']:.0f} s" if r["kill_at_s"] is not None else ""
    what = {"steady": "steady state", "kill-one": f"kill -9 of one worker at {at}",
            "kill-workers": f"kill -9 of every worker at {at} (the supervisor restarts them)",
            "kill-server": f"kill -9 of the supervisor and every worker at {at}, then a restart"}[mode]
    errors = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "none"
    lb, la = r["load_before"], r["load_after"]
    client = "" if r["client"] == "raw" else f", {r['client']} client"
    lines = [MARK_BEGIN.format(kind), f"## Load test, {what}{client} (scripts/loadtest.py)", "", f"Command: `{cmd}`", "",
             f"{r['clients']} concurrent clients ({r['client']} HTTP client) for {r['duration_s']:.0f} s on loopback against {r['workers']} worker "
             f"process(es) (ML-100K, pipeline {r['pipeline']}, all workers ready {r['startup_s']:.1f} s after start); "
             f"shared 2-core machine, load average {lb[0]:.1f} / {lb[1]:.1f} / {lb[2]:.1f} (1/5/15 min) before, "
             f"{la[0]:.1f} / {la[1]:.1f} / {la[2]:.1f} after.", "",
             "| metric | value |", "|---|---|",
             f"| /recommend OK | {r['recommend_ok']} ({r['throughput_rps']:.1f} req/s) |",
             f"| /recommend latency p50 / p95 / p99 | {r['recommend_ms']['p50']:.0f} / {r['recommend_ms']['p95']:.0f} / {r['recommend_ms']['p99']:.0f} ms |",
             f"| /feedback latency p50 / p95 / p99 | {r['feedback_ms']['p50']:.0f} / {r['feedback_ms']['p95']:.0f} / {r['feedback_ms']['p99']:.0f} ms |",
             f"| errors | {errors} |",
             f"| feedback sent / acknowledged / in the store | {r['feedback_sent']} / {r['feedback_acked']} / {r['feedback_written']} |",
             f"| acknowledged but missing | **{r['acked_missing']}** |",
             f"| (request, item, event) stored twice | **{r['stored_twice']}** |",
             f"| retries acknowledged with the stored id (reply lost in the kill) | {r['acked_again']} |",
             f"| in the store but never acknowledged / never answered | {r['written_not_acked']} / {r['feedback_unanswered']} |"]
    if r.get("cpu_bound_rps_2_cores") is not None:
        lines.append(f"| CPU per /recommend loop (+ its feedback): server / load generator | "
                     f"{r['server_cpu_ms_per_ok']:.2f} / {r['client_cpu_ms_per_ok']:.2f} ms |")
        lines.append(f"| CPU-bound ceiling on 2 idle cores, 2000 / (server + client ms) | "
                     f"{r['cpu_bound_rps_2_cores']:.0f} req/s |")
    if r["recovery_s"] is not None:
        lines.append(f"| kill -9 -> every worker healthy again | {r['recovery_s']:.1f} s |")
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
    sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
    raise SystemExit(main())
