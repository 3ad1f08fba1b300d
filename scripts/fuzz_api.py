"""Property-based fuzzing of a running server from its own OpenAPI schema (schemathesis + hypothesis).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/fuzz_api.py --requests 6000 --workers 2 --data-dir data \
        --report experiments/benchmarks.md

Starts ``python -m recsys.serve`` (``--workers`` processes) on loopback, reads
``/openapi.json`` and sends exactly ``--requests`` requests, drawn by
hypothesis from schemathesis' strategies for every operation, in both of its
modes: schema-valid data (positive) and schema-violating data (negative).
About one case in three is mutated into what a JSON schema cannot express:
NaN/Infinity/1e999 and 5,000-digit numbers in place of numbers, lone
surrogates, NUL and 100 k-character strings in place of strings, truncated or
deeply nested JSON, bodies over the size limit, a foreign ``Host``. About one
in two feedback cases uses a request id and item the server really served,
so the feedback rules run, not only the 404. A thread asks ``/health`` every
0.2 s throughout. Fails (exit 1) on any HTTP 5xx, or any ``/health`` that did
not answer 200 within 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK_BEGIN, MARK_END = "<!-- fuzz_api:begin -->", "<!-- fuzz_api:end -->"
HOSTILE_NUMBERS = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"9" * 5000, b"true", b"99999999999999999999999"]
HOSTILE_STRINGS = ['"\\ud800"', '"\\udfff\\ud800x"', '"a\\u0000b"', '"' + "z" * 100_000 + '"', '"\\u202e\\ufeff"']


def mutate(body: bytes, rng: random.Random, max_body: int) -> tuple[bytes, dict]:
    """A hostile variant of a JSON body -> (bytes, extra headers)."""
    kind = rng.randrange(7)
    text = body.decode("utf-8", "surrogateescape") if body else "{}"  # any bytes round-trip
    if kind == 0:  # a number becomes NaN, Infinity, a huge literal or a boolean
        import re

        spots = [m.span() for m in re.finditer(r"(?<![\w\"])-?\d+(\.\d+)?([eE][-+]?\d+)?(?![\w\"])", text)]
        if spots:
            a, b = rng.choice(spots)
            return text[:a].encode(errors="surrogateescape") + rng.choice(HOSTILE_NUMBERS) + \
                text[b:].encode(errors="surrogateescape"), {}
        return b'{"k": NaN, "user_id": "1"}', {}
    if kind == 1:  # a string becomes a lone surrogate, NUL, 100k characters
        import re

        spots = [m.span() for m in re.finditer(r'"(?:[^"\\]|\\.)*"', text)]
        if spots:
            a, b = rng.choice(spots)
            return (text[:a] + rng.choice(HOSTILE_STRINGS) + text[b:]).encode("utf-8", "surrogateescape"), {}
        return b'{"user_id": "\\ud800"}', {}
    if kind == 2:  # truncated JSON
        return body[: rng.randrange(max(1, len(body)))], {}
    if kind == 3:  # deep nesting
        depth = rng.choice([50, 1000, 100_000])
        return b"[" * depth + b"]" * depth, {}
    if kind == 4:  # over the body limit
        return b'{"query": "' + b"x" * (max_body + 10) + b'"}', {}
    if kind == 5:  # a foreign Host (DNS rebinding)
        return body, {"Host": rng.choice(["evil.example", "127.0.0.1.attacker.example", "[::2]"])}
    return body, {"Content-Type": rng.choice(["text/plain", "application/json; charset=latin-1", "application/x-www-form-urlencoded"])}


def health_monitor(base: str, stop: threading.Event, out: dict) -> None:
    import httpx

    with httpx.Client(timeout=5.0) as c:
        while not stop.is_set():
            t = time.perf_counter()
            try:
                ok = c.get(base + "/health").status_code == 200
            except httpx.HTTPError:
                ok = False
            out["checks"] += 1
            out["failures"] += not ok
            out["max_ms"] = max(out["max_ms"], (time.perf_counter() - t) * 1e3)
            stop.wait(0.2)


def served_lists(base: str, n: int = 30) -> list[dict]:
    import httpx

    out = []
    for u in range(1, n + 1):
        body = httpx.post(base + "/recommend", json={"user_id": str(u), "k": 10}, timeout=30).json()
        out.append({"request_id": body["request_id"], "items": [it["item_id"] for it in body["items"]]})
    return out


def fuzz(base: str, n_requests: int, seed: int, max_body: int) -> dict:
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(base + "/openapi.json")
    ops = [r.ok() for r in schema.get_all_operations()]
    strategies = [op.as_strategy(generation_mode=mode) for op in ops for mode in GenerationMode]
    rng, session, served = random.Random(seed), requests.Session(), served_lists(base)
    stats = {"sent": 0, "status": Counter(), "by_op": Counter(), "mutated": 0, "server_errors": []}

    @settings(max_examples=n_requests, database=None, deadline=None, phases=[Phase.generate], derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(strategies))
    def one(case) -> None:
        if stats["sent"] >= n_requests:
            return
        if case.path.startswith("/feedback") and isinstance(case.body, dict) and rng.random() < 0.5:
            _use_served(case.body, served, rng)
        kwargs = case.as_transport_kwargs(base_url=base)
        headers = {**(kwargs.get("headers") or {}), "Host": "127.0.0.1"}
        body = kwargs.pop("json", None)
        data = kwargs.pop("data", None) if body is None else json.dumps(body).encode()
        if rng.random() < 0.33 and case.method.upper() == "POST":
            data, extra = mutate(data if isinstance(data, bytes) else b"", rng, max_body)
            headers.update({"Content-Type": "application/json", **extra})
            stats["mutated"] += 1
        elif data is not None:
            headers.setdefault("Content-Type", "application/json")
        try:
            r = session.request(kwargs["method"], kwargs["url"], params=kwargs.get("params"), headers=headers,
                                data=data, timeout=30)
            status = r.status_code
        except requests.RequestException as e:  # a dropped connection is a failure too
            status = f"no answer ({type(e).__name__})"
        stats["sent"] += 1
        stats["status"][status] += 1
        stats["by_op"][f"{case.method.upper()} {case.path}"] += 1
        if not isinstance(status, int) or status >= 500:
            stats["server_errors"].append(f"{status} {case.method} {case.path} {str(data)[:200]}")

    while stats["sent"] < n_requests:  # hypothesis may stop a run early (exhausted strategies): go on
        before = stats["sent"]
        one()
        if stats["sent"] == before:
            break
    return stats


def _use_served(body: dict, served: list[dict], rng: random.Random) -> None:
    lst = rng.choice(served)
    for ev in body.get("events", [body]) if isinstance(body.get("events", None), list) else [body]:
        if isinstance(ev, dict):
            ev["request_id"] = lst["request_id"]
            if lst["items"]:
                ev["item_id"] = rng.choice(lst["items"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=6000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--data-name", default="ml100k")
    ap.add_argument("--work-dir", default="outputs/fuzz")
    ap.add_argument("--override", action="append", default=[])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report", default=None)
    args = ap.parse_args(argv)

    from recsys.serve.process import ServerProcess

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    for f in work.glob("feedback.sqlite*"):
        f.unlink()
    srv = ServerProcess(["pipeline=untrained", f"paths.data_dir={args.data_dir}", f"data_name={args.data_name}",
                         f"feedback_db={work / 'feedback.sqlite'}", f"paths.log_dir={work}", f"workers={args.workers}",
                         *args.override], work / "server.err")
    health = {"checks": 0, "failures": 0, "max_ms": 0.0}
    stop = threading.Event()
    t0 = time.time()
    with srv:
        srv.wait_ready(workers=args.workers)
        monitor = threading.Thread(target=health_monitor, args=(srv.base, stop, health), daemon=True)
        monitor.start()
        try:
            stats = fuzz(srv.base, args.requests, args.seed, max_body=262_144)
        finally:
            stop.set()
            monitor.join(10)
    log_bytes = (work / "server.err").stat().st_size if (work / "server.err").exists() else 0
    longest = max((len(line) for line in open(work / "server.err", "rb")), default=0) if log_bytes else 0
    result = {"requests": stats["sent"], "mutated": stats["mutated"], "wall_s": time.time() - t0,
              "status": {str(k): v for k, v in sorted(stats["status"].items(), key=str)},
              "http_5xx_or_no_answer": len(stats["server_errors"]), "first_errors": stats["server_errors"][:10],
              "health": health, "server_log_bytes": log_bytes, "longest_log_line": longest,
              "by_operation": dict(stats["by_op"]), "load_after": os.getloadavg()}
    print(json.dumps(result, indent=2))
    if args.report:
        write_report(Path(args.report), result, argv)
    return 0 if result["http_5xx_or_no_answer"] == 0 and health["failures"] == 0 else 1


def write_report(path: Path, r: dict, argv) -> None:
    cmd = "OMP_NUM_THREADS=1 .venv/bin/python scripts/fuzz_api.py " + " ".join(sys.argv[1:] if argv is None else argv)
    h = r["health"]
    lines = [MARK_BEGIN, "## API fuzzing from the OpenAPI schema (scripts/fuzz_api.py)", "", f"Command: `{cmd}`", "",
             f"{r['requests']} requests ({r['mutated']} mutated beyond the schema) in {r['wall_s']:.0f} s; status "
             f"counts {r['status']}. Per operation: {r['by_operation']}.", "",
             "| metric | value |", "|---|---|",
             f"| HTTP 5xx or no answer | **{r['http_5xx_or_no_answer']}** |",
             f"| /health checks during the run (failed) | {h['checks']} ({h['failures']}), slowest {h['max_ms']:.0f} ms |",
             f"| server log after the run: bytes / longest line | {r['server_log_bytes']} / {r['longest_log_line']} |",
             "", MARK_END]
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
