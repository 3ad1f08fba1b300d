"""Split protocols and filters: no leakage, k-core property, determinism."""

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.data.splits import check_split, implicit, kcore, leave_one_out, random_ratio, temporal


def _keys(df):
    return set(map(tuple, df[["user_idx", "item_idx", "timestamp"]].to_numpy().tolist()))


def test_loo_no_leakage_and_last_items(ml100k, ml100k_split):
    sp = ml100k_split
    assert not (_keys(sp.train) & _keys(sp.test)) and not (_keys(sp.train) & _keys(sp.valid))
    assert len(sp.train) + len(sp.valid) + len(sp.test) == len(ml100k.interactions)
    last_train = sp.train.groupby("user_idx")["timestamp"].max()
    valid_t = sp.valid.set_index("user_idx")["timestamp"]
    test_t = sp.test.set_index("user_idx")["timestamp"]
    # No future leakage per user: valid is not earlier than any train item, test not earlier than valid.
    assert (valid_t >= last_train.reindex(valid_t.index)).all()
    assert (test_t >= valid_t.reindex(test_t.index)).all()
    check_split(sp)


def test_loo_short_users_stay_in_train_and_ties_are_deterministic():
    inter = pd.DataFrame({"user_idx": [0, 0, 1, 1, 1, 1], "item_idx": [5, 3, 9, 8, 7, 2],
                          "timestamp": [1, 2, 1, 5, 5, 9], "value": 1.0})
    sp = leave_one_out(inter)
    assert sorted(sp.train[sp.train.user_idx == 0].item_idx) == [3, 5]
    # user 1: 9 (t1), then 8 and 7 tie at t5 -> row order 8, 7; then 2 (t9)
    assert sp.test.item_idx.tolist() == [2] and sp.valid.item_idx.tolist() == [7]
    assert leave_one_out(inter, tie_break="item_idx").valid.item_idx.tolist() == [8]
    # The item_idx rule does not depend on the row order at all; the default depends on it only within ties.
    by_item = leave_one_out(inter, tie_break="item_idx")
    shuffled = leave_one_out(inter.sample(frac=1.0, random_state=3), tie_break="item_idx")
    for part in ("train", "valid", "test"):
        pd.testing.assert_frame_equal(by_item.part(part), shuffled.part(part))
    with pytest.raises(ValueError, match="tie_break"):
        leave_one_out(inter, tie_break="random")


def test_temporal_has_no_future_leakage(ml100k):
    sp = temporal(ml100k.interactions, valid_frac=0.1, test_frac=0.2)
    assert sp.train.timestamp.max() <= sp.valid.timestamp.min()
    assert sp.valid.timestamp.max() <= sp.test.timestamp.min()
    n = len(ml100k.interactions)
    assert abs(len(sp.test) / n - 0.2) < 0.01 and abs(len(sp.valid) / n - 0.1) < 0.01
    check_split(sp)


def test_random_split_is_seeded(ml100k):
    a = random_ratio(ml100k.interactions, 0.1, 0.1, seed=5)
    b = random_ratio(ml100k.interactions, 0.1, 0.1, seed=5)
    c = random_ratio(ml100k.interactions, 0.1, 0.1, seed=6)
    pd.testing.assert_frame_equal(a.test, b.test)
    assert not a.test.equals(c.test)
    assert len(a.test) == round(0.1 * len(ml100k.interactions))
    check_split(a)
    with pytest.raises(ValueError):
        random_ratio(ml100k.interactions, 0.6, 0.5)


def test_kcore_needs_iteration():
    # Item 2 has 1 interaction; dropping it leaves user 1 with 1 interaction, which then drops item 1 to 1...
    inter = pd.DataFrame({"user_idx": [0, 0, 1, 1, 2, 2], "item_idx": [0, 1, 1, 2, 0, 1], "timestamp": 0, "value": 1.0})
    out = kcore(inter, 2)
    assert sorted(map(tuple, out[["user_idx", "item_idx"]].to_numpy().tolist())) == [(0, 0), (0, 1), (2, 0), (2, 1)]


@pytest.mark.parametrize("k", [5, 20])
def test_kcore_property_on_ml100k(ml100k, k):
    out = kcore(ml100k.interactions, k)
    assert out.groupby("user_idx").size().min() >= k
    assert out.groupby("item_idx").size().min() >= k
    assert len(out) <= len(ml100k.interactions)


def test_implicit_threshold():
    inter = pd.DataFrame({"user_idx": [0, 0, 0], "item_idx": [0, 1, 2], "timestamp": [1, 2, 3], "value": [3.0, 4.0, 5.0]})
    assert implicit(inter, 4).item_idx.tolist() == [1, 2]
    assert len(implicit(inter, 0)) == 3


def test_check_split_detects_overlap(tiny_dataset):
    from recsys.data.schema import DataError

    _, sp = tiny_dataset
    sp.test = pd.concat([sp.test, sp.train.iloc[:1]], ignore_index=True)
    with pytest.raises(DataError, match="both train and test"):
        check_split(sp)


_rows = st.lists(st.tuples(st.integers(0, 6), st.integers(0, 9), st.integers(0, 5)), min_size=1, max_size=60)


def _frame(rows):
    return pd.DataFrame(rows, columns=["user_idx", "item_idx", "timestamp"]).assign(value=1.0)


@settings(max_examples=60, deadline=None)
@given(_rows)
def test_loo_properties_on_random_data(rows):
    inter = _frame(rows)
    sp = leave_one_out(inter)
    n = inter.groupby("user_idx").size()
    assert set(sp.test.user_idx) == set(n[n >= 3].index) == set(sp.valid.user_idx)
    assert len(sp.train) + len(sp.valid) + len(sp.test) == len(inter)
    for u, t in zip(sp.test.user_idx, sp.test.timestamp):
        assert t >= sp.valid[sp.valid.user_idx == u].timestamp.max()
        assert t >= sp.train[sp.train.user_idx == u].timestamp.max()


@settings(max_examples=60, deadline=None)
@given(_rows, st.integers(1, 4))
def test_kcore_properties_on_random_data(rows, k):
    inter = _frame(rows)
    out = kcore(inter, k)
    if len(out):
        assert out.groupby("user_idx").size().min() >= k and out.groupby("item_idx").size().min() >= k
    # A k-core is a fixed point: filtering it again removes nothing.
    pd.testing.assert_frame_equal(kcore(out, k), out)
