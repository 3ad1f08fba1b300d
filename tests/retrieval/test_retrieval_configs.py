"""Config layer: every index config composes and instantiates; the two-tower experiment and the
SLURM launcher compose; the model node builds a LitTwoTower from a prepared dataset."""

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

CONFIGS = str(Path(__file__).resolve().parents[2] / "configs")


@pytest.mark.parametrize("kind", ["flat", "ivf_flat", "ivf_pq", "hnsw"])
def test_index_configs_instantiate_and_build(kind):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("build_index", overrides=[f"index={kind}", "ckpt=unused"])
    node = OmegaConf.to_container(cfg.index)
    sweep = node.pop("sweep", None)
    index = instantiate(node)
    assert index.kind == kind and (sweep is None) == (kind == "flat")
    x = np.random.default_rng(0).normal(size=(400, 16)).astype(np.float32)
    assert index.build(x).search(x[:2], 5)[1].shape == (2, 5)


def test_two_tower_experiment_and_slurm_launcher_compose(ml100k_dir, ml100k):
    from recsys.models.lit_two_tower import LitTwoTower
    from recsys.core.inject import instantiate_with

    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("train", overrides=["experiment=ml100k/two_tower", "+launcher=slurm"], return_hydra_config=True)
    assert cfg.model.name == "two_tower" and cfg.eval.ks[-1] == 200
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    model = instantiate_with(cfg.model.module, meta=ml100k.meta, dataset_dir=str(ml100k_dir))
    assert isinstance(model, LitTwoTower)
    assert cfg.model.datamodule._target_ == "recsys.data.two_tower_data.TwoTowerDataModule"
