"""Shared fixtures for the whole suite.

Session-scoped (built once per pytest run, in pytest's tmp dir; never in the repo):

- ``ml100k_dir``       prepared MovieLens-100K (RecBole's offline copy, all ratings as
                       implicit feedback, 5-core, leave-one-out split ``loo``), no text
                       embeddings: ~2-3 s.
- ``ml100k_dir_text``  the same plus ``item_text_emb.npy`` (all-MiniLM-L6-v2 over 1,349
                       item texts): ~25-30 s on one busy core, so only tests that need it pay.
- ``ml100k_data_root`` the ``paths.data_dir`` that holds ``ml100k_dir_text``: pass it to
                       training configs (they then reuse it: same prepare cache key).
- ``ml100k`` / ``ml100k_split``   the ``Dataset`` / ``Split`` loaded from ``ml100k_dir``.
- ``tiny_dataset``     ``(Dataset, Split)``: 5 users x 8 items, hand-made, in memory
                       (see ``TINY_INTERACTIONS`` for the exact rows and split).
- ``tiny_dir``         ``tiny_dataset`` written to disk (for DataModules and loaders).

Autouse: one torch thread (the CI box has 2 cores shared by several jobs) and
fixed seeds for ``random``, numpy and torch before every test.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

# (user, item, timestamp, rating). Leave-one-out (same-second ties by row order):
#   u0: train i0 i1     valid i2  test i3
#   u1: train i1 i4     valid i5  test i0
#   u2: train i2        valid i6  test i7
#   u3: train i3 i7     (only 2 interactions: all in train)
#   u4: train i5 i6 i1  valid i4  test i2   (i1 and i4 share timestamp 4: i1's row first)
TINY_INTERACTIONS = [
    (0, 0, 1, 5), (0, 1, 2, 4), (0, 2, 3, 3), (0, 3, 4, 5),
    (1, 1, 1, 2), (1, 4, 2, 5), (1, 5, 3, 4), (1, 0, 5, 1),
    (2, 2, 1, 5), (2, 6, 2, 3), (2, 7, 3, 4),
    (3, 3, 10, 4), (3, 7, 11, 5),
    (4, 5, 2, 3), (4, 6, 3, 2), (4, 1, 4, 5), (4, 4, 4, 4), (4, 2, 7, 1),
]
TINY_ITEMS = [  # (title, year, categories)
    ("Alpha", 1995, ["Comedy"]),
    ("Beta", 1994, ["Action", "Thriller"]),
    ("Gamma", 1977, ["Sci-Fi", "Action"]),
    ("Delta", 1990, ["Children's", "Animation"]),
    ("Epsilon", 1980, ["Horror"]),
    ("Zeta", -1, ["Drama"]),
    ("Eta", 1996, ["Comedy", "Romance"]),
    ("Theta", 1999, ["Drama", "War"]),
]
TINY_USERS = [  # (age, gender, occupation, zip)
    (24, "M", "technician", "85711"),
    (53, "F", "other", "94043"),
    (17, "M", "student", "32067"),
    (33, "F", "writer", "15213"),
    (61, "M", "retired", "98101"),
]


@pytest.fixture(autouse=True)
def _deterministic_single_thread():
    import torch

    torch.set_num_threads(1)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


def make_tiny_dataset():
    """The hand-made 5-user/8-item ``(Dataset, Split)`` (also importable by tests that need a fresh copy)."""
    from recsys.data.canonical import build_dataset
    from recsys.data.splits import leave_one_out

    inter = pd.DataFrame(TINY_INTERACTIONS, columns=["user_id", "item_id", "timestamp", "value"])
    items = pd.DataFrame([(str(i), t, y, c) for i, (t, y, c) in enumerate(TINY_ITEMS)], columns=["item_id", "title", "year", "categories"])
    users = pd.DataFrame([(str(u), *row) for u, row in enumerate(TINY_USERS)], columns=["user_id", "age", "gender", "occupation", "zip"])
    ds = build_dataset(inter, items, users, name="tiny", source="tests/conftest.py")
    ds.meta.extra["split"] = "loo"
    return ds, leave_one_out(ds.interactions)


@pytest.fixture
def tiny_dataset():
    return make_tiny_dataset()


@pytest.fixture
def tiny_dir(tmp_path, tiny_dataset):
    from recsys.data.io import save_dataset, save_split

    ds, split = tiny_dataset
    save_dataset(ds, tmp_path / "tiny")
    save_split(split, tmp_path / "tiny")
    return tmp_path / "tiny"


def prepare_from_config(data: str, data_dir, overrides: list[str] = ()):
    """``recsys.data.prepare.prepare_from_config`` on one thread (session fixtures run before the autouse one)."""
    import torch

    from recsys.data.prepare import prepare_from_config as _prepare

    torch.set_num_threads(1)
    return _prepare(data, data_dir, overrides)


@pytest.fixture(scope="session")
def ml100k_data_root(tmp_path_factory):
    """A ``paths.data_dir`` holding ML-100K prepared by the real ``configs/data/ml100k.yaml``
    (loo split, text embeddings: ~25-30 s once per session). Training tests pass it as
    ``paths.data_dir`` and their run finds the dataset already prepared."""
    root = tmp_path_factory.mktemp("data_root")
    prepare_from_config("ml100k", root)
    return root


@pytest.fixture(scope="session")
def ml100k_dir_text(ml100k_data_root):
    """Prepared ML-100K directory with ``item_text_emb.npy`` (N, 384)."""
    return ml100k_data_root / "ml100k"


@pytest.fixture(scope="session")
def ml100k_dir(tmp_path_factory):
    """Prepared ML-100K directory (loo split ``loo``, no text embeddings: ~2-3 s)."""
    return prepare_from_config("ml100k", tmp_path_factory.mktemp("data"), ["data.text_embeddings=false"])


@pytest.fixture(scope="session")
def ml100k(ml100k_dir):
    from recsys.data.io import load_dataset

    return load_dataset(ml100k_dir)


@pytest.fixture(scope="session")
def ml100k_split(ml100k_dir):
    from recsys.data.io import load_split

    return load_split(ml100k_dir, "loo")
