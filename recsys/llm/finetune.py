"""LoRA fine-tuning of the verbalizer LLM ranker, as in LlamaRec.

LlamaRec (Yue et al. 2023, arXiv:2311.02089) fine-tunes the LLM with LoRA
(Hu et al. 2021, arXiv:2106.09685) on prompts that list the retriever's
candidates under letters; the loss is the cross-entropy of the ground
truth's letter at the answer position, restricted to the candidate letters
(the "verbalizer"). We reuse the zero-shot re-ranker's exact prompt
(``recsys.llm.prompts.verbalizer_prompt``) and the backend's exact encoding
(chat template, left padding, left truncation), so a fine-tuned model plugs
into the same ``LLMReranker`` unchanged.

Training examples come from the TRAIN split only (leakage rule): for each
training user and each of its last ``cutoffs_per_user`` train items, history =
the train items before it, target = that item, candidates = the retriever's
top-(C-1) on that history (history and target masked) + the target, shuffled
with a seeded RNG. The retriever is fitted on the train rows before each
user's first cut-off, so, as at test time, it has never seen a pair it is
asked about.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.history import History
from recsys.data.schema import Split
from recsys.data.splits import chronological
from recsys.llm.prompts import LABELS, verbalizer_prompt


@dataclass(frozen=True)
class RankExample:
    """One training prompt: ``candidates[target_pos]`` is the ground truth (letter ``LABELS[target_pos]``).

    ``cutoff``: the target's position in the user's train sequence (history = the items before it).
    """

    user_idx: int
    history: np.ndarray  # (L,) item_idx, oldest first
    candidates: np.ndarray  # (C,) item_idx in prompt order
    target_pos: int
    cutoff: int = -1

    @property
    def target(self) -> int:
        return int(self.candidates[self.target_pos])


def split_tail(train: pd.DataFrame, n_tail: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(prefix rows, the last ``n_tail`` rows per user) of a train table, ordered by time (ties by row order)."""
    if n_tail < 1:
        raise ValueError(f"n_tail must be >= 1, got {n_tail}")
    df = chronological(train)
    tail = df.groupby("user_idx", sort=False).tail(int(n_tail))
    return df.drop(index=tail.index), tail


