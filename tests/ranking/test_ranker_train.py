"""The ranker's journey: train it with the real composed config as a user would, index its two-tower,
serve both through configs/pipeline/two_tower_dlrm.yaml and score a request."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ranking_helpers import compose_config

ROOT = Path(__file__).resolve().parents[2]


def _run(args, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    p = subprocess.run([sys.executable, "-m", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-4000:]
    return p


@pytest.mark.slow
def test_debug_fast_training_serves_through_the_rank_stage(ml100k_data_root, tmp_path):
    run = tmp_path / "runs" / "dlrm"
    _run(["recsys.train", "experiment=ml100k/dlrm", "debug=fast", "logger=none", f"paths.data_dir={ml100k_data_root}",
          f"paths.log_dir={tmp_path / 'runs'}", f"hydra.run.dir={run}", "model.module.max_train_users=40",
          "model.module.n_holdout=2", "model.module.lists_per_batch=4", "model.module.retriever.max_epochs=1",
          "model.module.progress=false"], tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    saved = json.loads((run / "model" / "ranker.json").read_text())
    prov = json.loads((run / "model" / "provenance.json").read_text())
    stats = prov["extra"]["fit_stats"]
    # debug=fast (limit_train_batches=3, one epoch) reached the ranker's nested trainer
    assert stats["ranker/steps"] == 3
    # one epoch, so the epoch kept is the last one: the evaluator's full-ranking NDCG of the served
    # lists equals the ranker's own validation NDCG over its validation lists
    assert metrics["val/ndcg@10"] == pytest.approx(stats["ranker/best_val_ndcg@10"], abs=1e-6)
    assert 0.0 < metrics["test/ndcg@10"] < 1.0
    ckpt = Path(prov["parent"])
    assert prov["kind"] == "ranker" and ckpt.is_file() and set(prov["extra"]["retrievers"]) == {"inner", "serving"}

    # index the ranker's own serving two-tower (its directory is laid out like a two-tower run) ...
    _run(["recsys.index", f"ckpt={ckpt}", "index=flat", "n_queries=50", f"paths.log_dir={tmp_path / 'runs'}"], tmp_path)
    tt_run = ckpt.parent.parent
    # ... and train a second ranker against that run, as configs/pipeline/two_tower_dlrm.yaml documents
    run2 = tmp_path / "runs" / "dlrm2"
    _run(["recsys.train", "experiment=ml100k/dlrm", "debug=fast", "logger=none", "test=false", f"paths.data_dir={ml100k_data_root}",
          f"hydra.run.dir={run2}", "model.module.max_train_users=20", "model.module.n_holdout=1", "model.module.retriever.max_epochs=1",
          "model.module.progress=false", f"model.module.retriever_run={tt_run}",
          f"model.module.candidates.node.sources.two_tower.checkpoint={ckpt.name}",
          "model.module.candidates.node.sources.two_tower.index_kind=flat"], tmp_path)
    prov2 = json.loads((run2 / "model" / "provenance.json").read_text())
    assert prov2["parent"] == str(ckpt) and prov2["parent_hash"] == prov["extra"]["retrievers"]["serving"]["hash"]
    assert set(prov2["extra"]["retrievers"]) == {"inner", "serving"}  # its inner two-tower was fitted without labels

    # serve the trained pipeline
    from recsys.pipeline.recommender import Recommender

    cfg = compose_config("recommend", ["pipeline=two_tower_dlrm", f"pipeline.sources.two_tower.run_dir={tt_run}",
                                       f"pipeline.sources.two_tower.checkpoint={ckpt.name}", "pipeline.sources.two_tower.index_kind=flat",
                                       f"pipeline.stages.ranker.run_dir={run2}"])
    rec = Recommender(ml100k_data_root / "ml100k", cfg.pipeline, split="loo", history="test")
    assert list(rec.pipeline.stages)[0] == "ranker"
    out, ctx = rec.recommend(0, k=10)
    assert len(out) == 10 and not set(out.items) & set(ctx.history.tolist())
    assert out.trace["ranker"]["scored"] == saved["features"]["n_rank"] and out.trace["ranker"]["missing_sources"] == []
    assert np.isfinite(out.features["rank_score"]).all()
