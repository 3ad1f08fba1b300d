"""Against a running server (`python -m recsys.serve` as a subprocess, real HTTP): conversation,
similar items, and a new user's feedback that shapes the next request and survives a restart."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import httpx
import pytest

from conversation_cases import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(data_dir, feedback_db, port):
    cmd = [sys.executable, "-m", "recsys.serve", "pipeline=untrained", f"paths.data_dir={data_dir}", "data_name=ml100k", f"port={port}",
           f"feedback_db={feedback_db}", "pipeline.sources.content=null", "pipeline.stages.exploration=null",
           f"hydra.run.dir={feedback_db.parent / 'run'}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode()[-2000:])
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        else:
            raise TimeoutError("server did not start in 120 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_running_server_conversation_similar_and_new_user_feedback_across_restart(ml100k_dir, tmp_path):
    db = tmp_path / "fb.sqlite"
    with server(ml100k_dir.parent, db, free_port()) as url:
        turn = httpx.post(f"{url}/conversation", json={"session_id": "s", "message": "I loved Fargo, more like that"},
                          timeout=30).json()
        assert turn["like_items"] == ["100"] and turn["recommendation"]["items"]
        assert "100" not in [it["item_id"] for it in turn["recommendation"]["items"]]
        horror = httpx.post(f"{url}/conversation", json={"session_id": "h", "message": "a horror movie"}, timeout=30).json()
        assert horror["question"] and "age" in horror["question"] + " ".join(horror["notes"])
        sim = httpx.get(f"{url}/items/1/similar", params={"k": 5}, timeout=30).json()
        assert len(sim["items"]) == 5 and "1" not in [it["item_id"] for it in sim["items"]]
        # a new user skips the top item and loves the second
        first = httpx.post(f"{url}/recommend", json={"user_id": "newcomer", "k": 5}, timeout=30).json()
        top, second = first["items"][0]["item_id"], first["items"][1]["item_id"]
        ack = httpx.post(f"{url}/feedback/batch", timeout=30, json={"events": [
            {"request_id": first["request_id"], "item_id": top, "event": "skip"},
            {"request_id": first["request_id"], "item_id": second, "event": "rating", "value": 5}]}).json()
        assert ack["acknowledged"]
        again = httpx.post(f"{url}/recommend", json={"user_id": "newcomer", "k": 10}, timeout=30).json()
        ids = [it["item_id"] for it in again["items"]]
        assert top not in ids and second not in ids  # disliked never again; liked is consumed
        assert any("item2item" in it["source"] for it in again["items"])  # the liked item seeds a source
    with server(ml100k_dir.parent, db, free_port()) as url:  # restart: the stored events are replayed
        after = httpx.post(f"{url}/recommend", json={"user_id": "newcomer", "k": 10}, timeout=30).json()
        assert [it["item_id"] for it in after["items"]] == ids
