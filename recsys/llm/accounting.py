"""Accounting for the LLM stages: tokens, latency, parse failures, invalid ids, ungrounded text.

Stages call ``record_batch`` once per backend batch; ``summary()`` gives
per-request rates (the LLM-stage metrics of DESIGN.md section 4) and
``log_wandb`` writes them plus a sample table of prompts and outputs to a W&B
run (offline by default: ``WANDB_MODE=offline``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class BatchRecord:
    stage: str
    n_requests: int
    prompt_tokens: int = 0
    generated_tokens: int = 0
    latency_ms: float = 0.0
    parse_failures: int = 0
    invalid_ids: int = 0
    ungrounded: int = 0


@dataclass
class LLMAccounting:
    """Collects ``BatchRecord``s and up to ``max_samples`` (prompt, output) pairs per stage."""

    max_samples: int = 20
    records: list[BatchRecord] = field(default_factory=list)
    samples: list[tuple[str, str, str]] = field(default_factory=list)  # (stage, prompt, output)

    def record_batch(self, stage: str, n_requests: int, prompt_tokens: int = 0, generated_tokens: int = 0,
                     latency_ms: float = 0.0, parse_failures: int = 0, invalid_ids: int = 0,
                     ungrounded: int = 0, samples=()) -> BatchRecord:
        rec = BatchRecord(stage, int(n_requests), int(prompt_tokens), int(generated_tokens), float(latency_ms),
                          int(parse_failures), int(invalid_ids), int(ungrounded))
        self.records.append(rec)
        for prompt, output in samples:
            if sum(1 for s in self.samples if s[0] == stage) >= self.max_samples:
                break
            text = prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False)
            self.samples.append((stage, text, str(output)))
        return rec

    def summary(self) -> dict:
        """``llm/<stage>/<counter>`` totals and per-request means."""
        agg: dict[str, dict] = defaultdict(lambda: defaultdict(float))
        for r in self.records:
            a = agg[r.stage]
            a["batches"] += 1
            for name in ("n_requests", "prompt_tokens", "generated_tokens", "latency_ms",
                         "parse_failures", "invalid_ids", "ungrounded"):
                a[name] += getattr(r, name)
        out: dict[str, float] = {}
        for stage, a in agg.items():
            n = max(1.0, a["n_requests"])
            p = f"llm/{stage}/"
            out[p + "requests"] = a["n_requests"]
            out[p + "batches"] = a["batches"]
            for name in ("prompt_tokens", "generated_tokens", "parse_failures", "invalid_ids", "ungrounded"):
                out[p + name] = a[name]
            out[p + "prompt_tokens_per_request"] = a["prompt_tokens"] / n
            out[p + "generated_tokens_per_request"] = a["generated_tokens"] / n
            out[p + "latency_ms_per_request"] = a["latency_ms"] / n
            out[p + "latency_ms_per_batch"] = a["latency_ms"] / max(1.0, a["batches"])
            out[p + "requests_per_s"] = 1000.0 * a["n_requests"] / a["latency_ms"] if a["latency_ms"] > 0 else 0.0
            out[p + "parse_failure_rate"] = a["parse_failures"] / n
        return out

    def log_wandb(self, run=None, step: int | None = None) -> None:
        """Log ``summary()`` and a ``llm/samples`` table to ``run`` (default: the active wandb run)."""
        import wandb

        run = run or wandb.run
        if run is None:
            raise RuntimeError("no active W&B run: call wandb.init(mode='offline', ...) first")
        table = wandb.Table(columns=["stage", "prompt", "output"], data=[list(s) for s in self.samples])
        run.log({**self.summary(), "llm/samples": table}, step=step)
