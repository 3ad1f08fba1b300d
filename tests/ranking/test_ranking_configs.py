"""configs/model/{dlrm,dcn}.yaml compose into the real objects; the run's trainer config reaches nested trainers."""

import numpy as np
import pytest
from pytorch_lightning.accelerators import CPUAccelerator

from recsys.core.inject import instantiate_with
from recsys.models.lit_ranker import LitRanker
from recsys.ranking.features import RankerFeatures
from recsys.ranking.retrievers import LightningRetriever
from recsys.ranking.two_stage import TwoStageRanker

from ranking_helpers import compose_config


def _model(experiment, overrides, tiny_dataset, tmp_path):
    ds, _ = tiny_dataset
    cfg = compose_config("train", [f"experiment={experiment}", "logger=none", *overrides], output_dir=tmp_path)
    return instantiate_with(cfg.model.module, meta=ds.meta, dataset_dir=None), cfg


@pytest.mark.parametrize("experiment,interaction", [("ml100k/dlrm", "dot"), ("ml100k/dcn", "dcn")])
def test_ranking_experiment_builds(experiment, interaction, tiny_dataset, tmp_path):
    ds, split = tiny_dataset
    model, cfg = _model(experiment, ["trainer.max_epochs=2"], tiny_dataset, tmp_path)
    assert isinstance(model, TwoStageRanker) and model.max_epochs == 2
    # the candidate sources are the served two-tower pipeline's, in its order
    assert model.spec.sources == ["item2item", "content", "popularity", "two_tower"] and model.retriever_artifact == "two_tower"
    assert isinstance(model.candidates["merger"], dict) and model.candidates["merger"]["weights"]["two_tower"] == 4.0
    assert isinstance(model._new_retriever(), LightningRetriever)
    feats = RankerFeatures(model.spec, ds, split.train, text_emb=np.ones((ds.meta.n_items, 4), np.float32))
    ranker = model.ranker_factory(cardinalities=feats.cardinalities(), num_dense_features=feats.num_dense)
    assert isinstance(ranker, LitRanker) and ranker.hparams.interaction == interaction
    assert ranker.model.feature_names == list(cfg.model.module.features.sparse)


def test_trainer_gpu_reaches_every_nested_trainer(tiny_dataset, tmp_path):
    model, _ = _model("ml100k/dlrm", ["trainer=gpu"], tiny_dataset, tmp_path)
    for factory in (model.trainer_factory, model._new_retriever().trainer_factory):
        assert factory.keywords["accelerator"] == "gpu" and factory.keywords["precision"] == "bf16-mixed"


def test_trainer_cpu_reaches_the_nested_retriever_fit(tiny_dataset, tiny_dir, tmp_path):
    """compose with trainer=cpu (+ overrides) and fit the nested two-tower: its Trainer got that config."""
    ds, split = tiny_dataset
    model, _ = _model("ml100k/dlrm", ["trainer=cpu", "trainer.limit_train_batches=1", "trainer.log_every_n_steps=7",
                                      "model.module.retriever.max_epochs=2", "model.module.retriever.module.use_text=false",
                                      "model.module.retriever.datamodule.batch_size=4"], tiny_dataset, tmp_path)
    model.dataset_dir = str(tiny_dir)
    retriever = model._new_retriever().fit(ds, split)
    t = retriever.trainer
    assert isinstance(t.accelerator, CPUAccelerator) and t.limit_train_batches == 1 and t.log_every_n_steps == 7
    assert t.max_epochs == 2 and t.global_step == 2  # its own epochs, the run's batch limit
    assert model.trainer_factory.keywords["limit_train_batches"] == 1
