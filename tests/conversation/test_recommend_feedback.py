"""`python -m recsys.recommend` reads the feedback store the server writes (issue 11 item 11): a skip given
through the HTTP API hides the item from the command-line recommendations too."""

from __future__ import annotations

import os
import subprocess
import sys

from fastapi.testclient import TestClient

from conversation_cases import ROOT, compose_serve


def test_recommend_cli_replays_the_servers_feedback(ml100k_dir, tmp_path):
    from recsys.serve.app import build_state, create_app

    db = tmp_path / "feedback.sqlite"
    state = build_state(compose_serve(ml100k_dir.parent, db))
    client = TestClient(create_app(state), base_url="http://127.0.0.1")
    served = client.post("/recommend", json={"user_id": "196", "k": 3}).json()
    top = served["items"][0]["item_id"]
    r = client.post("/feedback", json={"request_id": served["request_id"], "item_id": top, "event": "skip"})
    assert r.status_code == 200, r.text
    state.store.close()

    def cli(*extra):
        out = subprocess.run([sys.executable, "-m", "recsys.recommend", "pipeline=untrained", "user_id=196", "k=10",
                              f"paths.data_dir={ml100k_dir.parent}", "data_name=ml100k", f"feedback_db={db}",
                              "pipeline.sources.content=null", f"hydra.run.dir={tmp_path / 'run'}", *extra],
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        return [line.split()[1] for line in out.stdout.splitlines() if line.strip()[:1].isdigit()], out.stdout

    ids, text = cli()
    assert "1 stored events replayed" in text and top not in ids
    ids_tables_only, _ = cli("use_feedback=false")
    assert top in ids_tables_only  # the tables alone would show it: the replay is what hides it


def test_a_new_user_with_feedback_is_not_called_cold_start(ml100k_dir, tmp_path):
    """Issue 11 item 13: cold_start: true and the cold-start warning stayed after a new user's feedback."""
    from recsys.serve.app import build_state, create_app

    state = build_state(compose_serve(ml100k_dir.parent, tmp_path / "fb.sqlite"))
    client = TestClient(create_app(state), base_url="http://127.0.0.1")
    first = client.post("/recommend", json={"user_id": "brand-new", "k": 3}).json()
    assert first["cold_start"] and "unknown user_id: cold-start recommendations" in first["warnings"]
    ack = client.post("/feedback", json={"request_id": first["request_id"], "item_id": first["items"][0]["item_id"],
                                         "event": "rating", "value": 5.0})
    assert ack.status_code == 200, ack.text
    again = client.post("/recommend", json={"user_id": "brand-new", "k": 3}).json()
    assert not again["cold_start"] and not any("cold-start" in w for w in again["warnings"])
    assert "unknown user_id: recommendations from this user's live feedback" in again["warnings"]
    state.store.close()
