"""Every configs/llm/*.yaml composes; its stage partials build around a backend."""

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from llm_fakes import ScriptedBackend, tiny_items
from recsys.llm.conversation import ConversationParser
from recsys.llm.explain import Explainer
from recsys.core.inject import instantiate_with
from recsys.llm.factory import build_conversation, build_llm
from recsys.llm.rerank import LLMReranker
from recsys.core.candidates import Candidates, UserContext

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TARGETS = {
    "smollm2": "recsys.llm.backends.transformers_backend.TransformersBackend",
    "vllm": "recsys.llm.backends.vllm_backend.VLLMBackend",
    "openai": "recsys.llm.backends.openai_backend.OpenAIBackend",
}


def _llm_cfg(name):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS / "llm"), version_base="1.3"):
        cfg = compose(name)
    GlobalHydra.instance().clear()
    return cfg


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_backend_configs_compose_and_stages_build(name):
    cfg = _llm_cfg(name)
    assert cfg.backend._target_ == TARGETS[name]
    be = ScriptedBackend(score_fn=lambda p, labels: -np.arange(len(labels), dtype=float))
    items = tiny_items(30)
    rr = instantiate(cfg.rerank)(backend=be, items_table=items)
    ex = instantiate(cfg.explain)(backend=be, items_table=items)
    conv = instantiate(cfg.conversation)(categories=["Comedy", "Horror"], backend=be)
    assert isinstance(rr, LLMReranker) and isinstance(ex, Explainer) and isinstance(conv, ConversationParser)
    out = rr(UserContext(), Candidates(np.array([3, 4, 5]), np.array([0.1, 0.9, 0.5]), np.array(["x"] * 3)))
    assert sorted(out.items.tolist()) == [3, 4, 5]


def test_none_switches_the_llm_off():
    cfg = _llm_cfg("none")
    llm = build_llm(cfg)
    assert llm.backend is None and llm.accounting is None and cfg.rerank is None
    explain = instantiate_with(cfg.explain, items_table=tiny_items(10), backend=llm.backend)  # as the pipeline does
    c = Candidates(np.array([1, 2]), np.ones(2), np.array(["x", "x"]))
    out = explain(UserContext(history=np.array([6])), c)
    assert len(out.explanations) == 2 and out.trace["explain"]["ungrounded"] == 0
    conversation = build_conversation(cfg, categories=["Comedy", "Horror"], backend=llm.backend)
    assert conversation.turn("s", "a horror film").constraints.include_categories == ["Horror"]
