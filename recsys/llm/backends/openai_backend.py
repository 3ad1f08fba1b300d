"""HTTP backend for any OpenAI-compatible server (``vllm serve``, llama.cpp's server, ...).

A batch becomes concurrent ``/v1/chat/completions`` requests (a thread pool
over one ``httpx.Client``), so the server can batch them itself (vLLM's
continuous batching). Each request has a timeout and is retried with
exponential backoff on connection errors, timeouts, 429 and 5xx; a request
that still fails yields "" (generate) or a row of -inf (score_choices), which
the re-ranker counts as a parse failure and falls back on, instead of failing
the whole batch.

Verbalizer scoring asks for one token with ``logprobs: true`` and
``top_logprobs`` (OpenAI caps it at 20; vLLM and llama.cpp accept more): a
label absent from the returned top tokens gets -inf.

The API key is read from the environment variable named by ``api_key_env``
(``OPENAI_API_KEY`` by default), never from the config: Hydra writes every
config value and command-line override into the run's ``.hydra/*.yaml``, so a
key passed as a config value would be saved on disk with each run.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from recsys.llm.backends.base import LLMBackend, Messages, check_labels

_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIBackend(LLMBackend):
    """Args:
        base_url: server root, e.g. ``http://127.0.0.1:8001/v1`` (8000 is the recommender's own port).
        model: model name the server expects.
        api_key_env: environment variable holding the key, sent as a bearer token; unset or
            empty sends no ``Authorization`` header (local vLLM / llama.cpp servers need none).
        api_key: refused, so that a key never sits in a config (see module docstring).
        concurrency: requests in flight at once.
        timeout_s: per-request timeout; retries: extra attempts; backoff_s: first retry delay.
        top_logprobs: how many next tokens the server reports for scoring.
    """

    name = "openai"

    def __init__(self, base_url: str, model: str = "default", api_key_env: str = "OPENAI_API_KEY", concurrency: int = 8,
                 timeout_s: float = 60.0, retries: int = 3, backoff_s: float = 0.5, top_logprobs: int = 20,
                 extra_body: dict | None = None, api_key: None = None) -> None:
        super().__init__()
        import httpx

        if api_key is not None:
            raise ValueError(f"OpenAIBackend does not take api_key from its arguments (configs are saved in .hydra/): "
                             f"export {api_key_env}=... instead")
        key = os.environ.get(api_key_env, "")

        self.base_url = base_url.rstrip("/")
        self.model, self.concurrency = model, int(concurrency)
        self.retries, self.backoff_s, self.top_logprobs = int(retries), float(backoff_s), int(top_logprobs)
        self.extra_body = dict(extra_body or {})
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout_s), headers={"Authorization": f"Bearer {key}"} if key else {},
            limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency),
        )

    def close(self) -> None:
        self.client.close()

    # -- one request with retries ------------------------------------------------
    def _post(self, body: dict) -> dict | None:
        import httpx

        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                r = self.client.post(f"{self.base_url}/chat/completions", json={**self.extra_body, **body})
                if r.status_code in _RETRY_STATUS:
                    raise httpx.HTTPStatusError(f"status {r.status_code}", request=r.request, response=r)
                r.raise_for_status()
                return r.json()
            except (httpx.TransportError, httpx.HTTPStatusError) as e:
                retryable = not isinstance(e, httpx.HTTPStatusError) or e.response.status_code in _RETRY_STATUS
                if attempt == self.retries or not retryable:
                    self.stats.errors += 1
                    return None
                time.sleep(delay)
                delay *= 2
        return None

    def _map(self, bodies: list[dict]) -> list[dict | None]:
        if not bodies:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(bodies))) as pool:
            return list(pool.map(self._post, bodies))

    @staticmethod
    def _usage(resps) -> tuple[int, int]:
        p = sum(int((r or {}).get("usage", {}).get("prompt_tokens", 0) or 0) for r in resps)
        c = sum(int((r or {}).get("usage", {}).get("completion_tokens", 0) or 0) for r in resps)
        return p, c

    # -- interface -----------------------------------------------------------------
    def generate(self, prompts: list[Messages], max_new_tokens: int = 64, temperature: float = 0.0,
                 json_schema: dict | None = None, choices: list[str] | None = None) -> list[str]:
        t0 = self._now()
        bodies = []
        for p in prompts:
            body = {"model": self.model, "messages": p, "max_tokens": max_new_tokens, "temperature": temperature}
            if json_schema is not None:  # honoured by vLLM and llama.cpp; others may ignore it
                body["response_format"] = {"type": "json_schema", "json_schema": {"name": "answer", "schema": json_schema}}
            bodies.append(body)
        resps = self._map(bodies)
        texts = []
        for r in resps:
            try:
                texts.append(str(r["choices"][0]["message"]["content"] or "").strip())
            except (TypeError, KeyError, IndexError):
                texts.append("")
        self.stats.record(len(prompts), *self._usage(resps), self._now() - t0)
        return texts

    def score_choices(self, prompts: list[Messages], labels: list[str]) -> np.ndarray:
        check_labels(labels)
        t0 = self._now()
        bodies = [{"model": self.model, "messages": p, "max_tokens": 1, "temperature": 0.0,
                   "logprobs": True, "top_logprobs": self.top_logprobs} for p in prompts]
        resps = self._map(bodies)
        out = np.full((len(prompts), len(labels)), -np.inf, dtype=np.float32)
        pos = {lab: i for i, lab in enumerate(labels)}
        for b, r in enumerate(resps):
            for tok, lp in _top_logprobs(r):
                i = pos.get(tok.strip())
                if i is not None and lp > out[b, i]:  # "A" and " A" both name label A: keep the larger
                    out[b, i] = lp
        self.stats.record(len(prompts), *self._usage(resps), self._now() - t0)
        return out


def _top_logprobs(resp: dict | None) -> list[tuple[str, float]]:
    """(token, logprob) pairs of the first generated token, [] when the response has none."""
    try:
        first = resp["choices"][0]["logprobs"]["content"][0]
    except (TypeError, KeyError, IndexError):
        return []
    pairs = [(first.get("token", ""), first.get("logprob", -np.inf))]
    pairs += [(t.get("token", ""), t.get("logprob", -np.inf)) for t in first.get("top_logprobs", []) or []]
    return [(str(t), float(lp)) for t, lp in pairs if lp is not None]
