"""configs/model/{dlrm,dcn}.yaml compose and instantiate into the real objects."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from recsys.models.dlrm import CrossNetInteractionArch, InteractionArch
from recsys.models.lit_ranker import LitRanker
from recsys.ranking.retrievers import LightningRetriever
from recsys.ranking.two_stage import TwoStageRanker

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _compose(experiment):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=[f"experiment={experiment}", "logger=none", "trainer.max_epochs=2"])


@pytest.mark.parametrize("experiment,interaction", [("ml100k/dlrm", InteractionArch), ("ml100k/dcn", CrossNetInteractionArch)])
def test_ranking_experiment_builds(experiment, interaction, tiny_dataset):
    ds, _ = tiny_dataset
    cfg = _compose(experiment)
    model = instantiate(cfg.model.module, _partial_=True)(meta=ds.meta, dataset_dir=None)
    assert isinstance(model, TwoStageRanker) and model.max_epochs == 2
    retr = model._new_retriever()
    assert isinstance(retr, LightningRetriever) and retr.max_epochs == 2
    from recsys.ranking.features import RankingFeatures

    feats = RankingFeatures(ds, model.sparse_features, model.dense_features)
    ranker = model.ranker_factory(cardinalities=feats.cardinalities(), num_dense_features=len(model.dense_features))
    assert isinstance(ranker, LitRanker) and isinstance(ranker.model.interaction, interaction)
    assert ranker.model.feature_names == list(cfg.model.module.sparse_features)
