"""`python -m recsys.serve [overrides]`: start the HTTP service (configs/serve.yaml).

    python -m recsys.serve                                  # ML-100K on 127.0.0.1:8000, `workers` processes
    python -m recsys.serve port=8080 llm=smollm2            # + LLM re-rank and explanations (CPU)
    python -m recsys.serve workers=4                        # 4 processes sharing the feedback store
    python -m recsys.serve pipeline.stages.exploration=null # ablations are overrides

Worker model: uvicorn's own process manager with an import-string app factory
(``recsys.serve.factory:app_from_env``). The parent binds the socket, starts
``workers`` processes (each builds its recommender and replays the store's
event log) and replaces one that dies (``kill -9`` included); with
``workers: 1`` the one server runs in this process. uvicorn rather than
gunicorn: it is already a dependency, its supervisor restarts dead workers
itself, and the app needs nothing of gunicorn's (no WSGI, no pre-fork
app sharing: each worker must build its own state anyway).
"""

from __future__ import annotations

import logging
import os
from urllib.parse import urlsplit

import hydra
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def check_ports(cfg: DictConfig) -> None:
    """Refuse an LLM backend whose ``base_url`` is this server's own address (it would call itself)."""
    url = OmegaConf.select(cfg, "llm.backend.base_url", default=None)
    if url is None:
        return
    parts = urlsplit(str(url))
    same_host = (parts.hostname or "") in ("127.0.0.1", "localhost", "::1", "0.0.0.0", str(cfg.host))
    if same_host and parts.port == int(cfg.port):
        raise ValueError(f"llm.backend.base_url {url} is this recommender's own address ({cfg.host}:{cfg.port}): "
                         "run the LLM server on another port (configs/llm/openai.yaml) or set port=...")


def run(cfg: DictConfig) -> None:
    """Serve ``cfg`` with ``cfg.workers`` processes until interrupted."""
    import uvicorn

    from recsys.serve.factory import CONFIG_ENV

    workers = int(cfg.workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    check_ports(cfg)
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding %s: the API has no authentication", cfg.host)
    os.environ[CONFIG_ENV] = OmegaConf.to_yaml(cfg, resolve=True)  # inherited by every worker
    uvicorn.run("recsys.serve.factory:app_from_env", factory=True, host=str(cfg.host), port=int(cfg.port),
                workers=workers, log_level=str(cfg.get("log_level", "warning")).lower(),
                access_log=False, timeout_graceful_shutdown=10)  # access lines would carry raw paths


@hydra.main(version_base="1.3", config_path="../../configs", config_name="serve")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
