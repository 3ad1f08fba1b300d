"""Feedback ingestion: acknowledged (durable) events per second, in the store and over HTTP.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_feedback.py --data-dir data --report experiments/benchmarks.md

1. Store: ``--threads`` callers each append one-event units in a loop for
   ``--duration`` s, each waiting for its ack (an ack = the durable commit that
   covers the event: SQLite WAL with ``synchronous=FULL``, so every commit is an
   fsync). Group commit (``store`` options of serve.yaml) against one fsync per
   event (``commit_window_ms=0, max_batch=1``, the old store), on SQLite and,
   with ``--postgres``, on a throwaway PostgreSQL server (initdb + pg_ctl).
2. HTTP: ``python -m recsys.serve`` with ``--workers`` processes and
   ``--clients`` concurrent clients that post every (item, event) of served
   lists, one event per ``POST /feedback``, then 20 per ``POST /feedback/batch``.

After each run every acknowledged id is checked in the store.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK_BEGIN, MARK_END = "<!-- bench_feedback:begin -->", "<!-- bench_feedback:end -->"


def bench_store(target: str, threads: int, duration: float, **store_kw) -> dict:
    from recsys.serve.stores import Event, open_store

    store = open_store(target, **store_kw)
    commits, acked, stop = [], [], time.time() + duration
    original = store._commit_batch
    store._commit_batch = lambda conn, batch: commits.append(len(batch)) or original(conn, batch)

    def caller(t: int) -> None:
        i = 0
        while time.time() < stop:
            acked.append(store.append(Event(f"bench-{t}", "u", 0, i, "click")))
            i += 1

    t0 = time.time()
    workers = [threading.Thread(target=caller, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.time() - t0
    present = store.event_ids()
    store.close()
    return {"events_per_s": len(acked) / wall, "acked": len(acked), "commits": len(commits),
            "events_per_commit": len(acked) / max(1, len(commits)), "acked_missing": len(set(acked) - present)}


async def http_client(port: int, stop_at: float, batch: int, acked: list, errors: list, cid: int) -> None:
    from http_client import RawClient

    c = RawClient("127.0.0.1", port)
    n = 0
    try:
        while time.time() < stop_at:
            status, body = await c.post("/recommend", {"user_id": str(1 + (cid * 97 + n) % 900), "k": 10})
            n += 1
            if status != 200:
                errors.append(f"recommend {status}")
                continue
            events = [{"request_id": body["request_id"], "item_id": it["item_id"], "event": e}
                      for it in body["items"] for e in ("impression", "click", "skip")]
            for j in range(0, len(events), batch):
                if time.time() >= stop_at:
                    return
                chunk = events[j:j + batch]
                status, ack = (await c.post("/feedback", chunk[0]) if batch == 1
                               else await c.post("/feedback/batch", {"events": chunk}))
                if status == 200:
                    acked.extend(ack["event_ids"])
                else:
                    errors.append(f"feedback {status}")
    finally:
        c.close()


def bench_http(args, batch: int) -> dict:
    from recsys.serve.process import ServerProcess
    from recsys.serve.stores import open_store

    work = Path(tempfile.mkdtemp(prefix="bench-feedback-"))
    db = work / "feedback.sqlite"
    with ServerProcess(["pipeline=untrained", f"paths.data_dir={args.data_dir}", f"data_name={args.data_name}", f"feedback_db={db}",
                        f"paths.log_dir={work}", f"workers={args.workers}", *args.override], work / "server.err") as srv:
        srv.wait_ready(workers=args.workers)
        acked, errors = [], []
        t0 = time.time()

        async def run():
            stop_at = time.time() + args.duration
            await asyncio.gather(*(http_client(srv.port, stop_at, batch, acked, errors, i) for i in range(args.clients)))

        asyncio.run(run())
        wall = time.time() - t0
    with open_store(db) as store:
        present = store.event_ids()
    return {"events_per_s": len(acked) / wall, "acked": len(acked), "events_per_call": batch,
            "errors": len(errors), "acked_missing": len(set(acked) - present)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=64, help="concurrent store callers")
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--clients", type=int, default=50, help="concurrent HTTP clients")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--postgres", action="store_true", help="also measure the PostgreSQL store")
    ap.add_argument("--no-http", action="store_true")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--data-name", default="ml100k")
    ap.add_argument("--override", action="append", default=[])
    ap.add_argument("--report", default=None)
    args = ap.parse_args(argv)

    rows, load_before = [], os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for label, kw in (("group commit (window 2 ms, <= 1000 units)", {}),
                          ("one fsync per event (window 0, 1 unit)", {"commit_window_ms": 0, "max_batch": 1})):
            r = bench_store(str(Path(tmp) / f"{len(rows)}.sqlite"), args.threads, args.duration, **kw)
            rows.append({"where": f"SQLite store, {args.threads} threads", "how": label, **r})
            print(json.dumps(rows[-1]), flush=True)
    if args.postgres:
        from recsys.serve.stores.local_postgres import LocalPostgres

        with LocalPostgres() as pg:
            r = bench_store(pg.url, args.threads, args.duration)
            rows.append({"where": f"PostgreSQL 15 store, {args.threads} threads", "how": "group commit", **r})
            print(json.dumps(rows[-1]), flush=True)
    if not args.no_http:
        for batch in (1, 20):
            r = bench_http(args, batch)
            how = "POST /feedback (1 event)" if batch == 1 else f"POST /feedback/batch ({batch} events)"
            rows.append({"where": f"HTTP, {args.workers} workers, {args.clients} clients, SQLite", "how": how, **r})
            print(json.dumps(rows[-1]), flush=True)
    if args.report:
        write_report(Path(args.report), rows, load_before, os.getloadavg(), argv)
    return 0 if all(r["acked_missing"] == 0 for r in rows) else 1


def write_report(path: Path, rows: list[dict], before, after, argv) -> None:
    cmd = "OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_feedback.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [MARK_BEGIN, "## Feedback ingestion (scripts/bench_feedback.py)", "", f"Command: `{cmd}`", "",
             "Acknowledged = durable (the fsynced commit covering the event returned). Shared 2-core machine, "
             f"load average {before[0]:.1f} before, {after[0]:.1f} after (1 min).", "",
             "| where | how | acknowledged events/s | events per commit | acknowledged but missing |", "|---|---|---|---|---|"]
    for r in rows:
        per = f"{r['events_per_commit']:.1f}" if "events_per_commit" in r else "-"
        lines.append(f"| {r['where']} | {r['how']} | {r['events_per_s']:,.0f} | {per} | {r['acked_missing']} |")
    lines += ["", MARK_END]
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    if MARK_BEGIN in old and MARK_END in old:
        pre, rest = old.split(MARK_BEGIN, 1)
        path.write_text(pre + "\n".join(lines) + rest.split(MARK_END, 1)[1])
    else:
        path.write_text(old.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
    raise SystemExit(main())
