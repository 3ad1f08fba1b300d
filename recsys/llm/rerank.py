"""LLM re-ranking of a small candidate list (top ~20), batched across users.

Two modes:

* ``verbalizer`` (LlamaRec, Yue et al. 2023, arXiv:2311.02089): candidates are
  labelled A, B, C...; one forward pass reads the next-token log-probabilities
  of the letters, so 20 candidates cost one prefill and no decoding. The
  letter log-probabilities, renormalised over the C letters, are the LLM score.
* ``listwise``: the model writes an order, parsed strictly
  (``recsys.llm.parsing``); position p of K gets score (K - p) / K. A parse
  failure keeps the previous order for that user and is counted.

Position bias: LLMs favour early positions (LLMRank, Hou et al. 2024,
arXiv:2305.08845). With ``n_permutations > 1`` each list is also scored in
seeded random orders and the per-item scores are averaged.

Blending: ``final = blend * z(llm) + (1 - blend) * z(previous)``, both
standardised within the list because their scales differ (log-probabilities
vs retrieval scores). ``blend=1`` is the LLM alone, ``blend=0`` the input order.

Only the first ``top_n`` candidates are re-ranked; the rest follow in their
previous order. The output always holds exactly the input ids.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from recsys.llm.backends.base import LLMBackend
from recsys.llm.parsing import apply_order, parse_ranking
from recsys.llm.prompts import LABELS, check_items_table, listwise_prompt, verbalizer_prompt
from recsys.core.candidates import Candidates, UserContext


def _z(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    if not finite.any():
        return np.zeros_like(x)
    x = np.where(finite, x, x[finite].min() - 1.0)  # an unscorable label ranks last
    sd = x.std()
    return (x - x.mean()) / sd if sd > 1e-12 else np.zeros_like(x)


def blend_scores(llm: np.ndarray, prev: np.ndarray, blend: float) -> np.ndarray:
    """(K,) ``blend * z(llm) + (1 - blend) * z(prev)``: the one blend rule (the stage and offline evaluation)."""
    return blend * _z(llm) + (1.0 - blend) * _z(prev)


def previous_scores(scores: np.ndarray) -> np.ndarray:
    """(K,) the previous stage's scores if they follow the list order, else the list's rank (K, ..., 1).

    Why: a stage may reorder without rescoring (exploration moves rows, keeping their scores);
    the list order is the previous stage's answer, so blend = 0 must give that order back.
    """
    s = np.asarray(scores, np.float64)
    return s if np.all(np.diff(s) <= 0) else np.arange(len(s), 0, -1, dtype=np.float64)


def blend_order(llm: np.ndarray, prev: np.ndarray, blend: float) -> np.ndarray:
    """(K,) positions best first under :func:`blend_scores` over :func:`previous_scores`; ties keep the list order."""
    return np.argsort(-blend_scores(llm, previous_scores(prev), blend), kind="stable")


class LLMReranker:
    """Pipeline stage: re-rank the top ``top_n`` candidates with an LLM.

    Args:
        backend: an ``LLMBackend`` (transformers / vllm / openai).
        items_table: canonical items table (``title, year, categories``), row i = item_idx i.
        top_n: how many of the input candidates the LLM sees (at most 26 letters).
        blend: weight of the LLM score against the previous stage's score.
        mode: ``verbalizer`` or ``listwise``.
        n_permutations: orders each list is scored in (1 = input order only).
        max_history: most recent history items written into the prompt.
        max_new_tokens: listwise answer budget.
        seed: seeds the permutations, so re-ranking is repeatable.
        accounting: optional ``LLMAccounting`` that receives one record per batch.
    """

    def __init__(self, backend: LLMBackend, items_table: pd.DataFrame, top_n: int = 20, blend: float = 0.5,
                 mode: str = "verbalizer", n_permutations: int = 1, max_history: int = 10,
                 max_new_tokens: int = 80, seed: int = 0, accounting=None) -> None:
        if mode not in ("verbalizer", "listwise"):
            raise ValueError(f"mode must be 'verbalizer' or 'listwise', got {mode!r}")
        if not 1 <= top_n <= len(LABELS):
            raise ValueError(f"top_n must be in [1, {len(LABELS)}] (one letter per candidate), got {top_n}")
        if not 0.0 <= blend <= 1.0:
            raise ValueError(f"blend must be in [0, 1], got {blend}")
        if n_permutations < 1:
            raise ValueError("n_permutations must be >= 1")
        self.backend = backend
        self.items = check_items_table(items_table)
        self.top_n, self.blend, self.mode = int(top_n), float(blend), mode
        self.n_permutations, self.max_history = int(n_permutations), int(max_history)
        self.max_new_tokens, self.seed = int(max_new_tokens), int(seed)
        self.accounting = accounting

    # -- permutations ---------------------------------------------------------
    def _perms(self, k: int, b: int) -> list[np.ndarray]:
        """Identity first, then seeded shuffles (seed depends on the row, not on the batch)."""
        perms = [np.arange(k)]
        rng = np.random.default_rng([self.seed, b])
        for _ in range(self.n_permutations - 1):
            perms.append(rng.permutation(k))
        return perms

    # -- main path ------------------------------------------------------------
    def __call__(self, ctx: UserContext, cands: Candidates) -> Candidates:
        return self.rerank_batch([ctx], [cands])[0]

    def rerank_batch(self, ctxs: list[UserContext], cands_list: list[Candidates]) -> list[Candidates]:
        """Re-rank B candidate lists with ONE backend call (B * n_permutations prompts)."""
        if len(ctxs) != len(cands_list):
            raise ValueError(f"{len(ctxs)} contexts for {len(cands_list)} candidate lists")
        t0 = time.perf_counter()
        prompts, owners = [], []  # owners[j] = (b, perm) of prompt j
        for b, (ctx, c) in enumerate(zip(ctxs, cands_list)):
            k = min(self.top_n, len(c))
            if k < 2:
                continue  # nothing to re-order
            hist = np.concatenate([np.asarray(ctx.history, np.int64), np.asarray(ctx.session, np.int64)])
            build = verbalizer_prompt if self.mode == "verbalizer" else listwise_prompt
            for perm in self._perms(k, b):
                prompts.append(build(self.items, hist, c.items[:k][perm], self.max_history))
                owners.append((b, perm))
        before = self.backend.stats.snapshot()
        if self.mode == "verbalizer":
            raw = self._score_verbalizer(prompts, owners)
        else:
            raw = self._score_listwise(prompts, owners)
        after = self.backend.stats.snapshot()
        latency_ms = 1000.0 * (time.perf_counter() - t0)
        out = []
        for b, c in enumerate(cands_list):
            llm, fails, invalid, dups = raw.get(b, (None, 0, 0, 0))
            out.append(self._finish(c, llm, fails, invalid, dups, latency_ms / max(1, len(cands_list))))
        if self.accounting is not None:
            self.accounting.record_batch(
                "rerank", n_requests=len(cands_list),
                prompt_tokens=after["prompt_tokens"] - before["prompt_tokens"],
                generated_tokens=after["generated_tokens"] - before["generated_tokens"],
                latency_ms=latency_ms,
                parse_failures=sum(v[1] for v in raw.values()),
                invalid_ids=sum(v[2] + v[3] for v in raw.values()),
                samples=[(p, o) for p, o in zip(prompts[:2], self._last_outputs[:2])],
            )
        return out

    def _score_verbalizer(self, prompts, owners) -> dict:
        self._last_outputs = []
        if not prompts:
            return {}
        labels = LABELS[: self.top_n]
        # one call for the whole batch; lists shorter than top_n use a prefix of the labels
        logp = self.backend.score_choices(prompts, labels)  # (B*P, C)
        acc: dict[int, tuple] = {}
        for j, (b, perm) in enumerate(owners):
            k = len(perm)
            lp = logp[j, :k].astype(np.float64)
            fin = np.isfinite(lp)
            if not fin.any():  # e.g. a server returned none of the letters
                s, fail = np.zeros(k), 1
            else:
                m = lp[fin].max()  # renormalise over the k letters (log-softmax restricted to them)
                lse = m + np.log(np.exp(lp[fin] - m).sum())
                s, fail = np.where(fin, lp - lse, -30.0), 0
            self._last_outputs.append(" ".join(f"{LABELS[i]}:{lp[i]:.2f}" for i in range(k)))
            scores = np.zeros(k)
            scores[perm] = s  # letter at position p names candidate perm[p]
            tot, nf, n, _ = acc.get(b, (np.zeros(k), 0, 0, 0))
            acc[b] = (tot + scores, nf + fail, n + 1 - fail, 0)
        res = {}
        for b, (tot, nf, n, _) in acc.items():
            res[b] = (None if n == 0 else tot / n, nf, 0, 0)
        return res

    def _score_listwise(self, prompts, owners) -> dict:
        self._last_outputs = []
        if not prompts:
            return {}
        texts = self.backend.generate(prompts, max_new_tokens=self.max_new_tokens,
                                      json_schema=None, choices=None)
        self._last_outputs = list(texts)
        acc: dict[int, list] = {}
        for text, (b, perm) in zip(texts, owners):
            k = len(perm)
            parsed = parse_ranking(text, LABELS[:k])
            a = acc.setdefault(b, [np.zeros(k), 0, 0, 0, 0])
            a[2] += parsed.invalid_ids
            a[3] += parsed.duplicates
            if not parsed.ok:
                a[1] += 1
                continue
            order = apply_order(parsed, k)  # positions in the prompt, best first
            scores = np.zeros(k)
            scores[perm[order]] = (k - np.arange(k)) / k
            a[0] += scores
            a[4] += 1
        return {b: (None if a[4] == 0 else a[0] / a[4], a[1], a[2], a[3]) for b, a in acc.items()}

    def _finish(self, c: Candidates, llm, fails: int, invalid: int, dups: int, latency_ms: float) -> Candidates:
        k = min(self.top_n, len(c))
        trace = dict(c.trace)
        info = {"mode": self.mode, "n": k, "parse_failures": fails, "invalid_ids": invalid,
                "duplicates": dups, "fallback": llm is None and k >= 2, "latency_ms": latency_ms}
        trace["llm_rerank"] = info
        if info["fallback"]:
            trace["fallbacks"] = [*trace.get("fallbacks", []), f"llm_rerank: no usable LLM output ({fails} parse failures), order kept"]
        if llm is None:  # parse failure everywhere, or nothing to re-order: keep the order
            return Candidates(c.items, c.scores, c.sources, dict(c.features), c.explanations, trace)
        prev = previous_scores(c.scores[:k])
        final = blend_scores(llm, prev, self.blend)
        order = np.argsort(-final, kind="stable")  # ties keep the previous order
        idx = np.concatenate([order, np.arange(k, len(c))])
        new_scores = np.empty(len(c), dtype=np.float32)
        new_scores[:k] = final[order]
        if len(c) > k:  # the tail stays below the head, in its previous order
            new_scores[k:] = final.min() - 1.0 - np.arange(len(c) - k)
        feats = {n: v[idx] for n, v in c.features.items()}
        llm_full = np.full(len(c), np.nan, dtype=np.float32)
        llm_full[:k] = llm[order]
        feats["llm_score"] = llm_full
        feats["prev_score"] = c.scores[idx].astype(np.float32)
        ex = None if c.explanations is None else [c.explanations[i] for i in idx]
        return Candidates(c.items[idx], new_scores, c.sources[idx], feats, ex, trace)
