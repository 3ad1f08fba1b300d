"""`python -m recsys.recommend user_id=196 [k=10] [overrides]`: print recommendations for one user.

Builds the same pipeline as the server (configs/recommend.yaml extends serve.yaml), runs one request and
prints a table (rank, item id, title, score, sources, explanation); ``show_trace=true`` adds the
per-stage latencies and filter counts. Unknown users take the cold-start path.
"""

from __future__ import annotations

import json
import logging

import hydra
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> tuple[dict, dict]:
    """-> ({"items": [...], "trace": {...}}, {"recommender": Recommender})."""
    from recsys.core.candidates import Constraints
    from recsys.serve.app import build_state

    state = build_state(cfg)
    rec = state.recommender
    user_idx = rec.contexts.user_idx(cfg.user_id) if cfg.user_id is not None else None
    if cfg.user_id is not None and user_idx is None:
        log.warning("unknown user_id %r: cold-start recommendations", cfg.user_id)
    session = []
    for iid in cfg.session_items:
        j = rec.item_idx(str(iid))
        if j is None:
            raise SystemExit(f"unknown session item id {iid!r}")
        session.append(j)
    constraints = Constraints(**OmegaConf.to_container(cfg.constraints)) if cfg.constraints else None
    cands, ctx = rec.recommend(user_idx, k=int(cfg.k), session=session, constraints=constraints, query=cfg.query)
    state.store.close()
    items = [{"rank": r + 1, "item_id": rec.item_ids[i], "title": rec.catalog.title_of(int(i)), "score": float(s),
              "sources": str(src), "explanation": cands.explanations[r] if cands.explanations else None}
             for r, (i, s, src) in enumerate(zip(cands.items.tolist(), cands.scores, cands.sources))]
    return {"items": items, "cold_start": ctx.is_cold, "trace": cands.trace}, {"recommender": rec}


@hydra.main(version_base="1.3", config_path="../configs", config_name="recommend")
def main(cfg: DictConfig) -> None:
    out, _ = run(cfg)
    print(f"user {cfg.user_id} ({'cold start' if out['cold_start'] else 'known'}): top {len(out['items'])}")
    for it in out["items"]:
        print(f"{it['rank']:>3}  {it['item_id']:>8}  {it['title'][:48]:<48}  {it['score']:.3f}  {it['sources']}")
        if it["explanation"]:
            print(f"     {it['explanation']}")
    if cfg.show_trace:
        print(json.dumps({k: out["trace"].get(k) for k in ("latency_ms", "removed", "counts", "fallbacks")}, indent=1, default=str))


if __name__ == "__main__":
    main()
