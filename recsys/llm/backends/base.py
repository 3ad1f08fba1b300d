"""The one interface every LLM backend implements.

A backend turns a batch of chat prompts into texts (``generate``) and reads,
for a batch of prompts, the log-probability of each of C single-token labels
as the next token (``score_choices``; the verbalizer of LlamaRec, Yue et al.
2023). Re-ranking, explanation and conversation only talk to this interface,
so the transformers (CPU/GPU), vLLM (GPU) and OpenAI-compatible HTTP backends
are interchangeable by config (``llm=smollm2|vllm|openai``).

Shapes: B prompts, C labels.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

Messages = list[dict]  # [{"role": "system"|"user"|"assistant", "content": str}, ...]


@dataclass
class BackendStats:
    """Counters a backend updates on every call (read by ``recsys.llm.accounting``)."""

    calls: int = 0
    prompts: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    latency_s: float = 0.0
    errors: int = 0
    last_call: dict = field(default_factory=dict)

    def record(self, n_prompts: int, prompt_tokens: int, generated_tokens: int, latency_s: float) -> None:
        self.calls += 1
        self.prompts += n_prompts
        self.prompt_tokens += prompt_tokens
        self.generated_tokens += generated_tokens
        self.latency_s += latency_s
        self.last_call = {
            "prompts": n_prompts,
            "prompt_tokens": prompt_tokens,
            "generated_tokens": generated_tokens,
            "latency_ms": 1000.0 * latency_s,
        }

    def snapshot(self) -> dict:
        return {
            "calls": self.calls, "prompts": self.prompts, "prompt_tokens": self.prompt_tokens,
            "generated_tokens": self.generated_tokens, "latency_s": self.latency_s, "errors": self.errors,
        }


class LLMBackend(ABC):
    """Batch in, batch out. Implementations must be safe to call with B == 0."""

    name: str = "base"

    def __init__(self) -> None:
        self.stats = BackendStats()

    @abstractmethod
    def generate(
        self,
        prompts: list[Messages],
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        json_schema: dict | None = None,
        choices: list[str] | None = None,
    ) -> list[str]:
        """(B,) chat prompts -> (B,) completions.

        ``json_schema`` / ``choices`` ask for structured output where the backend
        can enforce it (vLLM guided decoding); other backends ignore them and the
        caller parses strictly anyway.
        """

    @abstractmethod
    def score_choices(self, prompts: list[Messages], labels: list[str]) -> np.ndarray:
        """(B,) chat prompts, C labels -> (B, C) float32 next-token log-probabilities.

        The assistant turn is opened by the chat template and the label is read
        as the first generated token. A label that the backend cannot score
        (e.g. absent from a server's ``top_logprobs``) gets ``-inf``.
        """

    def close(self) -> None:
        """Release resources (servers, engines). Default: nothing."""

    # A small helper so each backend times itself the same way.
    @staticmethod
    def _now() -> float:
        return time.perf_counter()


def check_labels(labels: list[str]) -> None:
    if not labels:
        raise ValueError("score_choices needs at least one label")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be unique, got {labels}")
