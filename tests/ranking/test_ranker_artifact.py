"""Ranker save/load: weights + JSON config + provenance; the loader checks the dataset and the config."""

import json

import numpy as np
import pytest
import torch

from recsys.core.candidates import UserContext
from recsys.models.lit_ranker import LitRanker
from recsys.pipeline.rank import dlrm_stage
from recsys.ranking.artifact import CONFIG, load_ranker, load_ranker_run, save_ranker
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
    d = save_ranker(tmp_path / "run" / "model", model, spec, tiny_dir, retrievers, extra={"retriever_artifact": "a"})
    return model, feats, d


def test_round_trip_gives_the_same_scores_and_records_provenance(tiny_dir, tiny_dataset, tmp_path):
    ckpt = tmp_path / "tt.ckpt"
    ckpt.write_bytes(b"checkpoint bytes")
    model, feats, d = _saved(tiny_dir, tiny_dataset, tmp_path, {"serving": ckpt, "inner": None})
    saved = load_ranker(d, tiny_dir)
    rows = feats.compute(UserContext(user_idx=1, history=np.array([1, 4])), _merged()).tensors()
    with torch.no_grad():
        torch.testing.assert_close(saved.model(*rows.batch()), model.eval()(*rows.batch()))
    assert saved.spec == feats.spec and saved.config["retriever_artifact"] == "a"
    assert torch.equal(saved.model.dense_std, model.dense_std)  # standardisation travels in the state dict
    prov = read_provenance(d)
    assert prov.kind == "ranker" and prov.dataset_fingerprint == dataset_fingerprint(tiny_dir)
    assert prov.parent == str(ckpt) and prov.parent_hash == file_hash(ckpt)
    assert set(prov.extra["retrievers"]) == {"serving"} and prov.extra["weights_hash"] == file_hash(d / "ranker.pt")
    # the serving stage loads the same ranker from the run directory
    stage = dlrm_stage(load_ranker_run(tmp_path / "run", tiny_dir), tiny_dataset[0], tiny_dataset[1].train)
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
        load_ranker_run(d.parent, other)


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


def test_served_two_tower_must_be_the_one_the_ranker_was_trained_behind(tiny_dir, tiny_dataset, tmp_path):
    from recsys.utils.artifacts import Provenance, write_provenance

    tt = tmp_path / "train" / "tt-seed42-abc"  # a two-tower run dir and its stable name (recsys.train's layout)
    (tt / "checkpoints").mkdir(parents=True)
    (tt / "checkpoints" / "best.ckpt").write_bytes(b"the two-tower checkpoint")
    (tmp_path / "train" / "tt-seed42").symlink_to(tt.name)
    link = tmp_path / "train" / "tt-seed42"
    ranker_run = tmp_path / "run"
    _, _, d = _saved(tiny_dir, tiny_dataset, tmp_path, {"serving": tt / "checkpoints" / "best.ckpt"})
    cfg = json.loads((d / CONFIG).read_text())  # as TwoStageRanker.save records it (and its hash)
    save_ranker(d, load_ranker(d, tiny_dir).model, FeatureSpec(**cfg["features"]), tiny_dir,
                {"serving": tt / "checkpoints" / "best.ckpt"}, {"retriever_run": str(link)})
    write_provenance(ranker_run, Provenance("run", "r" * 12, dataset_fingerprint(tiny_dir),
                                            extra={"command": "python -m recsys.train experiment=ml100k/dlrm seed=3"}))

    assert load_ranker_run(ranker_run, tiny_dir, two_tower_run=link).provenance.parent_hash == file_hash(
        tt / "checkpoints" / "best.ckpt")
    # the two-tower run was retrained (best.ckpt replaced): the ranker's two-tower features are stale
    (tt / "checkpoints" / "best.ckpt").write_bytes(b"another two-tower checkpoint")
    with pytest.raises(ProvenanceError, match=r"two-tower checkpoint.*rebuild with `python -m recsys.train "
                                              r"experiment=ml100k/dlrm seed=3`$"):
        load_ranker_run(ranker_run, tiny_dir, two_tower_run=link)
    # another run served: the command names it
    other = tmp_path / "other-run"
    (other / "checkpoints").mkdir(parents=True)
    (other / "checkpoints" / "epoch_001.ckpt").write_bytes(b"a third two-tower checkpoint")
    with pytest.raises(ProvenanceError, match=f"seed=3 model.module.retriever_run={other} "
                                              "model.module.candidates.node.artifacts.two_tower.checkpoint=epoch_001`"):
        load_ranker_run(ranker_run, tiny_dir, two_tower_run=other, two_tower_checkpoint="epoch_001")
    with pytest.raises(FileNotFoundError, match="no ranker run.*experiment=ml100k/dlrm"):
        load_ranker_run(tmp_path / "no-ranker", tiny_dir, two_tower_run=link)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # training_step outside a Trainer
def test_an_ensemble_ranker_scores_its_members_mean_and_round_trips(tiny_dir, tiny_dataset, tmp_path):
    """members=3: three independently initialised DLRMs; the score is the mean of their logits (hand-checked
    against each member called alone), each member is trained on its own loss, and save/load keeps all three."""
    ds, split = tiny_dataset
    spec = FeatureSpec(sources=["a", "b"], sparse=["user", "categories", "sources"], dense=["a_score", "merged_rank"])
    feats = RankerFeatures(spec, ds, split.train)
    torch.manual_seed(0)
    model = LitRanker(feats.cardinalities(), feats.num_dense, embedding_dim=4, members=3).eval()
    assert len(model.others) == 2
    rows = feats.compute(UserContext(user_idx=1, history=np.array([1, 4])), _merged()).tensors()
    dense, sparse = rows.batch()
    with torch.no_grad():
        x = (dense - model.dense_mean) / model.dense_std
        each = [m(x, sparse) for m in (model.model, *model.others)]
        assert not torch.allclose(each[0], each[1])  # their own initialisations
        torch.testing.assert_close(model(dense, sparse), torch.stack(each).mean(0))
    labels = torch.zeros(len(rows))
    labels[0] = 1.0
    seg, pos = torch.zeros(len(rows), dtype=torch.long), torch.arange(len(rows))
    loss = model.training_step((dense, sparse, labels, seg, pos), 0)
    loss.backward()
    assert all(p.grad is not None for m in model.others for p in m.over_arch.parameters())
    d = save_ranker(tmp_path / "ens" / "model", model, spec, tiny_dir)
    saved = load_ranker(d, tiny_dir)
    assert saved.config["ranker"]["members"] == 3
    with torch.no_grad():
        torch.testing.assert_close(saved.model(dense, sparse), model(dense, sparse))
    with pytest.raises(ValueError, match="members"):
        LitRanker(feats.cardinalities(), feats.num_dense, members=0)
