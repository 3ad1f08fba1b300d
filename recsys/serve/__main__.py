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

Output: ``log_level`` (default ``warning``) governs every logger of the service
(``recsys.*``, libraries, uvicorn, Hydra's console handler and ``serve.log``), so a
default server writes only warnings and errors. What is served and where is
printed once, to stdout, before the workers start (:func:`summary`): it is the
operator's answer, not an event, so it is neither a warning nor hidden by one.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path
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


def summary(cfg: DictConfig) -> str:
    """One line: the dataset (sizes from its ``meta.json``), pipeline, LLM, store, address and processes."""
    try:
        meta = json.loads((Path(str(cfg.dataset_dir)) / "meta.json").read_text())
        sizes = f"{meta['n_items']} items, {meta['n_users']} users"
    except (OSError, ValueError, KeyError):
        sizes = "not prepared?"  # the workers will say what is missing
    stages = [n for n, s in (cfg.pipeline.get("stages") or {}).items() if s is not None]
    llm = (cfg.get("llm") or {}).get("name", "none")
    return (f"recsys.serve: {cfg.dataset_dir} ({sizes}), pipeline {cfg.pipeline.get('name', '?')} {stages}, llm {llm}, "
            f"feedback at {cfg.feedback_db}; http://{cfg.host}:{cfg.port} with {int(cfg.workers)} worker(s), "
            f"log_level {cfg.get('log_level', 'warning')}")


def run(cfg: DictConfig) -> None:
    """Serve ``cfg`` with ``cfg.workers`` processes until interrupted."""
    import uvicorn

    from recsys.serve.factory import CONFIG_ENV, set_log_level

    workers = int(cfg.workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    check_ports(cfg)
    level = set_log_level(cfg.get("log_level", "warning"))  # Hydra set the root logger to INFO
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding %s: the API has no authentication", cfg.host)
    os.environ[CONFIG_ENV] = OmegaConf.to_yaml(cfg, resolve=True)  # inherited by every worker
    print(summary(cfg), flush=True)
    uvicorn.run("recsys.serve.factory:app_from_env", factory=True, host=str(cfg.host), port=int(cfg.port),
                workers=workers, log_level=level.lower(), http=http_protocol(),
                access_log=False, timeout_graceful_shutdown=10)  # access lines would carry raw paths


def http_protocol() -> str:
    """uvicorn's ``http``: httptools keeping an absolute-form target's host (``recsys.serve.protocol``), else h11."""
    if importlib.util.find_spec("httptools") is None:
        return "h11"  # HostGuard reads an absolute-form target from the path
    return "recsys.serve.protocol:AuthorityHttpToolsProtocol"


@hydra.main(version_base="1.3", config_path="../../configs", config_name="serve")
def main(cfg: DictConfig) -> None:
    from recsys.utils.cli import user_errors

    with user_errors("recsys.serve"):
        run(cfg)


if __name__ == "__main__":
    from recsys.utils.cli import doc_on_help

    doc_on_help(__doc__)
    main()
