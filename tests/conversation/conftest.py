"""The conversation set runs against the app built from the composed serve config (llm=none)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CASES = yaml.safe_load((Path(__file__).parent / "cases.yaml").read_text())


def compose_serve(data_dir, feedback_db, overrides=()):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose("serve", overrides=[f"paths.data_dir={data_dir}", "data_name=ml100k", f"feedback_db={feedback_db}",
                                           "pipeline.sources.content=null", *overrides])


@pytest.fixture(scope="module")
def serve_state(ml100k_dir, tmp_path_factory):
    from recsys.serve.app import build_state

    cfg = compose_serve(ml100k_dir.parent, tmp_path_factory.mktemp("fb") / "feedback.sqlite")
    state = build_state(cfg)
    yield state
    state.store.close()


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M (the same fixture as tests/llm/conftest.py)."""
    import os

    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    from recsys.llm.backends.transformers_backend import TransformersBackend

    return TransformersBackend(num_threads=1, batch_size=8)
