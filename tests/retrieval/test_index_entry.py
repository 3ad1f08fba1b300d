"""`python -m recsys.index`: a real checkpoint on ML-100K -> index files, reload, recall/QPS sweep."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

CONFIGS = str(Path(__file__).resolve().parents[2] / "configs")


@pytest.fixture(scope="module")
def ckpt(ml100k_dir, ml100k, ml100k_split, tmp_path_factory):
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

    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("build_index", overrides=[f"ckpt={ckpt}", f"index={kind}", "n_queries=200", "k=50"])
    metrics, art = run(cfg)
    run_dir = ckpt.parent.parent
    out = run_dir / "index" / kind
    assert {p.name for p in out.iterdir()} >= {"index.faiss", "id_map.npy", "index.json", "ann_sweep.png", "ann_sweep.json"}
    emb = np.load(run_dir / "item_embeddings.npy")
    model = LitTwoTower.from_checkpoint(ckpt)
    assert np.allclose(emb, model.item_embeddings().numpy(), atol=1e-6)  # embeddings are the checkpoint's
    back = ItemIndex.load(out)
    q = emb[:5]
    assert np.array_equal(back.search(q, 10)[1], art["index"].search(q, 10)[1])
    printed = capsys.readouterr().out
    assert "recall@50" in printed and "queries/s" in printed
    # the sweep's widest setting on 1,349 items is essentially exact
    assert 0.9 <= metrics[f"ann/{kind}/recall@50"] <= 1.0
