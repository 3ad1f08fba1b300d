"""Build the LLM stages of one ``configs/llm/*.yaml`` choice.

The config names the backend and the stage classes; the data-derived
arguments (items table, genre vocabulary, item popularity) come from the
prepared dataset and are injected here, so YAML never repeats them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def build_llm_stages(cfg, items_table: pd.DataFrame, categories: list[str],
                     item_popularity: np.ndarray | None = None, accounting=None) -> dict:
    """-> {"backend", "rerank", "explain", "conversation"}; absent stages are None."""
    from hydra.utils import instantiate

    backend = instantiate(cfg.backend) if cfg.get("backend") is not None else None
    if backend is not None and cfg.get("adapter"):
        # a LoRA adapter from scripts/finetune_llm_ranker.py (LlamaRec-style fine-tuned ranker):
        # vLLM applies it per request on its own engine; transformers merges it into a model copy
        if hasattr(backend, "with_adapter"):
            backend = backend.with_adapter(cfg.adapter)
        else:
            from recsys.llm.finetune import load_adapter

            backend = load_adapter(backend, cfg.adapter)
    out = {"backend": backend, "rerank": None, "explain": None, "conversation": None}
    if cfg.get("rerank") is not None:
        if backend is None:
            raise ValueError("llm.rerank needs llm.backend (use llm=none to switch the LLM off)")
        out["rerank"] = instantiate(cfg.rerank)(backend=backend, items_table=items_table, accounting=accounting)
    if cfg.get("explain") is not None:
        out["explain"] = instantiate(cfg.explain)(backend=backend, items_table=items_table,
                                                  item_popularity=item_popularity, accounting=accounting)
    if cfg.get("conversation") is not None:
        out["conversation"] = instantiate(cfg.conversation)(categories=categories, backend=backend, accounting=accounting)
    return out
