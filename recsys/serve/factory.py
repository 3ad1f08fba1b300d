"""The app factory each server process imports: ``recsys.serve.factory:app_from_env`` (uvicorn ``factory=True``).

``python -m recsys.serve`` composes ``configs/serve.yaml`` once (Hydra), puts the
resolved config into the environment (``RECSYS_SERVE_CONFIG``, YAML) and starts
uvicorn with ``workers`` processes; every worker calls :func:`app_from_env`,
which builds its own recommender (``build_state``), opens the shared feedback
store, replays the store's event log (``create_app``) and closes the store at
shutdown (committing what is queued).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import threading

from fastapi import FastAPI

CONFIG_ENV = "RECSYS_SERVE_CONFIG"


def app_from_cfg(cfg) -> FastAPI:
    """-> the app for a composed ``configs/serve.yaml``; its shutdown closes the feedback store."""
    from recsys.serve.app import build_state, create_app

    state = build_state(cfg)
    try:
        app = create_app(state)
    except BaseException:
        state.store.close()
        raise

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        try:
            yield
        finally:
            state.store.close()

    app.router.lifespan_context = lifespan
    # Everything built so far (catalogue, tables, models: ~10^6 tracked objects on ML-100K) lives as long as
    # the process: move it out of the collector's sight. A full collection over it took 151 ms, a stall of
    # every request in flight (the load test's p99); after the freeze it takes ~0 ms.
    gc.collect()
    gc.freeze()
    return app


def app_from_env() -> FastAPI:
    """The factory uvicorn calls in each worker: the config comes from ``RECSYS_SERVE_CONFIG``."""
    from omegaconf import OmegaConf

    text = os.environ.get(CONFIG_ENV)
    if not text:
        raise RuntimeError(f"{CONFIG_ENV} is not set: start the server with `python -m recsys.serve`")
    cfg = OmegaConf.create(text)
    set_log_level(cfg.get("log_level", "warning"))
    # tqdm's default write lock holds a multiprocessing RLock: in a spawned worker a named semaphore that
    # the resource tracker reported as leaked at shutdown ("2 leaked semaphore objects" with 2 workers).
    # A worker's bars are its own (and off above INFO): a thread lock is all they need.
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())
    return app_from_cfg(cfg)


def set_log_level(level: str) -> str:
    """Make ``log_level`` govern this process's logging -> the level's name (``"WARNING"``).

    Sets the root logger's level, which every logger of the service (``recsys.*``, none of which sets
    its own) and of its libraries inherits and which gates every handler: Hydra's console handler
    and ``serve.log`` in the parent, stderr in a spawned worker (given a handler here: Hydra
    configured only the parent).

    Above INFO it also turns progress bars off (they write to stderr past the logging levels): tqdm's
    ``TQDM_DISABLE`` (every bar that does not pass ``disable=`` itself: ``itemknn`` at start-up) and
    Hugging Face's (``HF_HUB_DISABLE_PROGRESS_BARS``, read by transformers when it is imported: its
    ``Loading weights`` bar at the first query), set in the environment so that the workers, spawned
    after the parent calls this, inherit them.
    """
    name = str(level).upper()
    if not isinstance(logging.getLevelName(name), int):
        raise ValueError(f"log_level must be debug, info, warning, error or critical, got {level!r}")
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    root.setLevel(name)
    if logging.getLevelName(name) > logging.INFO:
        os.environ["TQDM_DISABLE"] = os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        if "transformers" in sys.modules:  # imported already: it read the variable at import
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
    return name
