"""Fixtures of the serving tests.

- ``make_app(store=None, **state_kw)``  a ``TestClient`` over the real app on prepared ML-100K (content
  source off: no text embeddings needed), a fresh ``Recommender`` and, by default, a fresh SQLite store
  in the test's tmp dir; ``state_kw`` are ``ServeState`` options (``feedback_burst=5``...). The client
  sends ``Host: 127.0.0.1`` (on the default allow-list).
- ``postgres_url``  a real PostgreSQL 15 server started for the session (``initdb`` + ``pg_ctl`` in a temp
  dir on a free loopback port); skipped, with the reason, only where the binaries are missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]


def build_recommender(dataset_dir):
    from recsys.pipeline.recommender import Recommender

    cfg = OmegaConf.merge(OmegaConf.load(ROOT / "configs/pipeline/untrained.yaml"),
                          OmegaConf.from_dotlist(["sources.content=null"]))
    return Recommender(dataset_dir, cfg, split="loo", history="all")


@pytest.fixture
def make_app(ml100k_dir, tmp_path):
    from fastapi.testclient import TestClient

    from recsys.serve.app import ServeState, create_app
    from recsys.serve.stores import open_store

    opened = []

    def make(store=None, **state_kw):
        if store is None:
            store = open_store(tmp_path / f"fb{len(opened)}.sqlite")
            opened.append(store)
        state = ServeState(build_recommender(ml100k_dir), store, **state_kw)
        return TestClient(create_app(state), base_url="http://127.0.0.1"), state

    yield make
    for store in opened:
        store.close()


@pytest.fixture(scope="session")
def postgres_url():
    from recsys.serve.stores.local_postgres import LocalPostgres

    reason = LocalPostgres.missing()
    if reason:
        pytest.skip(reason)
    with LocalPostgres() as pg:
        yield pg.url
