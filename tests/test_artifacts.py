"""Safe loading, run identity and provenance helpers (recsys/utils/{artifacts,run_identity,run_dir}.py),
on the real training configs composed by Hydra."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import recsys.train  # noqa: F401  (registers ${run_hash:})
from recsys.utils import run_dir as R
from recsys.utils.artifacts import (ProvenanceError, compute_dataset_fingerprint, dataset_fingerprint, fingerprint_record,
                                    load_torch, replace_dir)
from recsys.utils.artifacts import hash_of
from recsys.utils.run_identity import config_hash, identity_config, identity_diff

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")
BASE = ["experiment=ml100k/two_tower"]


def _compose(overrides: list[str], hydra_node: bool = False):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("train", overrides=[*BASE, *overrides], return_hydra_config=hydra_node)
    GlobalHydra.instance().clear()
    return cfg


class _Evil:
    """Unpickling it creates ``path`` (what arbitrary code in a checkpoint could do)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def write_evil_pickle(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {}, "payload": _Evil(marker)}, path)
    return path


# ---- run identity -------------------------------------------------------------------


@pytest.mark.parametrize("override", [
    "logger=none", "trainer.enable_progress_bar=false", "paths.log_dir=/elsewhere", "tags=[a,b]", "resume=false",
    "eval.progress=false", "eval.batch_size=64", "test=false", "task_name=other", "hydra.run.dir=/tmp/x",
    "callbacks.model_checkpoint.filename=ep", "data.force=true",
])
def test_non_identity_overrides_keep_the_hash(override):
    assert config_hash(_compose([override])) == config_hash(_compose([]))


@pytest.mark.parametrize("override", [
    "model.module.lr=0.05", "model.module.dim=32", "model.module.hidden=[64]", "seed=1", "trainer.max_epochs=3",
    "data.kcore=10", "paths.data_dir=/other/data", "callbacks.early_stopping.patience=9", "eval.ks=[10]",
    "debug=fast", "+trainer.precision=16-mixed",
])
def test_identity_overrides_change_the_hash(override):
    base, changed = _compose([]), _compose([override])
    assert config_hash(changed) != config_hash(base)
    key = override.split("=")[0].lstrip("+")
    key = {"paths.data_dir": "data.data_dir"}.get(key, key)
    if "." in key:  # the diff names the key that changed (paths.data_dir counts through data.data_dir)
        assert any(line.startswith(key) for line in identity_diff(identity_config(base), identity_config(changed)))


def test_hash_is_resolved_lists_and_stable():
    cfg = _compose([])
    ident = identity_config(cfg)
    assert isinstance(ident["model"]["module"]["hidden"], list)  # plain values, not ListConfig
    assert ident["model"]["datamodule"]["max_history"] == 50  # interpolations resolved
    assert "paths" not in ident and "logger" not in ident and "run_id" not in ident
    assert config_hash(_compose([])) == config_hash(cfg) and len(config_hash(cfg)) == 12


def test_run_dir_name_carries_the_hash_before_the_job_starts():
    cfg = _compose(["paths.log_dir=/out"], hydra_node=True)  # what Hydra resolves to pick the directory
    h = config_hash(cfg)
    assert h == config_hash(_compose(["paths.log_dir=/out"]))  # the hydra node does not count
    assert cfg.hydra.run.dir == f"/out/train/ml100k-two_tower-seed42-{h}"
    assert cfg.run_id == f"ml100k-two_tower-seed42-{h}"


# ---- safe loading ---------------------------------------------------------------------


def test_load_torch_refuses_code_and_says_how_to_opt_in(tmp_path):
    marker = tmp_path / "pwned"
    evil = write_evil_pickle(tmp_path / "evil.ckpt", marker)
    with pytest.raises(ProvenanceError, match="outside the allow-list.*trusted=true"):
        load_torch(evil)
    assert not marker.exists()
    load_torch(evil, trusted=True)  # the opt-in really unpickles: the marker mechanism works
    assert marker.exists()


def test_load_torch_allows_the_projects_classes(tmp_path, tiny_dataset):
    ds, _ = tiny_dataset
    torch.save({"meta": ds.meta, "w": torch.ones(2)}, tmp_path / "a.ckpt")
    assert load_torch(tmp_path / "a.ckpt")["meta"].n_items == ds.meta.n_items


# ---- dataset fingerprint, directories ---------------------------------------------------


