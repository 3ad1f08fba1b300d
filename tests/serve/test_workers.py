"""`workers: N` starts N processes that share state through the store (feedback, conversation sessions);
kill -9 loses no acknowledged event.

Real servers (``python -m recsys.serve`` as a user starts it, ``recsys.serve.process.ServerProcess``)
on prepared ML-100K: one with 2 workers over a real PostgreSQL server, one with 2 workers over SQLite
that is killed (one worker, then every process) while clients send feedback.
"""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import pandas as pd
import pytest

from recsys.pipeline.build import compose_serve
from recsys.serve.__main__ import check_ports
from recsys.serve.process import ServerProcess
from recsys.serve.stores import open_store


def overrides(ml100k_dir, db, tmp_path, workers=2):
    return ["pipeline=untrained", f"paths.data_dir={ml100k_dir.parent}", "data_name=ml100k", "pipeline.sources.content=null",
            f"feedback_db={db}", f"paths.log_dir={tmp_path / 'logs'}", f"workers={workers}",
            "shared_state_staleness_s=0.2"]


def worker_of(response) -> str:
    return response.headers["x-log-id"].split("-")[0]


def fresh_post(base: str, path: str, payload) -> httpx.Response:
    """POST on a new connection, so that any worker may take it."""
    return httpx.post(base + path, json=payload, timeout=30)


def test_default_ports_are_distinct_and_a_self_call_is_refused():
    from urllib.parse import urlsplit

    cfg = compose_serve(["pipeline=untrained", "llm=openai"])
    assert urlsplit(cfg.llm.backend.base_url).port != cfg.port  # the recommender and the LLM server
    check_ports(cfg)
    with pytest.raises(ValueError, match="own address"):
        check_ports(compose_serve(["pipeline=untrained", "llm=openai", f"port={urlsplit(cfg.llm.backend.base_url).port}"]))


def test_a_server_that_lost_its_free_port_to_another_process_restarts_on_a_new_one(ml100k_dir, tmp_path):
    """free_port() closes its socket before the server binds: another process can take the port in between
    (uvicorn then exits with "Address already in use"). A picked port is re-picked; a given one is not."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        over = overrides(ml100k_dir, tmp_path / "fb.sqlite", tmp_path, workers=1)
        srv = ServerProcess(over, tmp_path / "picked.err")
        srv.port, srv.base = port, f"http://127.0.0.1:{port}"  # as if another process had taken the picked port
        with srv:
            srv.wait_ready()
            assert srv.port != port and httpx.get(srv.base + "/health", timeout=10).status_code == 200
        with ServerProcess(over, tmp_path / "given.err", port=port) as given, pytest.raises(RuntimeError, match="exited"):
            given.wait_ready()
    assert "address already in use" in (tmp_path / "picked.err").read_text().lower()


def test_serve_config_keys_compose():
    cfg = compose_serve(["pipeline=untrained", "workers=3"])
    assert cfg.workers == 3 and list(cfg.allowed_hosts) == ["127.0.0.1", "localhost", "[::1]"]
    assert cfg.max_body_bytes > 0 and cfg.store.commit_window_ms > 0 and cfg.feedback.burst >= 1


@pytest.mark.slow
def test_two_workers_share_feedback_through_postgres(ml100k_dir, tmp_path, postgres_url):
    with ServerProcess(overrides(ml100k_dir, postgres_url, tmp_path), tmp_path / "server.err") as srv:
        srv.wait_ready(workers=2)
        assert len(srv.worker_pids()) == 2
        rec = fresh_post(srv.base, "/recommend", {"user_id": "196", "k": 10})
        body, serving = rec.json(), worker_of(rec)
        skipped = [it["item_id"] for it in body["items"][:3]]
        # the feedback goes to whichever worker takes it; the served record is in the store for all
        for item in skipped:
            r = fresh_post(srv.base, "/feedback", {"request_id": body["request_id"], "item_id": item, "event": "skip"})
            assert r.status_code == 200, r.text
        time.sleep(0.5)  # > shared_state_staleness_s
        workers_seen = set()
        for _ in range(40):
            again = fresh_post(srv.base, "/recommend", {"user_id": "196", "k": 30})
            workers_seen.add(worker_of(again))
            assert not set(skipped) & {it["item_id"] for it in again.json()["items"]}, worker_of(again)
            if len(workers_seen) == 2:
                break
        assert len(workers_seen) == 2, "every answer came from one worker"
        assert serving in workers_seen
    with open_store(postgres_url) as store:
        assert store.events()["event"].tolist()[-3:] == ["skip"] * 3


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_conversation_continues_on_another_worker(ml100k_dir, tmp_path, backend, request):
    """Two turns of one conversation, answered by different workers: the second refines the first's state."""
    db = request.getfixturevalue("postgres_url") if backend == "postgres" else tmp_path / "feedback.sqlite"
    with ServerProcess(overrides(ml100k_dir, db, tmp_path), tmp_path / "server.err") as srv:
        srv.wait_ready(workers=2)
        crossed = 0
        for n in range(30):  # new connections: which worker takes a turn is up to the kernel
            sid = f"{backend}-{uuid.uuid4().hex[:8]}-{n}"
            first = fresh_post(srv.base, "/conversation", {"session_id": sid, "message": "a comedy", "k": 5})
            second = fresh_post(srv.base, "/conversation", {"session_id": sid, "message": "only from the 90s", "k": 5})
            assert first.status_code == second.status_code == 200, second.text
            c = second.json()["constraints"]
            assert c["include_categories"] == ["Comedy"] and (c["year_min"], c["year_max"]) == (1990, 1999), c
            crossed += worker_of(first) != worker_of(second)
            if crossed >= 2:
                break
        assert crossed >= 2, "fewer than two conversations had their turns on different workers"
    items = pd.read_parquet(ml100k_dir / "items.parquet").set_index("item_id")
    served = second.json()["recommendation"]["items"]
    assert served and all(1990 <= items.loc[it["item_id"], "year"] <= 1999 for it in served)
    assert all("Comedy" in list(items.loc[it["item_id"], "categories"]) for it in served)


