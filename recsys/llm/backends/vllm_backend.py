"""vLLM offline engine backend (GPU box). ``vllm`` is imported lazily.

One ``LLM.chat`` call per batch (vLLM schedules the whole batch with
continuous batching), automatic prefix caching on (the prompts of one
request, e.g. several permutations of the same history, share a prefix),
structured output through ``StructuredOutputsParams`` (``choice`` or ``json``
schema; the ``guided_*`` fields were removed in vLLM 0.12), and verbalizer
scores through ``SamplingParams(logprob_token_ids=...)`` (vLLM 0.33): the
engine returns the log-probability of exactly the label tokens (plus the
sampled one), whatever their rank, so no label is lost outside a top-k.

vLLM's logprobs are the raw model distribution by default
(``logprobs_mode="raw_logprobs"``): full-vocabulary log-softmax of the
unprocessed logits. At most ``MAX_LABELS`` (vLLM's ``MAX_LOGPROB_TOKEN_IDS``,
128) labels per call.

LoRA: ``enable_lora=True`` starts the engine with vLLM's LoRA support
(``max_lora_rank`` must be >= the adapter's ``r``); ``with_adapter(dir)``
returns a backend sharing that engine whose requests carry a ``LoRARequest``
for the PEFT adapter folder (what ``scripts/finetune_llm_ranker.py`` writes),
so one engine can serve the zero-shot and fine-tuned rankers side by side.

GGUF is not served by vLLM 0.33's core: give it a Hugging Face folder (e.g.
the safetensors cache that ``transformers_backend.gguf_to_safetensors`` writes)
or a hub id of a 7-8B instruct model.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
from pathlib import Path

import numpy as np

from recsys.llm.backends.base import BackendStats, LLMBackend, Messages, check_labels

log = logging.getLogger(__name__)

MAX_LABELS = 128  # vllm.sampling_params.MAX_LOGPROB_TOKEN_IDS in vLLM 0.33
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm.config.lora.MaxLoRARanks
_lora_ids = itertools.count(1)  # LoRARequest ids must be unique per adapter in a process


def adapter_rank(adapter_dir: str | Path) -> int:
    """LoRA rank ``r`` of a saved PEFT adapter folder (clear errors for anything else)."""
    cfg_path = Path(adapter_dir) / "adapter_config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{cfg_path}: not a saved LoRA adapter (write one with scripts/finetune_llm_ranker.py)")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("peft_type", "LORA") != "LORA" or "r" not in cfg:
        raise ValueError(f"{cfg_path}: vLLM serves LoRA adapters only (peft_type={cfg.get('peft_type')!r})")
    return int(cfg["r"])


class VLLMBackend(LLMBackend):
    """Args:
        model: HF folder or hub id (None = SmolLM2 safetensors cache built from the GGUF).
        gpu_memory_utilization, max_model_len, dtype, tensor_parallel_size, seed: passed to ``vllm.LLM``.
        enable_prefix_caching: vLLM's automatic prefix caching.
        enable_lora, max_lora_rank, max_loras: vLLM's LoRA engine settings (see ``with_adapter``).
    """

    name = "vllm"

    def __init__(self, model: str | None = None, gpu_memory_utilization: float = 0.85, max_model_len: int = 4096,
                 dtype: str = "auto", tensor_parallel_size: int = 1, seed: int = 0, enable_prefix_caching: bool = True,
                 enable_lora: bool = False, max_lora_rank: int = 16, max_loras: int = 1) -> None:
        super().__init__()
        if enable_lora and max_lora_rank not in LORA_RANKS:
            raise ValueError(f"max_lora_rank={max_lora_rank}: vLLM accepts {LORA_RANKS}")
        try:
            from vllm import LLM  # GPU-only dependency: imported here, never at module import
        except ModuleNotFoundError as e:
            if e.name != "vllm":
                raise
            raise ModuleNotFoundError("llm=vllm needs vllm, which is in the GPU set: pip install -r requirements/gpu.txt "
                                      '-e ".[dev]" on a CUDA box (docs/gpu.md); on a CPU machine use llm=smollm2',
                                      name="vllm") from None

        if model is None:
            from recsys.llm.backends.transformers_backend import gguf_to_safetensors, smollm2_gguf_path

            model = str(gguf_to_safetensors(smollm2_gguf_path()))
        self.model_name = model
        self.enable_lora, self.max_lora_rank = bool(enable_lora), int(max_lora_rank)
        lora = dict(enable_lora=True, max_lora_rank=self.max_lora_rank, max_loras=int(max_loras)) if enable_lora else {}
        self.llm = LLM(model=model, enable_prefix_caching=enable_prefix_caching, gpu_memory_utilization=gpu_memory_utilization,
                       max_model_len=max_model_len, dtype=dtype, tensor_parallel_size=tensor_parallel_size, seed=seed, **lora)
        self.tokenizer = self.llm.get_tokenizer()
        self.lora_request = None  # set on the copies ``with_adapter`` returns

    def with_adapter(self, adapter_dir: str | Path) -> "VLLMBackend":
        """A backend on the same engine whose every request applies the LoRA adapter in ``adapter_dir``.

        Refuses clearly when the engine was started without LoRA support or with
        a smaller ``max_lora_rank`` than the adapter's rank (vLLM cannot change
        either after start-up).
        """
        adapter_dir = Path(adapter_dir).resolve()
        r = adapter_rank(adapter_dir)
        if not self.enable_lora:
            raise ValueError(f"llm.adapter={adapter_dir} with vLLM needs an engine started with LoRA: "
                             f"set llm.backend.enable_lora=true (and llm.backend.max_lora_rank >= {r})")
        if r > self.max_lora_rank:
            raise ValueError(f"adapter rank r={r} exceeds llm.backend.max_lora_rank={self.max_lora_rank}; "
                             f"use one of {[x for x in LORA_RANKS if x >= r]}")
        from vllm.lora.request import LoRARequest

        new = copy.copy(self)
        new.stats = BackendStats()
        new.lora_request = LoRARequest(lora_name=adapter_dir.name, lora_int_id=next(_lora_ids), lora_path=str(adapter_dir))
        return new

    def _chat(self, prompts: list[Messages], params):
        t0 = self._now()
        outs = self.llm.chat(prompts, sampling_params=params, use_tqdm=False, lora_request=self.lora_request)
        n_in = sum(len(o.prompt_token_ids or []) for o in outs)
        n_out = sum(len(o.outputs[0].token_ids) for o in outs)
        self.stats.record(len(prompts), n_in, n_out, self._now() - t0)
        return outs

    def generate(self, prompts: list[Messages], max_new_tokens: int = 64, temperature: float = 0.0,
                 json_schema: dict | None = None, choices: list[str] | None = None) -> list[str]:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        if not prompts:
            return []
        structured = None
        if choices:
            structured = StructuredOutputsParams(choice=list(choices))
        elif json_schema is not None:
            structured = StructuredOutputsParams(json=json_schema)
        params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, structured_outputs=structured)
        return [o.outputs[0].text.strip() for o in self._chat(prompts, params)]

    def label_token_ids(self, labels: list[str]) -> list[int]:
        """One token id per label (raises for a label this tokenizer splits, or too many labels)."""
        check_labels(labels)
        if len(labels) > MAX_LABELS:
            raise ValueError(f"{len(labels)} labels: vLLM scores at most {MAX_LABELS} token ids per request")
        ids = []
        for lab in labels:
            toks = self.tokenizer.encode(lab, add_special_tokens=False)
            if len(toks) != 1:
                raise ValueError(f"label {lab!r} is {len(toks)} tokens for this tokenizer; verbalizer labels must be one token")
            ids.append(toks[0])
        return ids

    def score_choices(self, prompts: list[Messages], labels: list[str]) -> np.ndarray:
        from vllm import SamplingParams

        ids = self.label_token_ids(labels)
        if not prompts:
            return np.zeros((0, len(labels)), dtype=np.float32)
        params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=ids)
        return label_scores([o.outputs[0].logprobs for o in self._chat(prompts, params)], ids)


def label_scores(first_step_logprobs: list, ids: list[int]) -> np.ndarray:
    """(B, C) float32 from each output's ``logprobs`` ([{token_id: Logprob}, ...] per generated token).

    With ``logprob_token_ids`` every label is present; a missing one is an engine
    fault, reported as such rather than scored -inf.
    """
    out = np.empty((len(first_step_logprobs), len(ids)), dtype=np.float32)
    for b, steps in enumerate(first_step_logprobs):
        first = (steps or [{}])[0]
        missing = [t for t in ids if t not in first]
        if missing:
            raise RuntimeError(f"vLLM returned no logprob for label token ids {missing} (prompt {b})")
        out[b] = [first[t].logprob for t in ids]
    return out
