"""The leave-one-out tie rule: same-second interactions keep the source file's row order.

Hand-made rows with ties (computed by hand below), carried through the real path
(reader tables -> build_dataset -> implicit threshold -> k-core -> reindex ->
split -> parquet -> load), and the real ML-100K file checked against its own rows.
"""

import functools

import numpy as np
import pandas as pd
import pytest

from recsys.data.canonical import build_dataset
from recsys.data.history import History
from recsys.data.io import load_dataset, load_split
from recsys.data.prepare import prepare
from recsys.data.splits import chronological, leave_one_out

# Raw rows in "file order". User a: m1 at t1, then m4, m2, m3 all at t5 (a tie of three).
# User b: m2 t1, m3 t2, m1 t3 and m4 t3 tie. User c has a rating of 1 (dropped by the
# implicit threshold) and the one interaction of item m9, which the 2-core then drops.
RAW = [
    ("a", "m1", 1, 5.0), ("b", "m2", 1, 4.0), ("a", "m4", 5, 4.0), ("c", "m9", 2, 4.0), ("a", "m2", 5, 3.0),
    ("b", "m3", 2, 4.0), ("c", "m1", 3, 4.0), ("a", "m3", 5, 5.0), ("b", "m1", 3, 4.0), ("c", "m3", 1, 1.0),
    ("b", "m4", 3, 4.0), ("c", "m2", 4, 4.0), ("c", "m4", 4, 4.0),
]


def _tables():
    inter = pd.DataFrame(RAW, columns=["user_id", "item_id", "timestamp", "value"])
    items = pd.DataFrame({"item_id": [f"m{i}" for i in (1, 2, 3, 4, 9)], "title": list("ABCDE"), "year": 1990,
                          "categories": [["Drama"]] * 5})
    users = pd.DataFrame({"user_id": ["a", "b", "c"]})
    return inter, items, users


def _named(ds, part: pd.DataFrame) -> dict:
    """{user_id: [item_id, ...]} of a part, in the part's row order."""
    uid, iid = ds.users["user_id"].to_numpy(), ds.items["item_id"].to_numpy()
    out: dict = {}
    for u, i in zip(part["user_idx"], part["item_idx"]):
        out.setdefault(uid[u], []).append(iid[i])
    return out


def test_chronological_keeps_row_order_within_a_second():
    df = pd.DataFrame({"user_idx": [1, 0, 1, 1, 0], "item_idx": [4, 9, 2, 3, 1], "timestamp": [5, 7, 5, 2, 7]})
    assert chronological(df).index.tolist() == [1, 4, 3, 0, 2]  # user 0: 9, 1 (tie, row order); user 1: 3, then 4, 2
    assert chronological(df, "item_idx").index.tolist() == [4, 1, 3, 2, 0]  # ties by ascending item: 1, 9; 2, 4
    once = chronological(df)
    pd.testing.assert_frame_equal(chronological(once), once)  # stable: a no-op on an ordered table


def test_ties_survive_threshold_kcore_reindex_and_parquet(tmp_path):
    reader = functools.partial(build_dataset, *_tables(), name="ties", source="test")
    out = prepare("ties", reader, functools.partial(leave_one_out), data_dir=tmp_path, min_rating=2.0, kcore=2)
    ds, sp = load_dataset(out), load_split(out, "loo")
    assert "m9" not in set(ds.items["item_id"])  # the 2-core ran in between
    # File order within the tie: a's t5 rows are m4, m2, m3 -> valid m2, test m3; b's t3 rows m1, m4.
    assert _named(ds, sp.test) == {"a": ["m3"], "b": ["m4"], "c": ["m4"]}
    assert _named(ds, sp.valid) == {"a": ["m2"], "b": ["m1"], "c": ["m2"]}
    assert _named(ds, sp.train) == {"a": ["m1", "m4"], "b": ["m2", "m3"], "c": ["m1"]}
    assert _named(ds, ds.interactions)["a"] == ["m1", "m4", "m2", "m3"]
    # The histories every model reads at test time: train + valid in that same order.
    h = History.from_interactions(sp.history_for("test"))
    names = ds.items["item_id"].to_numpy()
    assert [names[h.of(b).numpy()].tolist() for b in range(3)] == [["m1", "m4", "m2"], ["m2", "m3", "m1"], ["m1", "m2"]]
    assert [names[h.last(2).of(0).numpy()].tolist()] == [["m4", "m2"]]


def test_item_idx_rule_is_kept_as_an_option(tmp_path):
    reader = functools.partial(build_dataset, *_tables(), name="ties", source="test")
    split = functools.partial(leave_one_out, tie_break="item_idx")
    out = prepare("ties", reader, split, data_dir=tmp_path, min_rating=2.0, kcore=2)
    ds, sp = load_dataset(out), load_split(out, "loo")
    # Ties by ascending item index (m1 < m2 < m3 < m4): a's t5 tie -> m2, m3, m4.
    assert _named(ds, sp.test) == {"a": ["m4"], "b": ["m4"], "c": ["m4"]}
    assert _named(ds, sp.valid) == {"a": ["m3"], "b": ["m1"], "c": ["m2"]}
    # Parts are written in the split's order, so histories built from them follow it too.
    h = History.from_interactions(sp.history_for("test"))
    assert ds.items["item_id"].to_numpy()[h.of(0).numpy()].tolist() == ["m1", "m2", "m3"]


def test_ml100k_test_item_is_the_last_row_of_the_source_file(ml100k, ml100k_split):
    """Against RecBole's ml-100k.inter itself: per user, the surviving rows stably sorted by time."""
    from recsys.data.movielens import recbole_ml100k_dir

    raw = pd.read_csv(recbole_ml100k_dir() / "ml-100k.inter", sep="\t")
    raw.columns = ["user_id", "item_id", "rating", "timestamp"]
    raw = raw.astype({"user_id": str, "item_id": str})
    keep = raw["item_id"].isin(set(ml100k.items["item_id"])) & raw["user_id"].isin(set(ml100k.users["user_id"]))
    raw = raw[keep]
    raw = raw.iloc[np.lexsort((raw["timestamp"].to_numpy(), raw["user_id"].to_numpy()))]  # stable
    expect_test = raw.groupby("user_id", sort=False).tail(1).set_index("user_id")["item_id"]
    expect_valid = raw.groupby("user_id", sort=False).nth(-2).set_index("user_id")["item_id"]
    got_test = pd.Series(_named(ml100k, ml100k_split.test)).str[0]
    got_valid = pd.Series(_named(ml100k, ml100k_split.valid)).str[0]
    assert len(got_test) == 943
    pd.testing.assert_series_equal(got_test.sort_index(), expect_test.sort_index(), check_names=False, check_dtype=False)
    pd.testing.assert_series_equal(got_valid.sort_index(), expect_valid.sort_index(), check_names=False, check_dtype=False)


@pytest.mark.parametrize("tie_break, test_less_popular", [("row", False), ("item_idx", True)])
def test_ml100k_tie_statistics(ml100k, tie_break, test_less_popular):
    """The bias of issue 12 point 0: under item_idx the test item is the tie's least popular."""
    sp = leave_one_out(ml100k.interactions, tie_break=tie_break)
    pop = np.bincount(sp.train["item_idx"], minlength=ml100k.meta.n_items)
    gap = pop[sp.valid["item_idx"]].mean() - pop[sp.test["item_idx"]].mean()
    assert (gap > 15) == test_less_popular  # item_idx: 143 vs 121; row: within a few interactions
