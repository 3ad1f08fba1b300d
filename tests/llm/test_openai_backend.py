"""OpenAI-compatible HTTP backend against a REAL local server (llama.cpp serving the SmolLM2 GGUF).

The server is started with an API key: the backend must read it from the environment (never from a
config value, which Hydra would save in .hydra/), and a run's saved config must not contain it.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from llm_fakes import tiny_items
from recsys.llm.prompts import LABELS, verbalizer_prompt

KEY = "sk-test-4f1c9a-not-a-real-key"
ROOT = Path(__file__).resolve().parents[2]


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
             "--n_ctx", "2048", "--logits_all", "true", "--api_key", KEY],
            stdout=fh, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300  # ~10 s on an idle machine; generous for a loaded CI box
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2.0, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200:
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


@pytest.mark.slow
def test_generate_and_score_against_real_server(server, monkeypatch):
    from recsys.llm.backends.openai_backend import OpenAIBackend

    monkeypatch.setenv("RECSYS_TEST_LLM_KEY", KEY)
    be = OpenAIBackend(server, model="smollm2", concurrency=2, timeout_s=300, retries=1, top_logprobs=20,
                       api_key_env="RECSYS_TEST_LLM_KEY")
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


@pytest.mark.slow
def test_key_missing_from_the_environment_is_refused_by_the_server(server, monkeypatch):
    from recsys.llm.backends.openai_backend import OpenAIBackend

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    be = OpenAIBackend(server, model="smollm2", timeout_s=60, retries=2, backoff_s=0.01)
    try:
        assert be.generate([[{"role": "user", "content": "x"}]], max_new_tokens=2) == [""]
        assert be.stats.errors == 1  # 401 is not retried
    finally:
        be.close()


def test_api_key_argument_is_refused():
    from recsys.llm.backends.openai_backend import OpenAIBackend

    with pytest.raises(ValueError, match="export OPENAI_API_KEY"):
        OpenAIBackend("http://127.0.0.1:9/v1", api_key=KEY)


def _run_recommend(tmp_path, *overrides):
    """`python -m recsys.recommend llm=openai ...` as a user runs it, with the key in the environment.

    There is no prepared dataset under RECSYS_DATA, so the task stops early, after Hydra has written
    the run's .hydra/*.yaml: which is all this looks at.
    """
    env = dict(os.environ, OPENAI_API_KEY=KEY, PYTHONPATH=str(ROOT), RECSYS_OUTPUTS=str(tmp_path / "out"),
               RECSYS_DATA=str(tmp_path / "no-data"))
    return subprocess.run([sys.executable, "-m", "recsys.recommend", "pipeline=untrained", "llm=openai", "user_id=196", *overrides],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _files_with_key(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]


def test_saved_run_config_holds_no_key_and_a_distinct_port(tmp_path):
    from omegaconf import OmegaConf

    proc = _run_recommend(tmp_path)
    assert proc.returncode != 0 and "meta.json: metadata file not found" in proc.stderr, proc.stderr[-2000:]
    saved = list((tmp_path / "out").rglob(".hydra/config.yaml"))
    assert len(saved) == 1, proc.stderr[-2000:]
    cfg = OmegaConf.load(saved[0])
    assert cfg.llm.backend.api_key_env == "OPENAI_API_KEY" and "api_key" not in cfg.llm.backend
    assert cfg.llm.backend.base_url.startswith("http://127.0.0.1:8001/") and cfg.port == 8000
    assert _files_with_key(tmp_path) == []
    # The old habit, the key as an override, is refused before anything is written.
    proc = _run_recommend(tmp_path / "override", f"llm.backend.api_key={KEY}")
    assert proc.returncode != 0 and "api_key" in proc.stderr
    assert _files_with_key(tmp_path / "override") == []
