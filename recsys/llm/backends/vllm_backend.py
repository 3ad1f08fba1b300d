"""vLLM offline engine backend (GPU box). ``vllm`` is imported lazily.

One ``LLM.chat`` call per batch (vLLM schedules the whole batch with
continuous batching), automatic prefix caching on (the prompts of one
request, e.g. several permutations of the same history, share a prefix),
structured output through ``StructuredOutputsParams`` (``choice`` or ``json``
schema; the ``guided_*`` fields were removed in vLLM 0.12), and next-token
log-probabilities (``SamplingParams(logprobs=n)``) for verbalizer scoring.

vLLM's logprobs are the raw model distribution by default
(``logprobs_mode="raw_logprobs"``), so constraining the sampled token does
not distort the scores; labels outside the top ``num_logprobs`` get -inf.
GGUF is not served by vLLM 0.33's core: give it a Hugging Face folder (e.g.
the safetensors cache that ``transformers_backend.gguf_to_safetensors`` writes)
or a hub id of a 7-8B instruct model.
"""

from __future__ import annotations

import numpy as np

from recsys.llm.backends.base import LLMBackend, Messages, check_labels


class VLLMBackend(LLMBackend):
    """Args:
        model: HF folder or hub id (None = SmolLM2 safetensors cache built from the GGUF).
        num_logprobs: next tokens reported per prompt when scoring (also the engine's ``max_logprobs``).
        gpu_memory_utilization, max_model_len, dtype, tensor_parallel_size, seed: passed to ``vllm.LLM``.
    """

    name = "vllm"

    def __init__(self, model: str | None = None, num_logprobs: int = 64, gpu_memory_utilization: float = 0.85,
                 max_model_len: int = 4096, dtype: str = "auto", tensor_parallel_size: int = 1, seed: int = 0,
                 enable_prefix_caching: bool = True) -> None:
        super().__init__()
        from vllm import LLM  # GPU-only dependency: imported here, never at module import

        if model is None:
            from recsys.llm.backends.transformers_backend import gguf_to_safetensors, smollm2_gguf_path

            model = str(gguf_to_safetensors(smollm2_gguf_path()))
        self.num_logprobs = int(num_logprobs)
        self.llm = LLM(model=model, enable_prefix_caching=enable_prefix_caching, gpu_memory_utilization=gpu_memory_utilization,
                       max_model_len=max_model_len, dtype=dtype, tensor_parallel_size=tensor_parallel_size, seed=seed,
                       max_logprobs=self.num_logprobs)
        self.tokenizer = self.llm.get_tokenizer()

    def _chat(self, prompts: list[Messages], params):
        t0 = self._now()
        outs = self.llm.chat(prompts, sampling_params=params, use_tqdm=False)
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

    def score_choices(self, prompts: list[Messages], labels: list[str]) -> np.ndarray:
        from vllm import SamplingParams

        check_labels(labels)
        if not prompts:
            return np.zeros((0, len(labels)), dtype=np.float32)
        ids = []
        for lab in labels:
            toks = self.tokenizer.encode(lab, add_special_tokens=False)
            if len(toks) != 1:
                raise ValueError(f"label {lab!r} is {len(toks)} tokens for this tokenizer; verbalizer labels must be one token")
            ids.append(toks[0])
        params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=self.num_logprobs)
        out = np.full((len(prompts), len(labels)), -np.inf, dtype=np.float32)
        for b, o in enumerate(self._chat(prompts, params)):
            first = (o.outputs[0].logprobs or [{}])[0]  # {token_id: Logprob}
            for c, tid in enumerate(ids):
                if tid in first:
                    out[b, c] = float(first[tid].logprob)
        return out
