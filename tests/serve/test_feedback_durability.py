"""Acknowledged feedback survives kill -9: of a writer process, and of the running server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from recsys.serve.feedback_store import Event, FeedbackStore

ROOT = Path(__file__).resolve().parents[2]

WRITER = """
import sys
from recsys.serve.feedback_store import Event, FeedbackStore
store = FeedbackStore(sys.argv[1])
i = 0
while True:
    (eid,) = store.append_many([Event("r%d" % i, "u", 0, i % 50, "click")])
    print(eid, flush=True)   # the acknowledgement: printed only after COMMIT returned
    i += 1
"""


def test_store_roundtrip_and_all_or_nothing(tmp_path):
    store = FeedbackStore(tmp_path / "fb.sqlite")
    store.log_request("r1", "u1", 3, [5, 6])
    assert store.request("r1") == {**store.request("r1"), "user_idx": 3, "items": [5, 6]}
    ids = store.append_many([Event("r1", "u1", 3, 5, "click"), Event("r1", "u1", 3, 6, "rating", 4.0)])
    assert ids == [1, 2] and store.count() == 2
    with pytest.raises(ValueError, match="unknown event type"):
        Event("r1", "u1", 3, 5, "purchase")
    with pytest.raises(Exception):  # a failing row rolls the whole batch back
        store.append_many([Event("r1", "u1", 3, 7, "click"), Event("r1", "u1", 3, None, "click")])
    assert store.count() == 2
    store.close()
    other = FeedbackStore(tmp_path / "fb.sqlite")  # another connection sees committed rows
    assert other.events()["item_idx"].tolist() == [5, 6]


def test_kill_writer_mid_stream_loses_no_acknowledged_event(tmp_path):
    db = tmp_path / "fb.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    acked = []
    try:
        for line in proc.stdout:
            acked.append(int(line))
            if len(acked) >= 300:
                break
    finally:
        proc.send_signal(signal.SIGKILL)  # kill -9 while it keeps writing
        proc.wait()
    assert len(acked) >= 300
    present = FeedbackStore(db).event_ids()
    assert set(acked) <= present
    assert max(present) >= max(acked)  # possibly one more committed but not yet printed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_kill_server_mid_stream_loses_no_acknowledged_event(ml100k_dir, tmp_path):
    port, db = _free_port(), tmp_path / "feedback.sqlite"
    cmd = [sys.executable, "-m", "recsys.serve", f"paths.data_dir={ml100k_dir.parent}", "data_name=ml100k",
           "pipeline.sources.content=null", f"feedback_db={db}", f"port={port}", f"paths.log_dir={tmp_path / 'logs'}"]
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.time() > deadline:
                pytest.fail(f"server did not start: {server.stderr.read().decode()[-2000:]}")
            time.sleep(0.3)
        rec = httpx.post(base + "/recommend", json={"user_id": "10", "k": 10}).json()
        acked, errors, stop = [], [], threading.Event()

        def client(n: int) -> None:
            with httpx.Client(base_url=base, timeout=5) as c:
                while not stop.is_set():
                    item = rec["items"][n % 10]["item_id"]
                    try:
                        r = c.post("/feedback", json={"request_id": rec["request_id"], "item_id": item, "event": "impression"})
                    except httpx.TransportError as e:  # the server died: not acknowledged
                        errors.append(type(e).__name__)
                        return
                    if r.status_code == 200:
                        acked.extend(r.json()["event_ids"])

        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        while len(acked) < 100 and time.time() < deadline:
            time.sleep(0.05)
        server.send_signal(signal.SIGKILL)
        server.wait()
        stop.set()
        for t in threads:
            t.join(10)
    finally:
        if server.poll() is None:
            server.kill()
    assert len(acked) >= 100
    present = FeedbackStore(db).event_ids()
    missing = set(acked) - present
    assert not missing, f"{len(missing)} acknowledged events lost"
