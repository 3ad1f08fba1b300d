"""The multi-stage recommender: candidate sources, a merger, then stages in declared order.

    ctx -> sources (each ~per_source candidates) -> merger (dedupe, fuse, ~1,000;
           ``recsys.retrieval.merge.CandidateMerger``: reciprocal-rank fusion)
        -> stages[0] -> stages[1] -> ... -> head(k)

A source is ``__call__(ctx, n) -> Candidates`` (``recsys.retrieval.sources``);
a stage is ``__call__(ctx, cands) -> Candidates``, or ``__call__(ctx, cands, k)``
when its sizes are relative to the request's k (``recsys.pipeline.sizing``):
the pipeline passes k to every stage whose ``__call__`` names it.
``configs/pipeline/*.yaml`` declares all of them, in order, LLM stages included
(:func:`build_pipeline`); a null entry is switched off (``pipeline.stages.mmr=null``).

The pipeline is the only writer of the request's trace (``recsys.pipeline.trace``):
each step gets a blank ``trace`` dict to report in, and the pipeline files that
report, the step's latency and its row counts under the step's name.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping, Sequence

from recsys.core.candidates import Candidates, UserContext
from recsys.pipeline.sizing import DEFAULT_K, SizeSpec, as_size
from recsys.pipeline.trace import TraceRecorder, llm_stats
from recsys.retrieval.merge import CandidateMerger


def _blank(c: Candidates) -> Candidates:
    """The same rows with an empty trace: the report dict of the step about to run."""
    return Candidates(c.items, c.scores, c.sources, c.features, c.explanations, {})


def _takes_k(stage) -> bool:
    try:
        return "k" in inspect.signature(stage).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False


class TopK:
    """Stage: keep the first ``k`` rows (default: the request's k).

    Declared before the explanation stage so that sentences are written for the
    final list only; the pipeline cuts to k at the end in any case.
    """

    def __init__(self, k: SizeSpec | None = None):
        self.k = as_size({} if k is None else k)

    def __call__(self, ctx: UserContext, cands: Candidates, k: int = DEFAULT_K) -> Candidates:
        return cands.head(self.k(k))


class Pipeline:
    """Sources -> merger -> stages -> top ``k``.

    Args:
        sources: name -> source (None entries are switched off).
        merger: fuses the source lists into one candidate list (``merger(lists) -> Candidates``).
        stages: name -> stage, in order (None entries are switched off), or a list.
        k: the list length when a call gives none (a request's ``constraints.max_results`` may lower it).
        per_source: how many candidates each source is asked for (an int, or a size relative to k).
    """

    def __init__(self, sources: Mapping[str, object], merger, stages: Mapping[str, object] | Sequence | None = None,
                 k: int = DEFAULT_K, per_source: SizeSpec = 300):
        self.sources = {n: s for n, s in dict(sources).items() if s is not None}
        if not self.sources:
            raise ValueError("pipeline needs at least one candidate source")
        if stages is None:
            stages = {}
        if not isinstance(stages, Mapping):
            stages = {getattr(s, "name", type(s).__name__): s for s in stages}
        self.stages = {n: s for n, s in dict(stages).items() if s is not None}
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.merger, self.k, self.per_source = merger, k, as_size(per_source)
        self._k_stages = {n for n, s in self.stages.items() if _takes_k(s)}

    def __call__(self, ctx: UserContext, k: int | None = None) -> Candidates:
        k = k or self.k
        if ctx.constraints.max_results is not None:
            k = min(k, ctx.constraints.max_results)
        rec = TraceRecorder(k)
        lists = {}
        for name, source in self.sources.items():
            t = time.perf_counter()
            out = source(ctx, self.per_source(k))
            lists[name] = _blank(out)
            rec.record("source", name, (time.perf_counter() - t) * 1e3, None, len(out), out.trace)
        t = time.perf_counter()
        merged = self.merger(lists)
        rec.record("merge", "merge", (time.perf_counter() - t) * 1e3, sum(map(len, lists.values())), len(merged),
                   merged.trace)
        cands = merged
        for name, stage in self.stages.items():
            stats = llm_stats(stage)
            before = stats.snapshot() if stats else None
            n_in, t = len(cands), time.perf_counter()
            cands = stage(ctx, _blank(cands), k=k) if name in self._k_stages else stage(ctx, _blank(cands))
            ms = (time.perf_counter() - t) * 1e3
            tokens = None
            if stats:
                after = stats.snapshot()
                tokens = {"prompt": after["prompt_tokens"] - before["prompt_tokens"],
                          "generated": after["generated_tokens"] - before["generated_tokens"]}
            rec.record("stage", name, ms, n_in, len(cands), cands.trace, tokens)
        final = cands.head(k)
        final.trace = rec.finish(len(final))
        return final


def build_pipeline(cfg, **objects) -> Pipeline:
    """Instantiate a ``configs/pipeline/*.yaml`` node: artifacts, then sources, merger and stages.

    ``objects`` (``catalog=``, ``dataset=``, an LLM ``backend=``...) are handed to every
    artifact, source and stage whose constructor names them (``recsys.core.inject``),
    so YAML holds only hyper-parameters and data-derived objects are built once, in code.
    Each ``artifacts.<name>`` entry (a trained model loaded from a run directory) is
    built first and joins ``objects`` under its name, so a source or stage receives it
    by naming it. A missing run (FileNotFoundError) is re-raised with the config's ``journey``
    (the commands that train and index its runs, in order) when it declares one.
    """
    from omegaconf import DictConfig, OmegaConf

    from recsys.core.inject import instantiate_with

    hint = ("e.g. text_emb: prepare with data.text_embeddings=true; backend: choose an LLM with llm=smollm2; "
            "or switch the entry off with =null")
    objects = dict(objects)

    def make(node):
        return None if node is None else instantiate_with(node, required_hint=hint, **objects)

    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    journey = list(cfg.get("journey") or [])  # the commands that make the config's trained runs, in order
    for name, node in (cfg.get("artifacts") or {}).items():
        try:
            objects[name] = make(node)
        except FileNotFoundError as e:  # a run not trained yet: say the whole way there, not one step
            if not journey:
                raise
            steps = "\n  ".join(journey)
            raise FileNotFoundError(f"{e}\npipeline {cfg.get('name')!r} (artifact {name!r}) serves trained runs; "
                                    f"from nothing, run in order:\n  {steps}") from e
    sources = {n: make(s) for n, s in (cfg.get("sources") or {}).items()}
    stages = {n: make(s) for n, s in (cfg.get("stages") or {}).items()}
    merger = make(cfg.merger) if cfg.get("merger") is not None else CandidateMerger()
    per_source = cfg.get("per_source", 300)
    if isinstance(per_source, DictConfig):
        per_source = OmegaConf.to_container(per_source)
    return Pipeline(sources, merger, stages, k=int(cfg.get("k", DEFAULT_K)), per_source=per_source)
