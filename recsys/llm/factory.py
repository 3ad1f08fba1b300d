"""The LLM parts of one ``configs/llm/*.yaml`` choice: its backend, built once, and the conversation parser.

The LLM *stages* (re-rank, explanation) are declared in the pipeline YAML, in
their place among the other stages; they read their node from this config
(``${oc.select:llm.rerank,null}``) and are built by the pipeline factory
(``recsys.pipeline.build.build_recommender``), which injects the backend built
here and one :class:`LLMAccounting` into every stage that names them. The
data-derived arguments (items table, genre vocabulary, item popularity) are
injected too, so YAML never repeats them.
"""

from __future__ import annotations

from dataclasses import dataclass

from recsys.llm.accounting import LLMAccounting


@dataclass
class LLMParts:
    """``backend`` (None: no LLM) and the ``accounting`` its stages record batches in (None without a backend)."""

    name: str
    backend: object | None = None
    accounting: LLMAccounting | None = None


def build_llm(cfg, backend=None) -> LLMParts:
    """The backend of ``cfg`` (an ``llm`` node; None = no LLM), with its LoRA ``adapter`` when set.

    ``backend`` given: used instead of building one from ``cfg.backend`` (tests, a shared model).
    """
    from hydra.utils import instantiate

    if cfg is None:
        return LLMParts("none", backend, LLMAccounting() if backend is not None else None)
    if backend is None and cfg.get("backend") is not None:
        backend = instantiate(cfg.backend, _convert_="all")
        if cfg.get("adapter"):
            backend = with_adapter(backend, cfg.adapter)
    return LLMParts(str(cfg.get("name", "?")), backend, LLMAccounting() if backend is not None else None)


def with_adapter(backend, adapter: str):
    """``backend`` with a LoRA adapter from scripts/finetune_llm_ranker.py (LlamaRec-style fine-tuned ranker):
    vLLM applies it per request on its own engine; transformers merges it into a model copy (the base
    backend keeps scoring without it, so zero-shot and fine-tuned can share one loaded model)."""
    if hasattr(backend, "with_adapter"):
        return backend.with_adapter(adapter)
    from recsys.llm.finetune import load_adapter

    return load_adapter(backend, adapter)


def build_conversation(cfg, **objects):
    """The ``cfg.conversation`` parser (None when absent), given ``categories``, ``backend``, ``accounting``..."""
    from recsys.core.inject import instantiate_with

    node = cfg.get("conversation") if cfg is not None else None
    return None if node is None else instantiate_with(node, **objects)
