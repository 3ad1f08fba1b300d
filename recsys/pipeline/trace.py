"""The request trace: one writer (the pipeline), one record per source, the merge and each stage.

A stage reports what it did through the ``trace`` dict of the candidates it is
handed: the pipeline gives every source and stage a fresh, empty one, and what
the step wrote there is its report, which :class:`TraceRecorder` files under the
step's name. A stage never sees (so cannot overwrite) the request's trace.
Report keys:

    removed    {rule: count} rows a filter dropped
    fallbacks  [message] degraded paths taken ("mmr: no embeddings, ...")
    warnings   [message] what the user should be told (a rule hid items they asked for)
    other      anything else goes to ``details``; a dict value (a stage's own
               section, e.g. the re-ranker's ``{"llm_rerank": {...}}``) is merged one level up

The finished trace (plain JSON types; ``RecommendResponse.trace`` in the API)::

    k           the list length served for (request k, capped by constraints.max_results)
    total_ms    wall time of the whole call
    sources     {name: Step}   in the order they ran
    merge       Step
    stages      {name: Step}   in the declared order
    fallbacks   [message]      every step's, in order
    warnings    [message]      e.g. why a list is shorter than k (which filters removed what)
    latency_ms  {"source/<name>" | "merge" | <stage> | "total": ms}   flat views of the above,
    counts      {"source/<name>" | "merge" | <stage>: rows out}       for tables and scripts
    removed     {rule: count}  summed over the filters

    Step = {latency_ms, n_in, n_out, removed, fallbacks, warnings, details, llm_tokens}
           (``llm_tokens`` = {prompt, generated} for a step that holds an LLM backend, else None)
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np


def plain(x):
    """numpy scalars/arrays and tuples -> JSON types (the API serialises the trace as is)."""
    if isinstance(x, Mapping):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, np.ndarray)):
        return [plain(v) for v in (x.tolist() if isinstance(x, np.ndarray) else x)]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None  # JSON has no NaN/inf
    return x


def llm_stats(step):
    """The token counters of the LLM backend a step holds (``step.backend.stats``), else None."""
    stats = getattr(getattr(step, "backend", None), "stats", None)
    return stats if hasattr(stats, "snapshot") else None


class TraceRecorder:
    """Collects the steps of one pipeline call; :meth:`finish` returns the trace dict."""

    def __init__(self, k: int) -> None:
        self.k = int(k)
        self.t0 = time.perf_counter()
        self.sources: dict[str, dict] = {}
        self.merge: dict | None = None
        self.stages: dict[str, dict] = {}

    def record(self, kind: str, name: str, latency_ms: float, n_in: int | None, n_out: int,
               report: Mapping | None = None, tokens: dict | None = None) -> None:
        """File one step. ``kind`` is ``source``, ``merge`` or ``stage``; ``report`` is what the step wrote."""
        report = dict(report or {})
        removed = {str(r): int(c) for r, c in (report.pop("removed", None) or {}).items()}
        fallbacks = [str(f) for f in (report.pop("fallbacks", None) or [])]
        warnings = [str(w) for w in (report.pop("warnings", None) or [])]
        details: dict = {}
        for key, v in report.items():
            details.update(v if isinstance(v, Mapping) else {key: v})
        details.pop("latency_ms", None)  # the pipeline measures latency itself
        step = {"latency_ms": float(latency_ms), "n_in": n_in, "n_out": int(n_out), "removed": removed,
                "fallbacks": fallbacks, "warnings": warnings, "details": plain(details),
                "llm_tokens": tokens}
        if kind == "source":
            self.sources[name] = step
        elif kind == "merge":
            self.merge = step
        else:
            self.stages[name] = step

    def _steps(self):
        yield from ((f"source/{n}", s) for n, s in self.sources.items())
        if self.merge is not None:
            yield "merge", self.merge
        yield from self.stages.items()

    def short_list_warning(self, n_final: int) -> str | None:
        """Why a list is shorter than k: the first step that left fewer than k rows, and every filter's removals."""
        if n_final >= self.k:
            return None
        removed = {r: c for s in self.stages.values() for r, c in s["removed"].items() if c}
        cause = f"the candidate sources proposed only {n_final} items"
        for name, s in self._steps():
            if name.startswith("source/") or s["n_out"] >= self.k:
                continue
            if name == "merge":
                cause = f"the candidate sources proposed only {s['n_out']} items"
            elif s["removed"] and any(s["removed"].values()):
                cause = f"{s['n_out']} left after the {name} filter"
            else:
                cause = f"stage {name} kept {s['n_out']}"
            break
        by_filters = ", ".join(f"{r} {c}" for r, c in removed.items())
        return f"only {n_final} of {self.k} items: {cause}" + (f"; removed by filters: {by_filters}" if by_filters else "")

    def finish(self, n_final: int) -> dict:
        total = (time.perf_counter() - self.t0) * 1e3
        steps = list(self._steps())
        removed: dict[str, int] = {}
        for s in self.stages.values():
            for r, c in s["removed"].items():
                removed[r] = removed.get(r, 0) + c
        warning = self.short_list_warning(n_final)
        return {
            "k": self.k, "total_ms": total, "sources": self.sources, "merge": self.merge, "stages": self.stages,
            "fallbacks": [f for _, s in steps for f in s["fallbacks"]],
            "warnings": [w for _, s in steps for w in s["warnings"]] + ([warning] if warning else []),
            "latency_ms": {**{n: s["latency_ms"] for n, s in steps}, "total": total},
            "counts": {n: s["n_out"] for n, s in steps},
            "removed": removed,
        }
