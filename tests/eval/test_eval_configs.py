"""The eval and baseline model configs compose and instantiate into working objects."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from recsys.eval.evaluator import Evaluator

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _build(node, **objects):
    """Instantiate a config node, then pass live objects (Hydra would copy them into its config)."""
    return instantiate(node, _partial_=True)(**objects)


def _compose(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=False)


@pytest.mark.parametrize("choice,protocol", [("default", "full"), ("sampled", "sampled")])
def test_eval_configs(choice, protocol):
    ev = instantiate(_compose([f"eval={choice}"]).eval)
    assert isinstance(ev, Evaluator) and ev.protocol == protocol and ev.ks == (10, 20, 50)


@pytest.mark.parametrize("model", ["pop", "itemknn", "bpr", "sasrec"])
def test_model_configs_build_and_score(model, tiny_dataset):
    from recsys.data.history import History
    ds, split = tiny_dataset
    cfg = _compose([f"experiment=ml100k/{model}"])
    assert cfg.model.name == model
    module = _build(cfg.model.module, meta=ds.meta)
    if hasattr(module, "fit"):
        module.fit(ds, split)
    else:
        dm = _build(cfg.model.datamodule, dataset=ds, split=split)
        assert next(iter(dm.train_dataloader()))  # batches build for this model's datamodule
        module.configure_optimizers()
    scores = module.score(History.from_lists([0, 1], [[0, 1], []]))
    assert tuple(scores.shape) == (2, ds.meta.n_items)
