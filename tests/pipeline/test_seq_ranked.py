"""configs/pipeline/seq_ranked.yaml (sequential two-tower + DLRM behind it + filters/MMR/cap/exploration):
its configs composed as the entry points compose them, a missing run's error, and its `journey` walked
as a user walks it (subprocesses on scratch data/output roots, training shortened by overrides)."""

import json
import shlex
from pathlib import Path

import pytest
from omegaconf import ListConfig

from tests.entry_points import run_module

ROOT = Path(__file__).resolve().parents[2]
FEW_STEPS = ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "logger=none", "eval.progress=false"]
SHORT = {"experiment=ml100k/two_tower_seq": FEW_STEPS,
         "experiment=ml100k/seq_dlrm": FEW_STEPS + ["model.module.max_train_users=40", "model.module.n_holdout=2",
                                                    "model.module.lists_per_batch=4", "model.module.retriever.max_epochs=1",
                                                    "model.module.progress=false"]}


def _serve_cfg(*overrides):
    from recsys.pipeline.build import compose_serve

    return compose_serve(["pipeline=seq_ranked", *overrides])


def _train_cfg(*overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_seq_ranked_composes_on_the_seq_two_tower_and_its_ranker():
    cfg = _serve_cfg()
    p = cfg.pipeline
    assert p.name == "seq_ranked" and isinstance(p.journey, ListConfig)
    assert p.artifacts.two_tower.run_dir.endswith("train/ml100k-two_tower_seq-seed42")
    assert p.artifacts.ranker.run_dir.endswith("train/ml100k-seq_dlrm-seed42")
    assert p.artifacts.ranker.two_tower_run == p.artifacts.two_tower.run_dir  # checked against the served two-tower
    stages = list(p.stages)
    assert stages[0] == "ranker" and stages.index("ranker") < stages.index("available") < stages.index("mmr")
    assert set(p.sources) >= {"two_tower", "item2item", "content", "popularity"}
    # the served strengths are the sweep's (chosen on the mean over 3 seeds' validation): one exploration slot,
    # seq_two_tower.yaml's own node, so the served stage is the one the sweep measured at n_slots=1 (k=10)
    from omegaconf import OmegaConf

    from recsys.pipeline.build import compose_serve
    from recsys.pipeline.sizing import as_size

    assert list(p.stages).index("category_cap") < list(p.stages).index("exploration")
    swept = OmegaConf.to_container(compose_serve(["pipeline=seq_two_tower"]).pipeline.stages.exploration)
    assert OmegaConf.to_container(p.stages.exploration) == swept and as_size(swept["n_slots"])(p.k) == 1
    # ... and every strength is the published sweep's choice (experiments/ml100k/pipeline_strengths.json)
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from reproduce_report import served_differs, served_stages

    chosen = json.loads((ROOT / "experiments/ml100k/pipeline_strengths.json").read_text())["chosen"]
    assert served_differs(chosen, served_stages(p.stages, chosen), k=p.k) == []
    # the journey's training commands are the experiments that exist, seed 42 = the served runs' seed
    cmds = [shlex.split(c)[2:] for c in p.journey]
    assert [c[0] for c in cmds] == ["recsys.data.prepare", "recsys.train", "recsys.index", "recsys.train"]
    assert cmds[1][1] == "experiment=ml100k/two_tower_seq" and cmds[3][1] == "experiment=ml100k/seq_dlrm"
    assert _train_cfg(cmds[1][1]).run_name == "ml100k-two_tower_seq-seed42"
    assert _train_cfg(cmds[3][1]).run_name == "ml100k-seq_dlrm-seed42"


def test_seq_dlrm_trains_on_the_seq_pipelines_candidates_with_a_sequential_inner_retriever():
    cfg = _train_cfg("experiment=ml100k/seq_dlrm", "seed=1")
    m = cfg.model.module
    seq = _serve_cfg("pipeline=seq_two_tower").pipeline
    assert list(m.candidates.node.sources) == list(seq.sources) and m.candidates.node.merger == seq.merger
    # the two-tower source and its index as served (whole history, the served nprobe; merge_weights.md)
    assert m.candidates.node.sources.two_tower == seq.sources.two_tower and seq.sources.two_tower.negatives_in_history
    assert m.candidates.node.artifacts.two_tower.nprobe == seq.artifacts.two_tower.nprobe
    # behind the seq two-tower run of the same seed
    assert m.retriever_run.endswith("train/ml100k-two_tower_seq-seed1")
    seq_model = _train_cfg("experiment=ml100k/two_tower_seq").model
    assert m.retriever.module.user_tower == seq_model.module.user_tower == "sequential"
    for key in ("seq_tower", "softmax", "dim", "max_history", "temperature"):
        assert m.retriever.module[key] == seq_model.module[key], key
    assert m.retriever.datamodule.window_stride == seq_model.datamodule.window_stride


def test_a_missing_run_names_the_whole_journey(tmp_path):
    from recsys.pipeline.build import build_recommender

    data = ROOT / "data" / "ml100k"
    if not (data / "meta.json").exists():
        pytest.skip("data/ml100k is not prepared in this checkout")
    cfg = _serve_cfg(f"paths.log_dir={tmp_path}", f"dataset_dir={data}")
    with pytest.raises(FileNotFoundError) as e:
        build_recommender(cfg)
    msg = str(e.value)
    assert "no such run" in msg and "seq_ranked" in msg
    for cmd in cfg.pipeline.journey:
        assert cmd in msg
    # the index command names the runs where this config looks for them (RECSYS_OUTPUTS / paths.log_dir)
    assert f"recsys.index run={tmp_path}/train/ml100k-two_tower_seq-seed42 " in msg




@pytest.mark.slow
def test_seq_ranked_journey_from_its_config(ml100k_data_root, tmp_path, monkeypatch):
    from recsys.utils.artifacts import file_hash

    monkeypatch.setenv("RECSYS_DATA", str(ml100k_data_root))
    monkeypatch.setenv("RECSYS_OUTPUTS", str(tmp_path / "outputs"))
    for cmd in _serve_cfg().pipeline.journey:
        args = shlex.split(cmd)[2:]
        run_module(args + SHORT.get(args[1], []), tmp_path)

    runs = tmp_path / "outputs" / "train"
    prov = json.loads((runs / "ml100k-seq_dlrm-seed42" / "model" / "provenance.json").read_text())
    best = (runs / "ml100k-two_tower_seq-seed42" / "checkpoints" / "best.ckpt").resolve()
    assert prov["parent"] == str(best) and prov["parent_hash"] == file_hash(best)
    ranker_cfg = json.loads((runs / "ml100k-seq_dlrm-seed42" / "model" / "ranker.json").read_text())
    assert "two_tower" in ranker_cfg["features"]["sources"]

    out = run_module(["recsys.recommend", "pipeline=seq_ranked", "user_id=196", "show_trace=true"], tmp_path).stdout
    assert f"ranker <- {runs / 'ml100k-seq_dlrm-seed42'}" in out
    assert "stages:  ranker > available > " in out and "top 10 of k=10" in out
    n_rank = ranker_cfg["features"]["n_rank"]
    assert any(ln.startswith("stage   ranker") and f'"scored": {n_rank}' in ln for ln in out.splitlines())