@pytest.mark.slow
def test_kill_9_of_workers_loses_no_acknowledged_event(ml100k_dir, tmp_path):
    db = tmp_path / "feedback.sqlite"
    srv = ServerProcess(overrides(ml100k_dir, db, tmp_path), tmp_path / "server.err").start()
    acked, answers, stop = [], [], threading.Event()

    def client(n: int) -> None:
        with httpx.Client(base_url=srv.base, timeout=10) as c:
            while not stop.is_set():
                try:
                    body = c.post("/recommend", json={"user_id": str(1 + n), "k": 10}).json()
                except (httpx.HTTPError, ValueError):
                    time.sleep(0.1)
                    continue
                for item in body["items"]:
                    ev = {"request_id": body["request_id"], "item_id": item["item_id"], "event": "impression"}
                    for _ in range(600):  # retry until answered: feedback is idempotent
                        try:
                            r = c.post("/feedback", json=ev)
                        except httpx.HTTPError:
                            time.sleep(0.1)
                            continue
                        if r.status_code == 200:
                            acked.extend(r.json()["event_ids"])
                            answers.append(r.json()["new"][0])
                        break

    try:
        srv.wait_ready(workers=2)
        threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        deadline = time.time() + 120
        while len(acked) < 150 and time.time() < deadline:
            time.sleep(0.05)
        first = srv.kill_workers(1)  # one worker: the other keeps serving, the supervisor starts a new one
        n_at_kill = len(acked)
        while len(acked) < n_at_kill + 150 and time.time() < deadline:
            time.sleep(0.05)
        assert len(acked) >= n_at_kill + 150, "the surviving worker did not keep serving"
        assert first[0] not in srv.worker_pids()
        srv.kill_all()  # then every process at once
        srv = ServerProcess(srv.overrides, srv.log_path, port=srv.port).start()
        srv.wait_ready(workers=2)
        n_at_restart = len(acked)
        while len(acked) < n_at_restart + 50 and time.time() < deadline:
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join(60)
    finally:
        stop.set()
        srv.stop()
    with open_store(db) as store:
        events = store.events()
    missing = set(acked) - set(events["event_id"])
    assert not missing, f"{len(missing)} acknowledged events lost"
    assert not events.duplicated(["request_id", "item_idx", "event"]).any()
    assert len(acked) >= 350