def split_last(train: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(history rows, last row per user) of a train table: :func:`split_tail` with one row."""
    return split_tail(train, 1)


def build_examples(dataset, train: pd.DataFrame, n_candidates: int = 20, max_users: int | None = None,
                   seed: int = 0, retriever_factory=None, cutoffs_per_user: int = 1,
                   max_examples: int | None = None) -> list[RankExample]:
    """LlamaRec training examples from the train interactions alone, at several cut-offs per user.

    A user's last ``cutoffs_per_user`` train items are the targets: cut-off j has history = every
    train item before it, target = that item (a cut-off needs at least one history item). The
    retriever is fitted on the train rows BEFORE each user's first cut-off, so, as at test time,
    it has never seen any pair it is asked about (later cut-offs show it earlier targets as history,
    which a served retriever also reads without having been trained on them).

    Args:
        dataset: the ``Dataset`` (its ``meta`` sizes the retriever; no interactions are read from it).
        train: train interactions (``user_idx, item_idx, timestamp``); valid/test are never passed in.
        n_candidates: C, candidates per prompt (ground truth + C-1 retrieved negatives), <= 26 letters.
        max_users: seeded sample of eligible users (None = all users with >= 2 train items).
        seed: seeds the user sample, the example sample and each example's shuffle.
        retriever_factory: ``meta -> model`` with ``fit(dataset, split)`` / ``score(History) -> (B, N)``;
            default ItemKNN(k=100, shrink=10), the retriever of the LlamaRec evaluation.
        cutoffs_per_user: targets per user, counted back from the last train item (1 = LlamaRec's one).
        max_examples: seeded sample of the examples (None = all), to fit a CPU budget.
    Returns:
        ``RankExample``s sorted by (user_idx, cutoff).
    """
    import torch

    if not 2 <= n_candidates <= len(LABELS):
        raise ValueError(f"n_candidates must be in [2, {len(LABELS)}] (one letter each), got {n_candidates}")
    prefix_df, tail_df = split_tail(train, cutoffs_per_user)
    seqs = {int(u): g["item_idx"].to_numpy(np.int64)
            for u, g in chronological(train).groupby("user_idx")}
    n_prefix = prefix_df.groupby("user_idx").size()
    users = np.sort(np.array([u for u, s in seqs.items() if len(s) >= 2], dtype=np.int64))
    if len(users) == 0:
        raise ValueError("no user has 2 or more train interactions: nothing to fine-tune on")
    rng = np.random.default_rng(seed)
    if max_users is not None and 0 < max_users < len(users):
        users = np.sort(rng.choice(users, size=max_users, replace=False))
    pairs = []  # (user, cut-off position in the user's train sequence)
    for u in users:
        first = max(1, int(n_prefix.get(u, 0)))  # at least one history item
        pairs += [(int(u), t) for t in range(first, len(seqs[int(u)]))]
    if max_examples is not None and 0 < max_examples < len(pairs):
        pairs = [pairs[i] for i in np.sort(rng.choice(len(pairs), size=max_examples, replace=False))]
    if retriever_factory is None:
        from recsys.models.itemknn import ItemKNN

        retriever_factory = ItemKNN
    empty = train.iloc[:0]
    retriever = retriever_factory(dataset.meta).fit(dataset, Split(name="finetune", train=prefix_df, valid=empty, test=empty))
    out = []
    for s in range(0, len(pairs), 512):  # (512, N) score blocks bound memory
        block = pairs[s : s + 512]
        hist = History.from_lists([u for u, _ in block], [seqs[u][:t] for u, t in block])
        with torch.no_grad():
            scores = retriever.score(hist).float()  # (B, N)
        if n_candidates > scores.shape[1]:
            raise ValueError(f"{n_candidates} candidates requested from a catalogue of {scores.shape[1]} items")
        for b, (u, t) in enumerate(block):
            target = int(seqs[u][t])
            sc = scores[b].clone()
            sc[hist.of(b)] = -float("inf")  # consumed items are not candidates
            sc[target] = -float("inf")  # the target enters once, below
            neg = torch.topk(sc, n_candidates - 1).indices.numpy()
            cands = np.concatenate([[target], neg]).astype(np.int64)
            back = len(seqs[u]) - 1 - t  # 0 = the last train item: the single-cut-off seed of earlier runs
            key = [seed, u] if back == 0 else [seed, u, back]
            perm = np.random.default_rng(key).permutation(n_candidates)  # per example, order-independent
            out.append(RankExample(u, hist.of(b).numpy(), cands[perm], int(np.flatnonzero(perm == 0)[0]), t))
    return out


def verbalizer_logits(backend, model, prompts, n_labels: int):
    """(B, C) logits of the first C letters at the answer position, encoded exactly as the backend does."""
    import torch

    ids = torch.tensor(backend.label_token_ids(LABELS[:n_labels]))
    enc = backend._encode(prompts)  # same chat template, padding side and truncation as zero-shot scoring
    logits = model(**enc, logits_to_keep=1).logits[:, -1, :].float()  # (B, V)
    return logits[:, ids.to(logits.device)]


def verbalizer_loss(backend, model, examples: list[RankExample], items: pd.DataFrame, max_history: int):
    """Mean cross-entropy of the target letter among the candidate letters (scalar tensor)."""
    import torch
    import torch.nn.functional as F

    n = len(examples[0].candidates)
    if any(len(e.candidates) != n for e in examples):
        raise ValueError("examples in one batch must have the same number of candidates")
    prompts = [verbalizer_prompt(items, e.history, e.candidates, max_history) for e in examples]
    logits = verbalizer_logits(backend, model, prompts, n)  # (B, C)
    tgt = torch.tensor([e.target_pos for e in examples], device=logits.device)
    return F.cross_entropy(logits, tgt)


def add_lora(model, r: int = 8, alpha: int = 16, dropout: float = 0.05,
             target_modules=("q_proj", "k_proj", "v_proj", "o_proj"), last_n_layers: int | None = None):
    """A PEFT LoRA copy of ``model`` (the original, shared by the zero-shot backend, is left untouched).

    ``last_n_layers``: adapt only the top n decoder layers (None = all, as in LlamaRec). Why: autograd
    then stops at the lowest adapted layer, so backward covers n layers instead of all of them
    (about 2x faster per example on CPU with n = 8 of SmolLM2's 30).
    """
    from peft import LoraConfig, get_peft_model

    layers = None
    if last_n_layers is not None:
        n_layers = int(model.config.num_hidden_layers)
        if not 1 <= last_n_layers <= n_layers:
            raise ValueError(f"last_n_layers must be in [1, {n_layers}], got {last_n_layers}")
        layers = list(range(n_layers - int(last_n_layers), n_layers))
    cfg = LoraConfig(r=int(r), lora_alpha=int(alpha), lora_dropout=float(dropout),
                     target_modules=list(target_modules), layers_to_transform=layers,
                     bias="none", task_type="CAUSAL_LM")
    return get_peft_model(copy.deepcopy(model), cfg)


def backend_with_model(backend, model):
    """A shallow copy of a transformers backend that runs ``model`` (fresh stats, same tokenizer)."""
    from recsys.llm.backends.base import BackendStats

    new = copy.copy(backend)
    new.model = model.eval()
    new.stats = BackendStats()
    new._label_ids = dict(backend._label_ids)
    return new


def load_adapter(backend, adapter_dir: str | Path, merge: bool = True):
    """Backend whose model is ``backend.model`` + the LoRA adapter saved in ``adapter_dir``.

    The base model is deep-copied first: the transformers backend caches one
    model per process, and the zero-shot backend must keep scoring without the
    adapter. ``merge=True`` folds the adapter into the weights (same scores,
    no LoRA overhead at inference).
    """
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise FileNotFoundError(f"{adapter_dir}/adapter_config.json: not a saved LoRA adapter "
                                "(write one with scripts/finetune_llm_ranker.py)")
    model = PeftModel.from_pretrained(copy.deepcopy(backend.model), str(adapter_dir))
    if merge:
        model = model.merge_and_unload()
    return backend_with_model(backend, model)


class LoRAFinetuner:
    """One-epoch LoRA fine-tuning of a transformers backend's model on ``RankExample``s.

    Args:
        backend: a ``TransformersBackend`` (tokenizer, encoding, base model).
        items_table: canonical items table (row i = item_idx i).
        r, alpha, dropout, target_modules: LoRA hyper-parameters (attention projections by default).
        last_n_layers: adapt only the top n decoder layers (None = all; see ``add_lora``).
        lr: AdamW learning rate; linear warm-up over ``warmup_steps`` optimiser steps, then constant.
        batch_size: prompts per forward/backward pass (memory bound).
        grad_accum: passes per optimiser step (effective batch = batch_size * grad_accum).
        max_history: history items in the prompt (must match the re-ranker's at evaluation).
        epochs: passes over the examples (LlamaRec: 1).
        seed: seeds the example order and LoRA initialisation.
    """

    def __init__(self, backend, items_table: pd.DataFrame, r: int = 8, alpha: int = 16, dropout: float = 0.05,
                 target_modules=("q_proj", "k_proj", "v_proj", "o_proj"), last_n_layers: int | None = None,
                 lr: float = 2e-4,
                 weight_decay: float = 0.0, warmup_steps: int = 2, batch_size: int = 2, grad_accum: int = 4,
                 max_history: int = 10, epochs: int = 1, max_grad_norm: float = 1.0, seed: int = 0) -> None:
        import torch

        if batch_size < 1 or grad_accum < 1 or epochs < 1:
            raise ValueError("batch_size, grad_accum and epochs must be >= 1")
        self.backend, self.items = backend, items_table
        self.lora = {"r": int(r), "alpha": int(alpha), "dropout": float(dropout), "target_modules": list(target_modules),
                     "last_n_layers": None if last_n_layers is None else int(last_n_layers)}
        self.lr, self.weight_decay, self.warmup_steps = float(lr), float(weight_decay), int(warmup_steps)
        self.batch_size, self.grad_accum, self.epochs = int(batch_size), int(grad_accum), int(epochs)
        self.max_history, self.max_grad_norm, self.seed = int(max_history), float(max_grad_norm), int(seed)
        torch.manual_seed(self.seed)
        self.model = add_lora(backend.model, **self.lora)
        self.history: list[dict] = []  # one record per optimiser step

    def fit(self, examples: list[RankExample], progress: bool = True) -> "LoRAFinetuner":
        import torch
        from tqdm import tqdm

        if not examples:
            raise ValueError("no training examples")
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, self.warmup_steps)))
        self.model.train()
        rng = np.random.default_rng(self.seed)
        step, t0 = 0, time.perf_counter()
        for _ in range(self.epochs):
            order = rng.permutation(len(examples))
            batches = [[examples[i] for i in order[s : s + self.batch_size]] for s in range(0, len(order), self.batch_size)]
            bar = tqdm(range(0, len(batches), self.grad_accum), desc="lora", disable=not progress)
            for g in bar:
                group = batches[g : g + self.grad_accum]
                n = sum(len(b) for b in group)
                total = 0.0
                for b in group:  # loss weighted by batch size so a short last batch counts per example
                    loss = verbalizer_loss(self.backend, self.model, b, self.items, self.max_history)
                    (loss * len(b) / n).backward()
                    total += float(loss.detach()) * len(b)
                gn = torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                self.history.append({"step": step, "loss": total / n, "grad_norm": float(gn), "examples": n,
                                     "elapsed_s": time.perf_counter() - t0})
                bar.set_postfix(loss=f"{total / n:.3f}")
        self.model.eval()
        return self

    def tuned_backend(self):
        """A backend running the fine-tuned model (adapter not merged), for the ``LLMReranker``."""
        return backend_with_model(self.backend, self.model)

    def save(self, out_dir: str | Path, extra: dict | None = None) -> Path:
        """Write the adapter (``adapter_config.json`` + safetensors) and ``finetune.json`` (settings, loss curve)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(out))
        meta = {"lora": self.lora, "lr": self.lr, "batch_size": self.batch_size, "grad_accum": self.grad_accum,
                "epochs": self.epochs, "max_history": self.max_history, "seed": self.seed,
                "base_model": str(getattr(self.model.peft_config["default"], "base_model_name_or_path", None)),
                "steps": self.history, **(extra or {})}
        (out / "finetune.json").write_text(json.dumps(meta, indent=2))
        return out
