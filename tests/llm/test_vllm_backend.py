"""vLLM backend: label scoring and LoRA adapters.

CPU tests (always): reading the engine's per-label output, the adapter checks and the
clear refusals. GPU tests (skipped without CUDA or vllm) run the real engine on the
SmolLM2 safetensors cache and cross-check its label log-probabilities against the
transformers backend (fp32, CPU) on the same prompts, with and without a LoRA adapter.

Tolerances, stated once: vLLM runs SmolLM2 in bf16 here. A bf16 logit of magnitude ~16
is quantised in steps of 16 * 2**-8 = 0.06, so two computations of the same logits (two
batch slots; a prefix-cache hit vs a fresh prefill) may differ by about twice that: 0.15
on a log-probability. Against transformers in fp32 the bf16 error accumulates over 30
layers: labels keep their order (Spearman >= 0.9) and stay within 0.5.
"""

import json

import numpy as np
import pytest

from llm_fakes import tiny_items
from recsys.llm.backends.vllm_backend import MAX_LABELS, VLLMBackend, adapter_rank, label_scores
from recsys.llm.prompts import LABELS, verbalizer_prompt

torch = pytest.importorskip("torch")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class _Logprob:  # the shape of vllm.logprobs.Logprob
    def __init__(self, logprob):
        self.logprob = logprob


def test_label_scores_reads_exactly_the_label_ids():
    steps = [[{7: _Logprob(-0.5), 9: _Logprob(-2.0), 3: _Logprob(-0.1)}], [{9: _Logprob(-1.0), 7: _Logprob(-3.0)}]]
    out = label_scores(steps, [9, 7])
    np.testing.assert_array_equal(out, np.array([[-2.0, -0.5], [-1.0, -3.0]], np.float32))
    with pytest.raises(RuntimeError, match=r"no logprob for label token ids \[4\]"):
        label_scores(steps, [9, 4])


def _engineless(enable_lora: bool, max_lora_rank: int = 16) -> VLLMBackend:
    """The backend's own adapter checks, without starting an engine (no GPU here)."""
    be = VLLMBackend.__new__(VLLMBackend)
    be.enable_lora, be.max_lora_rank = enable_lora, max_lora_rank
    return be


def _write_adapter_config(d, r=8, peft_type="LORA"):
    d.mkdir(parents=True, exist_ok=True)
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": peft_type, "r": r}))
    return d


def test_adapter_refusals_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a saved LoRA adapter"):
        adapter_rank(tmp_path)
    with pytest.raises(ValueError, match="LoRA adapters only"):
        adapter_rank(_write_adapter_config(tmp_path / "ia3", peft_type="IA3"))
    ad = _write_adapter_config(tmp_path / "a", r=32)
    with pytest.raises(ValueError, match="set llm.backend.enable_lora=true .*max_lora_rank >= 32"):
        _engineless(enable_lora=False).with_adapter(ad)
    with pytest.raises(ValueError, match="r=32 exceeds llm.backend.max_lora_rank=16"):
        _engineless(enable_lora=True, max_lora_rank=16).with_adapter(ad)


def test_bad_engine_settings_fail_before_vllm_is_imported():
    with pytest.raises(ValueError, match="max_lora_rank=12"):
        VLLMBackend(enable_lora=True, max_lora_rank=12)
    assert len(LABELS) <= MAX_LABELS


def test_missing_vllm_names_the_gpu_requirements(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_vllm(name, *args, **kwargs):  # as on a machine without the GPU set (also where vllm is installed)
        if name == "vllm" or name.startswith("vllm."):
            raise ModuleNotFoundError("No module named 'vllm'", name="vllm")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    with pytest.raises(ModuleNotFoundError, match=r"llm=vllm needs vllm.*requirements/gpu.txt.*llm=smollm2"):
        VLLMBackend()


@pytest.fixture(scope="module")
def adapter_dir(smollm2, tmp_path_factory):
    """A real PEFT LoRA adapter on SmolLM2 with non-zero B (so it changes the scores), saved to disk."""
    from recsys.llm.finetune import add_lora

    peft_model = add_lora(smollm2.model, r=8, last_n_layers=4)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    out = tmp_path_factory.mktemp("lora") / "smollm2-lora"
    peft_model.save_pretrained(str(out))
    return out


@pytest.mark.llm
def test_a_real_peft_adapter_is_read(adapter_dir):
    assert adapter_rank(adapter_dir) == 8


def _prompts(n=1):
    items = tiny_items(30)
    return [verbalizer_prompt(items, np.array([1, 2]), np.arange(5, 25))] * n


def _spearman(a, b):
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


@pytest.fixture(scope="module")
def vllm_backend():
    pytest.importorskip("vllm", reason="vllm is in the `gpu` extra")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    be = VLLMBackend(model=None, gpu_memory_utilization=0.3, max_model_len=2048, dtype="bfloat16",
                     enable_lora=True, max_lora_rank=8)  # SmolLM2 safetensors cache
    yield be
    be.close()


@pytest.mark.gpu
@needs_cuda
@pytest.mark.llm
def test_vllm_generate_structured_and_score(vllm_backend, smollm2):
    from recsys.core.candidates import Candidates, UserContext
    from recsys.llm.rerank import LLMReranker

    be = vllm_backend
    out = be.generate([[{"role": "user", "content": "Pick one."}]], max_new_tokens=4, choices=["A", "B", "C"])
    assert out[0] in {"A", "B", "C"}
    lp = be.score_choices(_prompts(2), LABELS[:20])
    assert lp.shape == (2, 20) and np.isfinite(lp).all()  # every label scored, none lost outside a top-k
    assert (lp <= 0).all() and np.logaddexp.reduce(lp, axis=1).max() <= 1e-3  # a subset of one distribution
    assert np.abs(lp[0] - lp[1]).max() < 0.15  # same prompt twice (prefix cache): bf16 noise only
    ref = smollm2.score_choices(_prompts(1), LABELS[:20])[0]
    assert _spearman(lp[0], ref) >= 0.9 and np.abs(lp[0] - ref).max() < 0.5
    c = Candidates(np.arange(5, 25), np.linspace(1, 0, 20), np.array(["x"] * 20))
    res = LLMReranker(be, tiny_items(30), top_n=20, n_permutations=3)(UserContext(history=np.array([1, 2])), c)
    assert sorted(res.items.tolist()) == list(range(5, 25))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.llm
def test_vllm_lora_matches_the_merged_transformers_adapter(vllm_backend, smollm2, adapter_dir):
    from recsys.llm.finetune import load_adapter

    tuned = vllm_backend.with_adapter(adapter_dir)
    base_lp = vllm_backend.score_choices(_prompts(1), LABELS[:20])[0]
    tuned_lp = tuned.score_choices(_prompts(1), LABELS[:20])[0]
    assert np.abs(tuned_lp - base_lp).max() > 0.3, "the adapter must change the scores"
    ref = load_adapter(smollm2, adapter_dir).score_choices(_prompts(1), LABELS[:20])[0]
    assert _spearman(tuned_lp, ref) >= 0.9 and np.abs(tuned_lp - ref).max() < 0.5
    assert vllm_backend.lora_request is None and tuned.lora_request is not None  # the base is untouched

