"""OpenAI-compatible HTTP backend against a REAL local server (llama.cpp serving the SmolLM2 GGUF)."""

import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from llm_fakes import tiny_items
from recsys.llm.prompts import LABELS, verbalizer_prompt

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server]==0.3.36 is not installed (sdist, ~11 min build)")
    import httpx

    from recsys.llm.backends.transformers_backend import smollm2_gguf_path

    port = _free_port()
    log = tmp_path_factory.mktemp("llama_server") / "server.log"
    # logits_all: llama.cpp refuses `logprobs` without it. The log goes to a file: a PIPE that
    # nobody reads fills up with llama.cpp's load messages and blocks the server.
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf_path()), "--host", "127.0.0.1",
             "--port", str(port), "--chat_format", "chatml", "--n_threads", "1", "--n_threads_batch", "1",
             "--n_ctx", "2048", "--logits_all", "true"],
            stdout=fh, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300  # ~10 s on an idle machine; generous for a loaded CI box
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server did not answer in 300 s: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_generate_and_score_against_real_server(server):
    from recsys.llm.backends.openai_backend import OpenAIBackend

    be = OpenAIBackend(server, model="smollm2", concurrency=2, timeout_s=300, retries=1, top_logprobs=20)
    try:
        texts = be.generate([[{"role": "user", "content": "Say hello."}]] * 2, max_new_tokens=8)
        assert len(texts) == 2 and all(isinstance(t, str) and t for t in texts)
        items = tiny_items(20)
        prompts = [verbalizer_prompt(items, np.array([1, 2]), np.arange(5, 9)),
                   verbalizer_prompt(items, np.array([3]), np.arange(9, 13))]
        lp = be.score_choices(prompts, LABELS[:4])
        assert lp.shape == (2, 4)
        assert np.isfinite(lp).any(axis=1).all()  # each answer's top tokens name at least one letter
        assert np.all(lp[np.isfinite(lp)] <= 0)
        assert be.stats.prompt_tokens > 100 and be.stats.errors == 0
    finally:
        be.close()


def test_unreachable_server_is_retried_then_counted():
    from recsys.llm.backends.openai_backend import OpenAIBackend

    be = OpenAIBackend(f"http://127.0.0.1:{_free_port()}/v1", timeout_s=1, retries=2, backoff_s=0.01)
    assert be.generate([[{"role": "user", "content": "x"}]]) == [""]
    assert np.all(np.isneginf(be.score_choices([[{"role": "user", "content": "x"}]], ["A", "B"])))
    assert be.stats.errors == 2
