"""The README, walked top to bottom as a user walks it, in one scratch checkout (tests/journeys/run.py).

Each test is one journey: it takes the README's next commands (``walk.take``: strictly in README
order, each matched against what the journey expects), runs them as written (training shortened by
``run.SHORT``, servers on a free port) and checks what a user reads: the end-of-run table and its
paths, the index and recommendation reports, HTTP status codes and response fields. The last test
fails when a README command is left unwalked. Order matters: the journeys share one prepare, one
two-tower run, the servers' feedback store.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.journeys.expected import BPR, JOURNEYS, MAKE_SERVE, RANKER, REFRESHED, TWO_TOWER
from tests.journeys.run import SHORT, as_run, kill_group
from tests.journeys.walk import RunSummary, one_summary, run_summaries, split_outputs

pytestmark = pytest.mark.slow

TRAINED = r"^trained in [\d.]+ s, \d+ epochs done, best epoch \d+$"
REUSED = "completed before, reused (resume=false trains it again)"


def check_run(walk, s: RunSummary, name: str, how: str, task: str = "train") -> RunSummary:
    """The end-of-run table and paths: what they say exists, in the scratch outputs/, and agrees."""
    assert s.name == name and re.search(how, s.how), f"{s.name}: {s.how!r}, expected {name}: {how!r}"
    assert {"ndcg@10", "recall@10"} <= set(s.table) and all(0 <= v <= 1 for v in s.table["ndcg@10"].values())
    assert set(s.table["ndcg@10"]) == {"val", "test"}
    run_dir = s.run_dir
    assert run_dir == walk.scratch.path("outputs", task, f"{name}-{s.config_hash}") and run_dir.is_dir()
    metrics = json.loads(Path(s.paths["metrics"]).read_text())
    assert metrics["val/ndcg@10"] == pytest.approx(s.table["ndcg@10"]["val"], abs=5e-5)
    assert metrics["test/ndcg@10"] == pytest.approx(s.table["ndcg@10"]["test"], abs=5e-5)
    if "best checkpoint" in s.paths:
        assert Path(s.paths["best checkpoint"]) == run_dir / "checkpoints" / "best.ckpt"
        assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    wandb_dir = Path(s.paths["W&B run"].split("  (upload")[0])
    assert wandb_dir.parent == run_dir / "wandb" and wandb_dir.name.startswith("offline-run-") and wandb_dir.is_dir()
    latest = Path(s.paths["latest of its name"])
    assert latest == run_dir.parent / name and latest.resolve() == run_dir
    prov = json.loads((run_dir / "provenance.json").read_text())
    assert prov["config_hash"] == s.config_hash and prov["extra"]["status"] == "complete"
    return s


def item_table(walk) -> pd.DataFrame:
    return pd.read_parquet(walk.scratch.path("data", "ml100k", "items.parquet")).set_index("item_id")


# ---- Quick start -----------------------------------------------------------------------------------

def test_make_run_prepares_and_trains_from_nothing(walk):
    assert not walk.scratch.path("data").exists() and not walk.scratch.path("outputs").exists()
    res = walk.run(walk.take("quickstart", "make run"))
    s = check_run(walk, one_summary(res), TWO_TOWER, TRAINED)
    assert (walk.scratch.path("data", "ml100k", "meta.json")).is_file()
    assert (walk.scratch.path("data", "ml100k", "item_text_emb.npy")).is_file()
    walk.state["two_tower"] = s
    walk.skip("quickstart", "make test", "it runs this suite: CI runs it through .ci/run")


# ---- From nothing to a served trained pipeline -------------------------------------------------------

def test_prepare_finds_the_dataset_up_to_date(walk):
    activate = walk.take("train-serve", "activate")
    walk.run(activate)  # its effect is the suite's environment for every later command (run.Scratch.env)
    assert shutil.which("python", path=walk.scratch.env["PATH"]) == str(walk.scratch.path(".venv", "bin", "python"))
    meta = walk.scratch.path("data", "ml100k", "meta.json")
    before = meta.stat().st_mtime_ns
    res = walk.run(walk.take("train-serve", "prepare"))
    assert "is up to date (same config), skipping" in res.stdout
    report = res.report("data/ml100k: ")[0]
    assert report.startswith("data/ml100k: 943 users, 1349 items, 99287 interactions") and "split loo" in report
    assert meta.stat().st_mtime_ns == before


def test_the_same_training_command_again_reuses_the_run(walk):
    first: RunSummary = walk.state["two_tower"]
    runs = sorted(walk.scratch.path("outputs", "train").iterdir())
    res = walk.run(walk.take("train-serve", "train"))
    s = check_run(walk, one_summary(res), TWO_TOWER, re.escape(REUSED))
    assert s.config_hash == first.config_hash and s.table == first.table and s.paths == first.paths
    assert sorted(walk.scratch.path("outputs", "train").iterdir()) == runs


def test_index_the_best_checkpoint(walk):
    run_dir = walk.state["two_tower"].run_dir
    res = walk.run(walk.take("train-serve", "index"))
    lines = res.report("index: ")
    assert lines[0] == f"index: {run_dir / 'index' / 'ivf_flat'}"
    assert f"built from {run_dir / 'checkpoints' / 'best.ckpt'} (file hash " in lines[1]
    assert re.search(r"^\| ivf_flat \| nprobe \| \d+ \| [01]\.\d{4} \|", res.stdout, re.M)  # the ANN recall table
    prov = json.loads((run_dir / "index" / "ivf_flat" / "provenance.json").read_text())
    assert prov["kind"] == "index" and prov["parent"].endswith("checkpoints/best.ckpt")
    assert prov["config_hash"] == walk.state["two_tower"].config_hash


def _recommend_report(res, pipeline: str) -> list[str]:
    lines = res.report(f"pipeline {pipeline} | llm none | dataset ")
    ranked = [ln for ln in lines if re.match(r"^\s+\d+\s+\d+\s", ln)]
    assert re.search(r"^user 196 \(known\): top 10 of k=10$", "\n".join(lines), re.M) and len(ranked) == 10, res
    return lines


def _artifact(walk, line: str, name: str) -> Path:
    """``artifacts: two_tower <- ./outputs/train/... (best), ...`` -> that run dir, resolved in the scratch."""
    m = re.search(rf"\b{name} <- (\S+)", line)
    assert m and line.startswith("artifacts: "), (name, line)
    return (walk.scratch.root / m[1]).resolve()


def test_recommend_through_the_trained_two_tower(walk):
    res = walk.run(walk.take("train-serve", "recommend"))
    lines = _recommend_report(res, "two_tower")
    assert _artifact(walk, lines[1], "two_tower") == walk.scratch.path("outputs", "train", TWO_TOWER).resolve()
    assert "two_tower" in lines[2].removeprefix("sources: ").split(", ")
    trace = lines[lines.index("trace:") + 1:]
    row = next(ln.split() for ln in trace if ln.startswith("source  two_tower"))
    assert int(row[2]) > 0  # step, name, out (a source has no rows in): the trained source returned candidates
    assert trace[-1].startswith("total")


def _health(server) -> dict:
    r = httpx.get(f"{server.base}/health", timeout=30)
    assert r.status_code == 200
    return r.json()


def _recommend(server, **body) -> dict:
    r = httpx.post(f"{server.base}/recommend", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def test_serve_the_trained_two_tower(walk):
    server = walk.serve(walk.take("train-serve", "serve"))
    assert "two_tower" in _health(server)["sources"]
    body = _recommend(server, user_id="196", k=10)
    assert len(body["items"]) == 10 and body["trace"]["sources"]["two_tower"]["n_out"] > 0
    walk.stop()


def test_make_serve_reuses_the_run_indexes_and_serves(walk):
    """What make serve serves is expected.MAKE_SERVE: the runs it reuses, the one it indexes, the pipeline."""
    server = walk.serve(walk.take("make-serve", "make serve"))
    out, runs = server.output(), walk.scratch.path("outputs", "train")
    for name in MAKE_SERVE.reused:
        assert re.search(rf"^{re.escape(name)}-[0-9a-f]{{12}}: {re.escape(REUSED)}$", out, re.M), (name, out[-3000:])
    assert f"index: {(runs / MAKE_SERVE.indexed).resolve() / 'index' / 'ivf_flat'}" in out
    health = _health(server)
    assert set(MAKE_SERVE.sources) <= set(health["sources"]), health
    if MAKE_SERVE.first_stage:
        assert health["stages"][0] == MAKE_SERVE.first_stage, health
    body = _recommend(server, user_id="196", k=5)
    assert len(body["items"]) == 5 and all(body["trace"]["sources"][s]["n_out"] > 0 for s in MAKE_SERVE.sources)
    walk.stop()


def test_train_the_ranker_behind_the_served_two_tower(walk):
    from recsys.utils.artifacts import file_hash

    res = walk.run(walk.take("ranker", "train"))
    s = check_run(walk, one_summary(res), RANKER, r"^fitted in [\d.]+ s$")
    prov = json.loads((s.run_dir / "model" / "provenance.json").read_text())
    best = walk.state["two_tower"].run_dir / "checkpoints" / "best.ckpt"
    assert prov["kind"] == "ranker" and prov["parent"] == str(best) and prov["parent_hash"] == file_hash(best)
    walk.state["n_rank"] = json.loads((s.run_dir / "model" / "ranker.json").read_text())["features"]["n_rank"]


def test_recommend_through_two_tower_and_ranker(walk):
    res = walk.run(walk.take("ranker", "recommend"))
    lines = _recommend_report(res, "two_tower_dlrm")
    assert _artifact(walk, lines[1], "ranker") == walk.scratch.path("outputs", "train", RANKER).resolve()
    assert lines[3].startswith("stages:  ranker > ")


def test_serve_two_tower_and_ranker(walk):
    server = walk.serve(walk.take("ranker", "serve"))
    assert _health(server)["stages"][0] == "ranker"  # left running: the client session talks to it


# ---- A client session --------------------------------------------------------------------------------

def test_client_session_over_http(walk, tmp_path):
    server = walk.server
    assert server is not None, "the client session needs the server the README started before it"
    cmds = [walk.take("client", key) for key, _ in JOURNEYS["client"]]
    # curl as written, plus a --write-out of each response's status to stderr (stdout stays the README's)
    shim = tmp_path / "bin"
    shim.mkdir()
    real = shutil.which("curl")
    assert real, "the README's client session needs curl"
    (shim / "curl").write_text(f"#!/bin/sh\nexec {real} -w '%{{stderr}}@@status %{{http_code}}\\n' \"$@\"\n")
    (shim / "curl").chmod(0o755)
    env = {**walk.scratch.env, "PATH": f"{shim}:{walk.scratch.env['PATH']}"}
    script = tmp_path / "client.sh"
    script.write_text(walk.client_script(cmds, server.port))
    res = walk.scratch.run(f"bash {script}", env=env)
    assert re.findall(r"@@status (\d+)", res.stderr) == ["200"] * 6, res
    out = split_outputs(res.stdout)

    health = json.loads(out[0])
    assert health["status"] == "ok" and health["stages"][0] == "ranker" and health["n_items"] == 1349
    rec = json.loads(out[1])
    assert rec["user_id"] == "196" and not rec["cold_start"] and len(rec["items"]) == 5 and rec["request_id"]
    assert rec["trace"]["stages"]["ranker"]["details"]["scored"] == walk.state["n_rank"]
    assert out[2] == ""  # read: RID and ITEM set, nothing printed
    ack = json.loads(out[3])
    assert ack["acknowledged"] is True and ack["new"] == [True] and len(ack["event_ids"]) == 1
    conv = json.loads(out[4])
    c = conv["constraints"]
    assert "Comedy" in c["include_categories"] and "Horror" in c["exclude_categories"]
    assert (c["year_min"], c["year_max"]) == (1990, 1999)
    items, catalogue = conv["recommendation"]["items"], item_table(walk)
    assert len(items) == 5
    for it in items:
        row = catalogue.loc[it["item_id"]]
        assert "Horror" not in list(row["categories"]) and 1990 <= row["year"] <= 1999, (it, row)
    similar = json.loads(out[5])
    assert similar["item_id"] == "1" and len(similar["items"]) == 5 and "1" not in [i["item_id"] for i in similar["items"]]

    assert _health(server)["feedback_events"] == 1  # acknowledged = stored


# ---- Feedback -> refreshed data -> retrained model -----------------------------------------------------

def test_refresh_and_retrain_from_the_refreshed_data(walk):
    walk.stop()  # "Stop the server (Ctrl-C)"
    res = walk.run(walk.take("refresh", "refresh + retrain"))
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["events"] == 1 and summary["new_interactions"] == 1 and summary["out_dir"] == "data/ml100k-refresh"
    (s,) = run_summaries(res.stdout)
    s = check_run(walk, s, REFRESHED, TRAINED)
    prov = json.loads((s.run_dir / "provenance.json").read_text())
    assert prov["extra"]["dataset_dir"] == str(walk.scratch.path("data", "ml100k-refresh"))
    meta = json.loads(walk.scratch.path("data", "ml100k-refresh", "meta.json").read_text())
    assert meta["extra"]["refresh"]["last_event_id"] == 1 and meta["n_interactions"] == 99287 + 1
    # the rating is user 196's newest interaction, 5 stars
    inter = pd.read_parquet(walk.scratch.path("data", "ml100k-refresh", "interactions.parquet"))
    users = pd.read_parquet(walk.scratch.path("data", "ml100k", "users.parquet")).set_index("user_id")
    mine = inter[inter["user_idx"] == users.loc["196", "user_idx"]]
    newest = mine.loc[mine["timestamp"].idxmax()]
    assert newest["value"] == 5.0 and newest["timestamp"] > pd.read_parquet(
        walk.scratch.path("data", "ml100k", "interactions.parquet"))["timestamp"].max()
    items = pd.read_parquet(walk.scratch.path("data", "ml100k", "items.parquet")).set_index("item_idx")
    walk.state["rated_item"] = items.loc[int(newest["item_idx"]), "item_id"]


def test_serve_the_retrained_pipeline_on_the_refreshed_data(walk):
    res = walk.run(walk.take("refresh", "index"))
    assert res.report("index: ")[0].endswith("/index/ivf_flat")
    server = walk.serve(walk.take("refresh", "serve"))
    health = _health(server)
    assert "two_tower" in health["sources"] and health["feedback_events"] == 0  # a new store for the new dataset
    body = _recommend(server, user_id="196", k=20)
    # the rated item is in the user's history now (refreshed data, not a live profile): never served again
    assert walk.state["rated_item"] not in [it["item_id"] for it in body["items"]]
    walk.stop()


# ---- Training runs -----------------------------------------------------------------------------------------

def test_a_baseline(walk):
    res = walk.run(walk.take("runs", "baseline"))
    walk.state["bpr"] = check_run(walk, one_summary(res), BPR, TRAINED)


def test_a_changed_setting_is_a_new_run_and_kill_9_then_rerun_resumes_it(walk):
    changed = walk.take("runs", "changed")
    bpr: RunSummary = walk.state["bpr"]
    runs = walk.scratch.path("outputs", "train")
    proc = walk.scratch.popen(as_run(changed.text))
    last = _wait_for_new_last_ckpt(runs, proc, known={p.name for p in runs.iterdir()})
    kill_group(proc, signal.SIGKILL)  # kill -9, mid-training: after epoch 0's last.ckpt, before the run ends
    out, _ = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it was killed:\n{out[-2000:]}"
    killed = last.parent.parent
    assert killed.name != bpr.run_dir.name and killed.name.startswith(f"{BPR}-")
    prov = json.loads((killed / "provenance.json").read_text())
    assert prov["extra"]["status"] == "running"
    assert "model.module.optimizer.lr" in out  # the log names the setting that makes it a new run

    again = walk.take("runs", "changed again")
    assert again.text == changed.text
    res = walk.run(again)
    s = check_run(walk, one_summary(res), BPR, r"^resumed from last\.ckpt, trained in [\d.]+ s, 2 epochs done")
    assert s.run_dir == killed and s.config_hash != bpr.config_hash
    assert f"resuming from {last}" in res.stdout


def _wait_for_new_last_ckpt(runs: Path, proc, known: set[str], timeout: float = 600) -> Path:
    """A new run directory's checkpoints/last.ckpt, once its size stops changing (written whole)."""
    t0, seen = time.time(), None
    while time.time() - t0 < timeout:
        assert proc.poll() is None, f"the training ended (exit {proc.returncode}) before a last.ckpt appeared"
        found = [p / "checkpoints" / "last.ckpt" for p in runs.iterdir() if p.name not in known]
        found = [f for f in found if f.is_file()]
        if found:
            size = found[0].stat().st_size
            if seen == size and size > 0:
                return found[0]
            seen = size
        time.sleep(0.2)
    raise AssertionError(f"no new last.ckpt under {runs} after {timeout} s")


