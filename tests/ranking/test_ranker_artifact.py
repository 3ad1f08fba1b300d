"""Ranker save/load: weights + JSON config + provenance; the loader checks the dataset and the config."""

import json

import numpy as np
import pytest
import torch

from recsys.core.candidates import UserContext
from recsys.models.lit_ranker import LitRanker
from recsys.pipeline.rank import dlrm_stage
from recsys.ranking.artifact import CONFIG, load_ranker, save_ranker
from recsys.ranking.features import FeatureSpec, RankerFeatures
from recsys.utils.artifacts import ProvenanceError, dataset_fingerprint, file_hash, read_provenance

from test_features import _merged


def _saved(tiny_dir, tiny_dataset, tmp_path, retrievers=None):
    ds, split = tiny_dataset
    spec = FeatureSpec(sources=["a", "b"], sparse=["user", "categories", "sources"],
                       dense=["a_score", "b_rank", "merged_rank", "item_popularity", "att_knn_max"], din=True, history_len=3)
    feats = RankerFeatures(spec, ds, split.train)
    torch.manual_seed(0)
    model = LitRanker(feats.cardinalities(), feats.num_dense, embedding_dim=4, interaction="dcn", cross_layers=2, cross_rank=3,
                      din_items=ds.meta.n_items, din_history=3)
    model.set_dense_stats(torch.randn(10, feats.num_dense) * 3 + 1)
    d = save_ranker(tmp_path / "run" / "model", model, spec, tiny_dir, retrievers, extra={"retriever_source": "a"})
    return model, feats, d


def test_round_trip_gives_the_same_scores_and_records_provenance(tiny_dir, tiny_dataset, tmp_path):
    ckpt = tmp_path / "tt.ckpt"
    ckpt.write_bytes(b"checkpoint bytes")
    model, feats, d = _saved(tiny_dir, tiny_dataset, tmp_path, {"serving": ckpt, "inner": None})
    saved = load_ranker(d, tiny_dir)
    rows = feats.compute(UserContext(user_idx=1, history=np.array([1, 4])), _merged()).tensors()
    with torch.no_grad():
        torch.testing.assert_close(saved.model(*rows.batch()), model.eval()(*rows.batch()))
    assert saved.spec == feats.spec and saved.config["retriever_source"] == "a"
    assert torch.equal(saved.model.dense_std, model.dense_std)  # standardisation travels in the state dict
    prov = read_provenance(d)
    assert prov.kind == "ranker" and prov.dataset_fingerprint == dataset_fingerprint(tiny_dir)
    assert prov.parent == str(ckpt) and prov.parent_hash == file_hash(ckpt)
    assert set(prov.extra["retrievers"]) == {"serving"} and prov.extra["weights_hash"] == file_hash(d / "ranker.pt")
    # the serving stage loads the same ranker from the run directory
    stage = dlrm_stage(tmp_path / "run", tiny_dataset[0], tiny_dataset[1].train, tiny_dir)
    out = stage(UserContext(user_idx=1, history=np.array([1, 4])), _merged())
    with torch.no_grad():
        logits = model(*rows.batch()).numpy()
    np.testing.assert_allclose(out.features["rank_score"], np.sort(logits)[::-1], rtol=1e-5)


def test_other_dataset_is_refused(tiny_dir, tiny_dataset, tmp_path):
    from recsys.data.io import save_dataset, save_split

    _, _, d = _saved(tiny_dir, tiny_dataset, tmp_path)
    ds, split = tiny_dataset
    other = tmp_path / "other"
    save_dataset(ds, other)
    split.train = split.train.iloc[1:]  # one training row fewer: another dataset as far as the ranker knows
    save_split(split, other)
    assert dataset_fingerprint(other) != dataset_fingerprint(tiny_dir)
    with pytest.raises(ProvenanceError, match="serving dataset.*recsys.train experiment=ml100k/dlrm"):
        load_ranker(d, other)
    with pytest.raises(ProvenanceError):
        dlrm_stage(d.parent, ds, split.train, other)


def test_edited_config_and_missing_record_are_refused(tiny_dir, tiny_dataset, tmp_path):
    _, _, d = _saved(tiny_dir, tiny_dataset, tmp_path)
    cfg = json.loads((d / CONFIG).read_text())
    cfg["features"]["n_rank"] = 7
    (d / CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(ProvenanceError, match="provenance record"):
        load_ranker(d, tiny_dir)
    (d / "provenance.json").unlink()
    with pytest.raises(ProvenanceError, match="no provenance record"):
        load_ranker(d, tiny_dir)
    with pytest.raises(FileNotFoundError, match="train a ranker"):
        load_ranker(tmp_path / "nowhere", tiny_dir)
