"""The two-tower + DLRM journey as a user walks it: the commands in configs/pipeline/two_tower_dlrm.yaml's
header, read from there and run as subprocesses in that order on scratch data/output roots (training
shortened by overrides), then the served ranker through `recsys.recommend` and over HTTP."""

import json
import shlex
from pathlib import Path

import pytest

from tests.entry_points import run_module

ROOT = Path(__file__).resolve().parents[2]
HEADER = ROOT / "configs" / "pipeline" / "two_tower_dlrm.yaml"
# debug=fast-style: a few steps each (debug=fast itself sends runs to outputs/debug/, off the documented paths)
FEW_STEPS = ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "logger=none", "eval.progress=false"]
SHORT = {"experiment=ml100k/two_tower": FEW_STEPS,
         "experiment=ml100k/dlrm": FEW_STEPS + ["model.module.max_train_users=40", "model.module.n_holdout=2",
                                                "model.module.lists_per_batch=4", "model.module.retriever.max_epochs=1",
                                                "model.module.progress=false"]}


def journey_commands() -> list[list[str]]:
    """The header comment's ``python -m ...`` commands (a ``# or:`` alternative included), in order, as argv."""
    cmds = []
    for line in HEADER.read_text().splitlines():
        if not line.startswith("#"):
            break
        for part in line.lstrip("# ").split("# or:"):
            if part.strip().startswith("python -m "):
                cmds.append(shlex.split(part)[2:])
    return cmds




@pytest.mark.slow
def test_two_tower_dlrm_journey_from_the_config_header(ml100k_data_root, tmp_path, monkeypatch):
    import httpx

    from recsys.serve.process import ServerProcess
    from recsys.utils.artifacts import file_hash

    # only the data and output roots point at scratch dirs; the commands' relative outputs/ is the cwd's
    monkeypatch.setenv("RECSYS_DATA", str(ml100k_data_root))
    monkeypatch.setenv("RECSYS_OUTPUTS", str(tmp_path / "outputs"))
    train_two_tower, index, train_ranker, serve, recommend = journey_commands()
    assert [c[0] for c in (train_two_tower, index, train_ranker, serve, recommend)] == [
        "recsys.train", "recsys.index", "recsys.train", "recsys.serve", "recsys.recommend"]

    run_module(train_two_tower + SHORT[train_two_tower[1]], tmp_path, timeout=600)
    run_module(index, tmp_path, timeout=600)
    run_module(train_ranker + SHORT[train_ranker[1]], tmp_path, timeout=600)

    runs = tmp_path / "outputs" / "train"
    ranker = runs / "ml100k-dlrm-seed42"  # the stable name two_tower_dlrm.yaml serves
    prov = json.loads((ranker / "model" / "provenance.json").read_text())
    # trained behind the indexed two-tower run, by default: its best checkpoint (the served file) is the parent
    best = (runs / "ml100k-two_tower-seed42" / "checkpoints" / "best.ckpt").resolve()
    assert prov["kind"] == "ranker" and prov["parent"] == str(best) and prov["parent_hash"] == file_hash(best)
    stats = prov["extra"]["fit_stats"]
    assert stats["ranker/steps"] == 3  # the run's trainer limits reached the ranker's nested trainer
    metrics = json.loads((ranker / "metrics.json").read_text())
    # one epoch, so the kept epoch is the last: the evaluator's full-ranking NDCG of the served lists
    # equals the ranker's own validation NDCG over its validation lists
    assert metrics["val/ndcg@10"] == pytest.approx(stats["ranker/best_val_ndcg@10"], abs=1e-6)

    out = run_module(recommend + ["show_trace=true"], tmp_path, timeout=600).stdout
    assert f"ranker <- {tmp_path / 'outputs' / 'train' / 'ml100k-dlrm-seed42'}" in out
    assert "stages:  ranker > available > " in out and "top 10 of k=10" in out
    n_rank = json.loads((ranker / "model" / "ranker.json").read_text())["features"]["n_rank"]
    assert any(ln.startswith("stage   ranker") and f'"scored": {n_rank}' in ln for ln in out.splitlines())

    with ServerProcess(serve[1:], log_path=tmp_path / "server.err") as srv:
        srv.wait_ready()
        body = httpx.post(f"{srv.base}/recommend", json={"user_id": "196", "k": 10}, timeout=60).json()
    assert len(body["items"]) == 10
    step = body["trace"]["stages"]["ranker"]
    assert list(body["trace"]["stages"])[0] == "ranker" and step["details"] == {"scored": n_rank, "missing_sources": []}
    assert step["fallbacks"] == []
