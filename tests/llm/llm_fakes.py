"""A scripted backend for testing parsing and bookkeeping (the real SmolLM2 runs in test_smollm2.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.llm.backends.base import LLMBackend


class ScriptedBackend(LLMBackend):
    """generate() returns ``texts`` in turn; score_choices() returns ``score_fn(prompt, labels)`` rows."""

    name = "scripted"

    def __init__(self, texts=None, score_fn=None):
        super().__init__()
        self.texts = list(texts or [])
        self.score_fn = score_fn
        self.calls: list[tuple[str, int]] = []

    def generate(self, prompts, max_new_tokens=64, temperature=0.0, json_schema=None, choices=None):
        self.calls.append(("generate", len(prompts)))
        out = [self.texts[i % len(self.texts)] if self.texts else "" for i in range(len(prompts))]
        self.stats.record(len(prompts), 10 * len(prompts), 5 * len(prompts), 0.001)
        return out

    def score_choices(self, prompts, labels):
        self.calls.append(("score", len(prompts)))
        self.stats.record(len(prompts), 10 * len(prompts), 0, 0.001)
        return np.stack([np.asarray(self.score_fn(p, labels), dtype=np.float32) for p in prompts]) if prompts else np.zeros((0, len(labels)), np.float32)


def tiny_items(n: int = 30) -> pd.DataFrame:
    genres = ["Comedy", "Horror", "Drama", "Sci-Fi", "Romance"]
    return pd.DataFrame({
        "item_idx": np.arange(n),
        "item_id": [str(i) for i in range(n)],
        "title": [f"Film Number {i:02d} ({1980 + i})" for i in range(n)],
        "year": np.arange(1980, 1980 + n, dtype=np.int32),
        "categories": [[genres[i % 5], genres[(i + 1) % 5]] if i % 3 == 0 else [genres[i % 5]] for i in range(n)],
        "text": [""] * n,
    })


def candidate_titles_in_prompt(prompt) -> list[int]:
    """item numbers of the candidates, in prompt order (from 'Film Number NN' lines after <candidates>)."""
    import re

    user = prompt[-1]["content"]
    block = user.split("<candidates>")[1].split("</candidates>")[0]
    return [int(m) for m in re.findall(r"Film Number (\d+)", block)]
