"""`python -m recsys.index`: from a checkpoint file, and from a training run's directory as a user
runs it (subprocesses); the provenance it records and `load_two_tower_run`'s checks."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = str(ROOT / "configs")
ENV = dict(os.environ, OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def ckpt(ml100k_dir, ml100k, ml100k_split, tmp_path_factory):
    """A LitTwoTower checkpoint written by a plain Lightning Trainer (not recsys.train: no provenance)."""
    import pytorch_lightning as pl

    from recsys.data.two_tower_data import TwoTowerDataModule
    from recsys.models.lit_two_tower import LitTwoTower

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("run")
    model = LitTwoTower(ml100k.meta, dataset_dir=str(ml100k_dir), dim=16, out_dim=16, hidden=[32])
    dm = TwoTowerDataModule(ml100k, ml100k_split, batch_size=256, max_history=20)
    cb = pl.callbacks.ModelCheckpoint(dirpath=out / "checkpoints", save_last=True)
    pl.Trainer(max_epochs=1, limit_train_batches=20, limit_val_batches=0, logger=False, callbacks=[cb],
               enable_progress_bar=False, enable_model_summary=False).fit(model, dm)
    return out / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("kind", ["ivf_flat", "hnsw"])
def test_index_entry_point_writes_and_reloads(ckpt, kind, capsys):
    from recsys.index import run
    from recsys.models.lit_two_tower import LitTwoTower
    from recsys.retrieval.index import ItemIndex
    from recsys.utils.artifacts import file_hash, read_provenance

    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("build_index", overrides=[f"ckpt={ckpt}", f"index={kind}", "n_queries=200", "k=50"])
    metrics, art = run(cfg)
    out = ckpt.parent.parent / "index" / kind
    assert {p.name for p in out.iterdir()} >= {"index.faiss", "id_map.npy", "index.json", "item_embeddings.npy",
                                              "provenance.json", "ann_sweep.png", "ann_sweep.json"}
    emb = np.load(out / "item_embeddings.npy")
    model = LitTwoTower.from_checkpoint(ckpt)
    assert np.allclose(emb, model.item_embeddings().numpy(), atol=1e-6)  # embeddings are the checkpoint's
    prov = read_provenance(out)
    assert prov.parent == "checkpoints/last.ckpt" and prov.parent_hash == file_hash(ckpt)
    assert prov.config_hash == "unknown"  # not written by recsys.train: recorded as such
    back = ItemIndex.load(out)
    q = emb[:5]
    assert np.array_equal(back.search(q, 10)[1], art["index"].search(q, 10)[1])
    printed = capsys.readouterr().out
    assert "recall@50" in printed and "queries/s" in printed
    # the sweep's widest setting on 1,349 items is essentially exact
    assert 0.9 <= metrics[f"ann/{kind}/recall@50"] <= 1.0


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, ml100k_data_root):
    """``python -m recsys.train experiment=ml100k/two_tower debug=fast``, then index its stable name."""
    logs = tmp_path_factory.mktemp("outputs")
    train = [sys.executable, "-m", "recsys.train", "experiment=ml100k/two_tower", "debug=fast", "eval.progress=false",
             f"paths.log_dir={logs}", f"paths.data_dir={ml100k_data_root}"]
    res = subprocess.run(train, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    named = logs / "debug" / "ml100k-two_tower-seed42"
    index = [sys.executable, "-m", "recsys.index", f"run={named}", "index=flat", "n_queries=100", "k=20",
             f"paths.log_dir={logs}"]
    res = subprocess.run(index, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "built from" in res.stdout and "best.ckpt" in res.stdout
    return named


def test_index_from_run_dir_records_what_built_it(trained_run):
    from recsys.retrieval.artifacts import load_two_tower_run
    from recsys.utils.artifacts import dataset_fingerprint, file_hash, read_provenance

    run = trained_run.resolve()
    run_prov, idx_prov = read_provenance(run), read_provenance(run / "index" / "flat")
    assert idx_prov.kind == "index" and idx_prov.parent == "checkpoints/best.ckpt"
    assert idx_prov.parent_hash == file_hash(run / "checkpoints" / "best.ckpt")
    assert idx_prov.config_hash == run_prov.config_hash
    assert idx_prov.dataset_fingerprint == run_prov.dataset_fingerprint == dataset_fingerprint(run_prov.extra["dataset_dir"])

    model, index = load_two_tower_run(trained_run, "flat")  # the stable name, best checkpoint by default
    emb = np.load(run / "index" / "flat" / "item_embeddings.npy")
    assert np.allclose(model.item_embeddings().numpy(), emb, atol=1e-6)
    assert len(index) == emb.shape[0] and not model.training


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / run.name
    shutil.copytree(run, dst)
    return dst


def test_index_of_another_checkpoint_is_refused(trained_run, tmp_path):
    from recsys.retrieval.artifacts import load_two_tower_run
    from recsys.utils.artifacts import ProvenanceError

    run = _copy(trained_run.resolve(), tmp_path)
    with pytest.raises(ProvenanceError, match=rf"python -m recsys.index run={run} index=flat checkpoint=last"):
        load_two_tower_run(run, "flat", checkpoint="last")  # the index embeds best.ckpt
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    ckpt["state_dict"] = {k: v + 1e-3 if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    torch.save(ckpt, run / "checkpoints" / "best.ckpt")  # e.g. a resumed run published a new best
    with pytest.raises(ProvenanceError, match="file hashes.*recsys.index run="):
        load_two_tower_run(run, "flat")


def test_checkpoint_of_another_run_is_refused(trained_run, tmp_path):
    from recsys.retrieval.artifacts import load_two_tower_run
    from recsys.utils.artifacts import CHECKPOINT_KEY, ProvenanceError

    run = _copy(trained_run.resolve(), tmp_path)
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    ckpt[CHECKPOINT_KEY]["config_hash"] = "0123456789ab"
    torch.save(ckpt, run / "checkpoints" / "best.ckpt")
    with pytest.raises(ProvenanceError, match="config hashes.*python -m recsys.train"):
        load_two_tower_run(run, "flat")


def test_changed_dataset_is_refused(trained_run, tmp_path):
    import pandas as pd

    from recsys.retrieval.artifacts import load_two_tower_run
    from recsys.utils.artifacts import ProvenanceError, read_provenance

    data = Path(read_provenance(trained_run.resolve()).extra["dataset_dir"])
    changed = tmp_path / "ml100k"
    shutil.copytree(data, changed)
    inter = pd.read_parquet(changed / "interactions.parquet")
    inter.iloc[:-1].to_parquet(changed / "interactions.parquet")  # one interaction fewer
    with pytest.raises(ProvenanceError, match="dataset fingerprints.*python -m recsys.train"):
        load_two_tower_run(trained_run, "flat", dataset_dir=changed)


def test_missing_index_or_run_says_what_to_run(trained_run, tmp_path):
    from recsys.retrieval.artifacts import load_two_tower_run

    with pytest.raises(FileNotFoundError, match=f"python -m recsys.index run={trained_run} index=hnsw"):
        load_two_tower_run(trained_run, "hnsw")
    with pytest.raises(FileNotFoundError, match="train it first"):
        load_two_tower_run(tmp_path / "no-such-run", "flat")
    from recsys.utils.artifacts import ProvenanceError

    (tmp_path / "old-layout" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ProvenanceError, match="not a run directory of recsys.train"):
        load_two_tower_run(tmp_path / "old-layout", "flat")
    assert json.loads((trained_run / "metrics.json").read_text())["best_checkpoint"].endswith("best.ckpt")


def test_paths_outside_the_run_are_refused(trained_run, tmp_path):
    """A checkpoint or index named as a path (.., absolute, a symlink out of the run) is never opened."""
    from recsys.retrieval.artifacts import load_two_tower_run
    from recsys.utils.artifacts import ProvenanceError

    outside = tmp_path / "outside.ckpt"
    outside.write_bytes(b"not a checkpoint")
    for name in ("../../outside", str(outside)):
        with pytest.raises(ProvenanceError, match="outside its run"):
            load_two_tower_run(trained_run, "flat", checkpoint=name)
    link = trained_run.resolve() / "checkpoints" / "link.ckpt"
    link.symlink_to(outside)
    try:
        with pytest.raises(ProvenanceError, match="outside its run"):
            load_two_tower_run(trained_run, "flat", checkpoint="link")
    finally:
        link.unlink()
    with pytest.raises(ValueError, match="index_kind"):
        load_two_tower_run(trained_run, "../../elsewhere/flat")


def test_a_trained_run_reaches_serving_through_config(trained_run, ml100k_data_root):
    """The run `recsys.train` wrote and `recsys.index` indexed, served by `pipeline=two_tower` with its best
    checkpoint and no trust flag: the run's stable name is the only thing the config names."""
    from recsys.pipeline.build import build_recommender, compose_serve

    rec = build_recommender(compose_serve([f"paths.data_dir={ml100k_data_root}", "pipeline=two_tower",
                                           "pipeline.sources.content=null", f"pipeline.artifacts.two_tower.run_dir={trained_run}",
                                           "pipeline.artifacts.two_tower.index_kind=flat"]))
    assert rec.info["artifacts"]["two_tower"] == f"{trained_run} (best)"
    cands, _ = rec.recommend(rec.contexts.user_idx("196"), k=10)
    assert len(cands) == 10 and cands.trace["sources"]["two_tower"]["n_out"] > 0
    assert any("two_tower" in s for s in cands.sources.tolist())
