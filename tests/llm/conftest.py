"""One SmolLM2 backend per test session, shared by every `llm` test (loading is the slow part)."""

import os

import pytest


@pytest.fixture(scope="session")
def smollm2():
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    from recsys.llm.backends.transformers_backend import TransformersBackend

    return TransformersBackend(num_threads=1, batch_size=8)
