"""`python -m recsys.serve [overrides]`: start the HTTP service (configs/serve.yaml).

    python -m recsys.serve                                  # ML-100K on 127.0.0.1:8000
    python -m recsys.serve port=8080 llm=smollm2            # + LLM re-rank and explanations (CPU)
    python -m recsys.serve pipeline.stages.exploration=null # ablations are overrides
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> tuple[dict, dict]:
    """Build the app from config and serve until interrupted -> ({}, {"app": app})."""
    import uvicorn

    from recsys.serve.app import build_state, create_app

    state = build_state(cfg)
    app = create_app(state)
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding %s: the API has no authentication", cfg.host)
    try:
        uvicorn.run(app, host=cfg.host, port=int(cfg.port), workers=1, log_level="warning")
    finally:
        state.store.close()
    return {}, {"app": app}


@hydra.main(version_base="1.3", config_path="../../configs", config_name="serve")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