def test_recorded_fingerprint_is_used_only_while_the_files_are_unchanged(tiny_dir):
    fp = compute_dataset_fingerprint(tiny_dir)
    meta = json.loads((tiny_dir / "meta.json").read_text())
    meta["extra"].update(fingerprint_record(tiny_dir))
    (tiny_dir / "meta.json").write_text(json.dumps(meta))
    assert dataset_fingerprint(tiny_dir) == fp
    # rewrite a table (a refresh copying meta.json would do this): the stale record is not trusted
    import pandas as pd

    inter = pd.read_parquet(tiny_dir / "interactions.parquet")
    inter.iloc[:-1].to_parquet(tiny_dir / "interactions.parquet")
    assert dataset_fingerprint(tiny_dir) == compute_dataset_fingerprint(tiny_dir) != fp


def test_replace_dir_swaps_a_complete_directory(tmp_path):
    out, tmp = tmp_path / "d", tmp_path / ".d.tmp"
    out.mkdir(), tmp.mkdir()
    (out / "old").write_text("old"), (tmp / "new").write_text("new")
    replace_dir(tmp, out)
    assert [p.name for p in out.iterdir()] == ["new"] and not tmp.exists()
    assert not list(tmp_path.glob(".d.old-*"))


def test_checkpoint_paths_stay_inside_their_run(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "epoch_001.ckpt").write_bytes(b"x")
    assert R.checkpoint_file(run, "epoch_001") == (run / "checkpoints" / "epoch_001.ckpt").resolve()
    # a run directory that was moved: a recorded absolute path maps to the file of that name here
    assert R.inside_run(run, "/old/place/checkpoints/epoch_001.ckpt") == (run / "checkpoints" / "epoch_001.ckpt").resolve()
    for bad in ("../../etc/passwd", "/tmp/evil.ckpt", str(tmp_path / "evil.ckpt")):
        with pytest.raises(ProvenanceError, match="outside"):
            R.inside_run(run, bad)


def test_a_ranker_behind_a_retrained_two_tower_is_another_run(tmp_path):
    """The parent two-tower counts by its best checkpoint, not its path: same command, retrained
    parent under the same stable name -> a new ranker run, and the diff names the parent."""
    run = tmp_path / "train" / "ml100k-two_tower-seed42"

    def cfg():
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
            out = compose("train", overrides=["experiment=ml100k/dlrm", f"model.module.retriever_run={run}"])
        GlobalHydra.instance().clear()
        return out

    missing = identity_config(cfg())
    assert missing["_parents"] == {"model.module.retriever_run": "missing"}
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.ckpt").write_bytes(b"first")
    first = identity_config(cfg())
    assert config_hash(cfg()) == hash_of(first) and first != missing
    (run / "checkpoints" / "best.ckpt").write_bytes(b"retrained")
    second = identity_config(cfg())
    assert hash_of(second) != hash_of(first)
    assert [d.split(":")[0] for d in identity_diff(first, second)] == ["_parents.model.module.retriever_run"]


@pytest.mark.parametrize("argv, says", [
    (["recsys.data.prepare", "data=synthetic", "data.kcore=abc"], "recsys.data.prepare: DataError: kcore='abc'"),
    (["recsys.index", "run=/nonexistent/run", "ckpt=/nonexistent.ckpt"], "recsys.index: UsageError: give either run="),
    (["recsys.index", "run=/nonexistent/run"], "recsys.index: FileNotFoundError: /nonexistent/run: no such run"),
])
def test_user_errors_are_one_line_without_a_traceback(argv, says, tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | {"OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", *argv, f"paths.data_dir={tmp_path}", f"paths.log_dir={tmp_path}"],
                         cwd=Path(CONFIGS).parent, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and says in res.stderr, res.stderr[-2000:]
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("module", ["recsys.train", "recsys.index", "recsys.recommend", "recsys.serve",
                                    "recsys.data.prepare"])
def test_help_starts_with_what_the_command_does(module):
    import importlib
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", module, "--help"], cwd=Path(CONFIGS).parent,
                         capture_output=True, text=True, timeout=300)
    mod = importlib.import_module(module if module != "recsys.serve" else "recsys.serve.__main__")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith(mod.__doc__.strip().splitlines()[0])  # the docstring, then Hydra's groups
    assert "== Configuration groups ==" in res.stdout
    assert f"python -m {module} is powered by Hydra" in res.stdout  # the command a user types, not __main__


def test_a_pipelines_journey_is_not_part_of_a_rankers_identity():
    """seq_dlrm embeds a pipeline node whose journey (commands for a user) names paths.log_dir; only the
    runs it reads (the parent two-tower) may make a ranker another run."""
    seq = ["experiment=ml100k/seq_dlrm"]
    base, moved = identity_config(_compose(seq)), identity_config(_compose([*seq, "paths.log_dir=/elsewhere"]))
    assert "journey" not in str(base)
    assert {d.split(":")[0] for d in identity_diff(base, moved)} == {
        "model.module.candidates.node.artifacts.two_tower.run_dir", "model.module.retriever_run"}
