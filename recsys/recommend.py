"""`python -m recsys.recommend user_id=196 [k=10] [show_trace=true] [overrides]`: recommendations for one user.

Builds exactly what the server builds (``recsys.pipeline.build.build_recommender`` over
configs/recommend.yaml, which extends serve.yaml), runs one request and prints what it
used (pipeline, LLM, dataset, trained artifacts) and a table (rank, item id, title,
score, sources, explored, explanation). ``show_trace=true`` adds one row per source
and stage: rows in/out, latency, removed, fallbacks and the stage's own report.
Unknown users take the cold-start path.

Feedback: like the server at start-up, it replays the feedback store the server writes
(``feedback_db`` of serve.yaml, the same path for the same ``data_name``) into the live
profiles first, so a user's API skips, ratings and clicks count here too (``use_feedback=false``
reads the tables only). A store that does not exist yet is not created: there is no feedback.
"""

from __future__ import annotations

import json
import logging

import hydra
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> tuple[dict, dict]:
    """-> ({"items", "cold_start", "trace", "used"}, {"recommender": Recommender})."""
    from recsys.core.candidates import Constraints
    from recsys.pipeline.build import build_recommender

    rec = build_recommender(cfg)
    replayed = replay_feedback(rec, cfg) if cfg.use_feedback else 0
    user_idx = rec.contexts.user_idx(cfg.user_id) if cfg.user_id is not None else None
    session = []
    for iid in cfg.session_items:
        j = rec.item_idx(str(iid))
        if j is None:
            raise SystemExit(f"unknown session item id {iid!r}")
        session.append(j)
    constraints = Constraints(**OmegaConf.to_container(cfg.constraints)) if cfg.constraints else None
    cands, ctx = rec.recommend(user_idx, k=int(cfg.k), session=session, constraints=constraints, query=cfg.query,
                               user_id=None if cfg.user_id is None else str(cfg.user_id))
    if cfg.user_id is not None and user_idx is None:
        log.warning("unknown user_id %r: %s", cfg.user_id, "recommendations from their live feedback"
                    if len(ctx.history) or len(ctx.negative_items) else "cold-start recommendations")
    explored = cands.features.get("explored")
    items = [{"rank": r + 1, "item_id": rec.item_ids[i], "title": rec.catalog.title_of(int(i)), "score": float(s),
              "sources": str(src), "explored": bool(explored[r]) if explored is not None else False,
              "explanation": cands.explanations[r] if cands.explanations else None}
             for r, (i, s, src) in enumerate(zip(cands.items.tolist(), cands.scores, cands.sources))]
    used = {**rec.info, "sources": list(rec.pipeline.sources), "stages": list(rec.pipeline.stages),
            "feedback_events": replayed}
    return {"items": items, "cold_start": ctx.is_cold, "trace": cands.trace, "used": used}, {"recommender": rec}


def replay_feedback(rec, cfg) -> int:
    """Apply the server's feedback store (``cfg.feedback_db``) to ``rec``'s live profiles -> events applied."""
    from pathlib import Path

    from recsys.serve.shared import SharedState, observe_events
    from recsys.serve.stores import open_store

    target = str(cfg.feedback_db)
    if not target.startswith(("postgresql://", "postgres://")) and not Path(target).exists():
        return 0
    store = open_store(target)
    try:
        fb = cfg.get("feedback") or {}
        apply = observe_events(rec, float(cfg.negative_threshold), float(fb.get("dwell_click_s", 30.0)))
        return SharedState(store, apply).catch_up()
    finally:
        store.close()


def _cell(v, width: int) -> str:
    s = str(v)
    return s if len(s) <= width else s[: width - 1] + "~"


def format_items(out: dict, user_id) -> list[str]:
    u = out["used"]
    lines = [f"pipeline {u['pipeline']} | llm {u['llm']} | dataset {u['dataset_dir']} (history: {u['history']})",
             "artifacts: " + (", ".join(f"{n} <- {p}" for n, p in u["artifacts"].items()) or "none (no trained models)"),
             "sources: " + ", ".join(u["sources"]), "stages:  " + " > ".join(u["stages"]),
             f"feedback: {u.get('feedback_events', 0)} stored events replayed", "",
             f"user {user_id} ({'cold start' if out['cold_start'] else 'known'}): top {len(out['items'])} "
             f"of k={out['trace']['k']}",
             f"{'rank':>4}  {'item_id':>7}  {'title':<44}  {'score':>7}  {'sources':<30}  explored"]
    for it in out["items"]:
        lines.append(f"{it['rank']:>4}  {it['item_id']:>7}  {_cell(it['title'], 44):<44}  {it['score']:>7.3f}  "
                     f"{_cell(it['sources'], 30):<30}  {'yes' if it['explored'] else ''}")
        if it["explanation"]:
            lines.append(f"{'':>15}{it['explanation']}")
    return lines + [f"warning: {w}" for w in out["trace"]["warnings"]]


def format_trace(trace: dict) -> list[str]:
    """One row per step: kind, name, rows in -> out, ms, removed, fallbacks and details."""
    rows = [("source", n, s) for n, s in trace["sources"].items()]
    rows += [("merge", "merge", trace["merge"])] if trace["merge"] else []
    rows += [("stage", n, s) for n, s in trace["stages"].items()]
    lines = [f"{'step':<6}  {'name':<14}  {'in':>5}  {'out':>5}  {'ms':>8}  report"]
    for kind, name, s in rows:
        report = {**({"removed": s["removed"]} if s["removed"] else {}),
                  **({"llm_tokens": s["llm_tokens"]} if s["llm_tokens"] else {}), **s["details"]}
        n_in = "" if s["n_in"] is None else s["n_in"]
        lines.append(f"{kind:<6}  {_cell(name, 14):<14}  {n_in:>5}  {s['n_out']:>5}  {s['latency_ms']:>8.2f}  "
                     f"{_cell(json.dumps(report, default=str), 120) if report else ''}")
        lines += [f"{'':>8}fallback: {f}" for f in s["fallbacks"]]
    return lines + [f"{'total':<6}  {'':<14}  {'':>5}  {'':>5}  {trace['total_ms']:>8.2f}"]


@hydra.main(version_base="1.3", config_path="../configs", config_name="recommend")
def main(cfg: DictConfig) -> None:
    from recsys.utils.cli import user_errors

    with user_errors("recsys.recommend"):
        out, _ = run(cfg)
    lines = format_items(out, cfg.user_id)
    if cfg.show_trace:
        lines += ["", "trace:"] + format_trace(out["trace"])
    print("\n".join(lines))


if __name__ == "__main__":
    from recsys.utils.cli import doc_on_help

    doc_on_help(__doc__)
    main()
