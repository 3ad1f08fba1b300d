"""A 3-user, 6-item dataset in the canonical schema, small enough to rank by hand."""

import pandas as pd
import pytest
import torch

from recsys.data.schema import Dataset, DatasetMeta, Split


def _inter(rows):
    return pd.DataFrame(rows, columns=["user_idx", "item_idx", "timestamp"]).assign(value=1.0)


@pytest.fixture
def toy():
    # train: u0 {0,1}, u1 {2}, u2 {0,3}; valid: u0 2, u1 3, u2 4; test: u0 3, u1 0, u2 5.
    train = _inter([(0, 0, 1), (0, 1, 2), (1, 2, 1), (2, 0, 1), (2, 3, 2)])
    valid = _inter([(0, 2, 3), (1, 3, 2), (2, 4, 3)])
    test = _inter([(0, 3, 4), (1, 0, 3), (2, 5, 4)])
    cats = [["a"], ["a", "b"], ["c"], [], ["b"], ["c"]]
    items = pd.DataFrame({"item_idx": range(6), "item_id": [str(i) for i in range(6)], "title": [f"m{i}" for i in range(6)],
                          "year": [-1] * 6, "categories": cats, "text": [""] * 6, "available": [True] * 6, "age_rating": [0] * 6})
    users = pd.DataFrame({"user_idx": range(3), "user_id": ["a", "b", "c"]})
    meta = DatasetMeta(name="toy", n_users=3, n_items=6, n_interactions=11, vocabularies={"categories": ["a", "b", "c"]})
    inter = pd.concat([train, valid, test], ignore_index=True)
    return Dataset(inter, items, users, meta), Split("loo", train, valid, test)


class TableModel:
    """Scores from a fixed (n_users, N) table; ``boost_history`` adds a bonus to consumed items."""

    def __init__(self, table, boost_history: float = 0.0):
        self.table = torch.as_tensor(table, dtype=torch.float32)
        self.boost = boost_history

    def score(self, history):
        s = self.table[history.users].clone()
        for b in range(len(history)):
            s[b, history.of(b)] += self.boost
        return s


@pytest.fixture
def table_model():
    return TableModel
