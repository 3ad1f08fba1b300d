"""The conversation set runs against the app built from the composed serve config (llm=none)."""

from __future__ import annotations

import pytest

from conversation_cases import compose_serve


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
