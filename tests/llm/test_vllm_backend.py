"""vLLM offline engine on a GPU (skipped where there is none or vllm is not installed)."""

import numpy as np
import pytest

from llm_fakes import tiny_items
from recsys.llm.prompts import LABELS, verbalizer_prompt

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_vllm_generate_structured_and_score():
    pytest.importorskip("vllm", reason="vllm is in the `gpu` extra")
    from recsys.llm.backends.vllm_backend import VLLMBackend
    from recsys.llm.rerank import LLMReranker
    from recsys.core.candidates import Candidates, UserContext

    be = VLLMBackend(model=None, gpu_memory_utilization=0.3, max_model_len=2048)  # SmolLM2 safetensors cache
    items = tiny_items(30)
    out = be.generate([[{"role": "user", "content": "Pick one."}]], max_new_tokens=4, choices=["A", "B", "C"])
    assert out[0] in {"A", "B", "C"}
    prompts = [verbalizer_prompt(items, np.array([1, 2]), np.arange(5, 25))] * 2
    lp = be.score_choices(prompts, LABELS[:20])
    assert lp.shape == (2, 20) and np.isfinite(lp).sum() >= 10
    np.testing.assert_allclose(lp[0], lp[1], atol=1e-3)
    c = Candidates(np.arange(5, 25), np.linspace(1, 0, 20), np.array(["x"] * 20))
    res = LLMReranker(be, items, top_n=20, n_permutations=3)(UserContext(history=np.array([1, 2])), c)
    assert sorted(res.items.tolist()) == list(range(5, 25))
