"""Offline evaluation of the LLM re-rank stage on the list a pipeline actually hands it.

    pipeline_input(overrides, "valid"|"test", ...)   what the pipeline's ``llm_rerank`` slot receives,
        from the real pipeline built from config (``compose_serve`` + ``build_recommender``): the
        LLM stage is replaced by a recorder (:class:`StageInput`), everything before it runs as served
    llm_scores(reranker, inp, targets)               LLM scores (blend = 1) aligned with the input order
    blended_lists(inp, scores, b)                    (U, n) lists under ``b*z(llm) + (1-b)*z(previous)``
    choose_blend(inp, scores, targets, grid)         b by VALIDATION NDCG@k; it never sees test

Skipping misses is exact: a user whose target is not in the input list scores 0 under every
order of that list, so the LLM is only called for the others (``llm_scores(..., only_hits=True)``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from recsys.core.candidates import Candidates, UserContext
from recsys.eval.paired import per_user_ndcg
from recsys.llm.rerank import blend_order

SLOT = "llm_rerank"  # the pipeline YAML's key of the LLM re-rank stage (configs/pipeline/untrained.yaml)


class StageInput:
    """Pipeline stage that records the list it receives and passes it on unchanged.

    Declared in the LLM stage's slot, it sees exactly what the LLM stage would re-rank
    (after the ranker, filters, MMR, cap and exploration, with the request's sizes).
    """

    def __init__(self) -> None:
        self.last: Candidates | None = None

    def __call__(self, ctx: UserContext, cands: Candidates) -> Candidates:
        self.last = cands
        return cands


@dataclass
class PipelineInput:
    """The LLM stage's input for U users: ``cands[u]`` (at most ``top_n`` rows, the pipeline's scores)."""

    history: str  # valid (history = train) | test (history = train + valid)
    users: np.ndarray  # (U,) user_idx
    ctxs: list  # U UserContexts, as served (the prompt's history)
    cands: list  # U Candidates, best first
    items_table: object  # the items table the pipeline was built with (the prompt's titles)
    info: dict = field(default_factory=dict)

    def lists(self, n: int | None = None) -> np.ndarray:
        """(U, n) item_idx of the input order, -1 padded."""
        n = n or max(len(c) for c in self.cands)
        out = np.full((len(self.cands), n), -1, dtype=np.int64)
        for j, c in enumerate(self.cands):
            out[j, : min(n, len(c))] = c.items[:n]
        return out


def compose_pipeline_cfg(overrides, history: str, slot: str = SLOT):
    """The serve config of ``overrides`` (e.g. ``pipeline=two_tower_dlrm``) with the LLM slot recording its input."""
    from omegaconf import OmegaConf

    from recsys.pipeline.build import compose_serve

    for o in overrides:
        key = o.lstrip("+~").split("=", 1)[0]
        if key in ("llm", "history"):
            raise ValueError(f"override {o!r}: {key} is set by the evaluation (history=valid|test, the LLM "
                             "from its own config), not by a pipeline override")
    cfg = compose_serve([*overrides, "llm=none", f"history={history}"])
    if slot not in cfg.pipeline.stages:
        raise KeyError(f"pipeline {cfg.pipeline.get('name')!r} declares no stage {slot!r} "
                       f"(its stages: {list(cfg.pipeline.stages)}): nothing says where the LLM re-ranks")
    OmegaConf.update(cfg, f"pipeline.stages.{slot}", {"_target_": f"{__name__}.StageInput"}, force_add=True)
    return cfg


def pipeline_input(overrides, history: str, top_n: int = 20, users: np.ndarray | None = None,
                   slot: str = SLOT, k: int | None = None, progress: bool = True) -> PipelineInput:
    """Run the pipeline of ``overrides`` for ``users`` (default: every user of the split part) and
    record the first ``top_n`` rows its LLM slot receives, at the request size ``k`` (default: the
    pipeline's own ``k``, the served one)."""
    from tqdm import tqdm

    from recsys.pipeline.build import build_recommender

    if history not in ("valid", "test"):
        raise ValueError(f"history must be valid or test, got {history!r}")
    t0 = time.perf_counter()
    rec = build_recommender(compose_pipeline_cfg(overrides, history, slot))
    build_s = time.perf_counter() - t0
    recorder = rec.pipeline.stages[slot]
    part_users = np.unique(rec.split.part(history)["user_idx"].to_numpy())
    users = part_users if users is None else np.asarray(users, np.int64)
    if not np.isin(users, part_users).all():
        raise ValueError(f"some users have no {history} interaction")
    ctxs, cands = [], []
    t0 = time.perf_counter()
    for u in tqdm(users, desc=f"pipeline ({history})", disable=not progress, leave=False):
        recorder.last = None
        _, ctx = rec.recommend(int(u), k=k)
        if recorder.last is None:
            raise RuntimeError(f"the {slot} slot was not reached for user {u}")
        ctxs.append(ctx)
        cands.append(recorder.last.head(top_n))
    info = {"pipeline": rec.info.get("pipeline"), "artifacts": rec.info.get("artifacts"), "overrides": list(overrides),
            "k": int(k or rec.pipeline.k), "top_n": int(top_n), "build_s": build_s,
            "pipeline_s": time.perf_counter() - t0}
    return PipelineInput(history, users, ctxs, cands, rec.objects["items_table"], info)


def targets_of(split, history: str, users: np.ndarray) -> np.ndarray:
    """(U,) the held-out item of each user in the ``history`` part (leave-one-out: one each)."""
    part = split.part(history).drop_duplicates("user_idx", keep="last").set_index("user_idx")
    return part.loc[np.asarray(users), "item_idx"].to_numpy(np.int64)


def llm_scores(reranker, inp: PipelineInput, targets: np.ndarray | None = None, batch_size: int = 8,
               progress: bool = True) -> tuple[dict, dict]:
    """-> ({row j: (len(cands[j]),) LLM score in INPUT order}, timing).

    ``reranker`` must have ``blend == 1`` (its output order is the LLM's alone; the blend is applied
    afterwards, per b). ``targets`` given: only rows whose target is in the list are scored (exact).
    """
    from tqdm import tqdm

    if reranker.blend != 1.0:
        raise ValueError(f"score with blend=1.0 (the LLM alone), got {reranker.blend}")
    rows = [j for j, c in enumerate(inp.cands) if len(c) >= 2 and (targets is None or targets[j] in set(c.items.tolist()))]
    out, t = {}, time.perf_counter()
    for s in tqdm(range(0, len(rows), batch_size), desc=f"llm ({inp.history})", disable=not progress, leave=False):
        bs = rows[s : s + batch_size]
        for j, o in zip(bs, reranker.rerank_batch([inp.ctxs[j] for j in bs], [inp.cands[j] for j in bs])):
            if o.trace.get("llm_rerank", {}).get("fallback"):
                continue  # no usable LLM output: the input order stands (counted in timing)
            pos = {int(it): p for p, it in enumerate(o.items)}
            out[j] = np.array([o.features["llm_score"][pos[int(it)]] for it in inp.cands[j].items], np.float64)
    total = time.perf_counter() - t
    return out, {"llm_rows": len(rows), "fallbacks": len(rows) - len(out), "total_s": total,
                 "s_per_list": total / max(1, len(rows))}


def blended_lists(inp: PipelineInput, scores: dict, blend: float, n: int | None = None) -> np.ndarray:
    """(U, n) lists re-ranked by ``blend_order`` where the LLM scored the row, the input order elsewhere."""
    lists = inp.lists(n)
    for j, llm in scores.items():
        c = inp.cands[j]
        ranked = c.items[blend_order(llm, c.scores, blend)]
        lists[j, : len(ranked)] = ranked[: lists.shape[1]]
    return lists


def choose_blend(inp: PipelineInput, scores: dict, targets: np.ndarray, grid, k: int = 10) -> tuple[float, dict]:
    """The b of ``grid`` with the best mean NDCG@k on these (validation) lists -> (b, {b: NDCG@k}).

    ``grid`` must contain 0 (the input order: validation may switch the stage off). Ties go to the
    smaller b, so an LLM that does not help is not kept.
    """
    grid = sorted({float(b) for b in grid})
    if 0.0 not in grid or not all(0.0 <= b <= 1.0 for b in grid):
        raise ValueError(f"the blend grid must lie in [0, 1] and contain 0 (the input order), got {grid}")
    curve = {b: float(per_user_ndcg(blended_lists(inp, scores, b), targets, k).mean()) for b in grid}
    best = max(curve.values())
    return next(b for b in grid if curve[b] >= best - 1e-12), curve


def select_then_test(inputs: dict, scores: dict, targets: dict, grid, k: int = 10) -> dict:
    """b chosen on ``inputs["valid"]`` alone, then the test lists for b = 1 and the chosen b.

    ``inputs`` / ``scores`` / ``targets``: keyed by ``valid`` and ``test``. -> ``chosen``, ``valid_curve``
    ({b: valid NDCG@k}) and ``test_lists`` ({b: (U, n) lists}); test targets are not read here at all.
    """
    b, curve = choose_blend(inputs["valid"], scores["valid"], targets["valid"], grid, k)
    lists = {bb: blended_lists(inputs["test"], scores["test"], bb) for bb in dict.fromkeys((1.0, b))}
    return {"chosen": b, "valid_curve": curve, "test_lists": lists}