def test_debug_fast_checks_a_config_outside_the_served_runs(walk):
    res = walk.run(walk.take("runs", "debug"))
    s = one_summary(res)
    assert s.name == BPR and re.search(TRAINED, s.how)
    assert s.run_dir.parent == walk.scratch.path("outputs", "debug") and "W&B run" not in s.paths  # logger=none


def test_an_optuna_sweep(walk):
    res = walk.run(walk.take("runs", "sweep"))
    summaries = run_summaries(res.stdout)
    assert [s.name for s in summaries] == ["0", "1"] and all(re.search(TRAINED, s.how) for s in summaries), res
    (results,) = walk.scratch.path("outputs", "sweep_bpr", "multirun").glob("*/optimization_results.yaml")
    assert [s.run_dir for s in summaries] == [results.parent / "0", results.parent / "1"]  # n_trials=2 (SHORT_SWEEP)
    for s in summaries:
        metrics = json.loads(Path(s.paths["metrics"]).read_text())
        assert metrics["val/ndcg@10"] == pytest.approx(s.table["ndcg@10"]["val"], abs=5e-5)
    text = results.read_text()
    best = max(s.table["ndcg@10"]["val"] for s in summaries)
    assert "best_params" in text and float(re.search(r"best_value: ([\d.e-]+)", text)[1]) == pytest.approx(best, abs=5e-5)


def test_run_baselines_regenerates_the_report(walk):
    committed = walk.scratch.path("experiments", "ml100k", "baselines.md")
    before = committed.read_text()
    walk.run(walk.take("runs", "baselines"))
    # shortened by the suite: the committed full-run report stays, the run's own report is beside its runs
    assert committed.read_text() == before
    text = walk.scratch.path("outputs", "baselines", "baselines.md").read_text()
    assert SHORT in text  # it records the overrides it ran with
    for name in ("Popularity", "ItemKNN", "BPR-MF", "SASRec"):
        assert re.search(rf"^\| {name} \| 0\.\d{{4}} \|", text, re.M), name


# ---- the README as a whole ---------------------------------------------------------------------------------

@pytest.mark.independent
def test_every_readme_command_is_walked(walk):
    """Every command of every journey block was taken, once the walk got to its last block."""
    if walk.cursor[0] == len(walk.order) - 1:
        assert not walk.unwalked(), f"README commands no journey walks: {[str(c) for c in walk.unwalked()]}"
    else:
        pytest.skip(f"the walk stopped in block {walk.order[walk.cursor[0]]!r}")
