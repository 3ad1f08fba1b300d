"""Synthetic tables shared by the two-tower and retrieval tests (importable: tests/ is on sys.path via its conftest)."""

import numpy as np
import pandas as pd

from recsys.data.schema import DatasetMeta


def tiny_tables(n_users=24, n_items=30, seed=0):
    """Users in 3 taste groups; each group watches its own 10 items (a planted structure)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        g = u % 3
        its = rng.permutation(np.arange(g * 10, g * 10 + 10))[:8]
        rows += [(u, int(i), t, 5.0) for t, i in enumerate(its)]
    inter = pd.DataFrame(rows, columns=["user_idx", "item_idx", "timestamp", "value"])
    genres = ["Action", "Comedy", "Drama"]
    items = pd.DataFrame({
        "item_idx": np.arange(n_items), "item_id": [str(i) for i in range(n_items)],
        "title": [f"m{i}" for i in range(n_items)], "year": [1990 + i for i in range(n_items)],
        "categories": [[genres[i // 10]] + ([genres[(i // 10 + 1) % 3]] if i % 4 == 0 else []) for i in range(n_items)],
        "text": ["" for _ in range(n_items)], "available": True, "age_rating": 0})
    users = pd.DataFrame({"user_idx": np.arange(n_users), "user_id": [str(u) for u in range(n_users)],
                          "gender": ["M" if u % 2 else "F" for u in range(n_users)]})
    meta = DatasetMeta("tiny", n_users, n_items, len(inter), user_features=["gender"])
    text = np.random.default_rng(1).normal(size=(n_items, 16)).astype(np.float32)
    return inter, items, users, meta, text
