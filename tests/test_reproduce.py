"""scripts/reproduce_ml100k.py: --quick end to end on the real data and models, the report
writer's arithmetic on a hand-made record, and the sweep / ML-1M configs it documents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from reproduce_report import RANK_ROWS, TRAIN_ROWS, write_report  # noqa: E402

ROWS = [name for _, name in TRAIN_ROWS + RANK_ROWS] + [
    "ItemKNN top-20 (LLM input order)", "ItemKNN top-20 + LLM re-rank (SmolLM2, zero-shot)", "+ fine-tuned LLM re-rank (LoRA)"]


def _compose(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def _table_row(readme: str, name: str) -> list[str]:
    line = next(l for l in readme.splitlines() if l.startswith(f"| {name} |"))
    return [c.strip() for c in line.strip("|").split("|")]


@pytest.mark.slow
def test_quick_reproduction_end_to_end(tmp_path, ml100k_data_root):
    """Every step runs on the real data, models (torchrec, FAISS, SmolLM2) and scripts; the report has every row."""
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "scripts/reproduce_ml100k.py", "--quick", "--seeds", "0", "--out", str(tmp_path / "out"),
           "--data-dir", str(ml100k_data_root)]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    readme = (tmp_path / "out" / "README.md").read_text()
    record = json.loads((tmp_path / "out" / "reproduce.json").read_text())
    for name in ROWS:
        assert f"| {name} |" in readme, name
    for name in ROWS[:-1]:  # all but the fine-tuned LLM (another script's output) carry numbers
        cells = _table_row(readme, name)
        assert "not run" not in cells and 0.0 <= float(cells[3].split()[0]) <= 1.0, (name, cells)
    for png in ("metric_vs_k.png", "recall_vs_depth.png", "latency_breakdown.png"):
        assert (tmp_path / "out" / png).stat().st_size > 1000, png
    assert set(record["steps"]) >= {"prepare", "train", "index", "retrieval", "ranking", "llm", "ablation", "latency",
                                    "determinism", "report"}
    # the same seed trained twice gives the same numbers, exactly
    assert record["determinism"]["identical"] and record["determinism"]["compared"] > 10
    # the LLM really scored the sampled users (no skipped users in --quick)
    assert record["llm"]["llamarec"]["timing"]["total_s"] > 0 and record["llm"]["n_users"] == 4
    assert (Path(record["index"]["dir"]) / "index.faiss").exists()


def test_report_mean_std_and_missing_steps(tmp_path):
    """Hand-computed: values 0.1, 0.2, 0.3 -> 0.2000 ± 0.1000 (sample std); absent steps say 'not run'."""
    runs = {str(s): {"test/recall@10": v, "test/ndcg@10": v / 2} for s, v in enumerate((0.1, 0.2, 0.3))}
    record = {"settings": {"seeds": [0, 1, 2], "command": "python scripts/reproduce_ml100k.py"},
              "train": {"bpr": runs}, "steps": {"train": 12.0}, "total_s": 12.0, "hardware": {"cpu": "x", "cores": 2}}
    text = write_report(record, tmp_path).read_text()
    cells = _table_row(text, "BPR-MF")
    assert cells[1] == "0.2000 ± 0.1000" and cells[3] == "0.1000 ± 0.0500" and cells[2] == "-"
    assert _table_row(text, "SASRec")[1] == "not run"
    assert "| train | 12 |" in text and "0.2 min" in text
    assert "recall_vs_depth.png: not produced" in text


@pytest.mark.parametrize("search,experiment", [("two_tower_optuna", "ml100k/two_tower"), ("ranker_optuna", "ml100k/dlrm"),
                                               ("ranker_optuna", "ml100k/dcn"), ("bpr_optuna", "ml100k/bpr")])
def test_sweep_spaces_name_real_parameters(search, experiment):
    """Every searched key exists in the composed model config, and the objective is validation NDCG@10."""
    cfg = _compose([f"hparams_search={search}", f"experiment={experiment}"])
    assert cfg.optimized_metric == "val/ndcg@10" and cfg.hydra.sweeper.direction == "maximize"
    for key in cfg.hydra.sweeper.params:
        assert OmegaConf.select(cfg, key, default="__missing__") != "__missing__", f"{search}: {key} not in {experiment}"


@pytest.mark.parametrize("model", ["pop", "itemknn", "bpr", "sasrec", "two_tower", "dlrm", "dcn"])
def test_ml1m_experiments_mirror_ml100k(model):
    """The ML-1M table has the same models as ML-100K, on ML-1M data and the GPU trainer."""
    cfg = _compose([f"experiment=ml1m/{model}"])
    ref = _compose([f"experiment=ml100k/{model}"])
    assert cfg.data.name == "ml1m" and cfg.trainer.accelerator == "gpu"
    assert cfg.model.module._target_ == ref.model.module._target_
    assert cfg.eval.ks == ref.eval.ks
