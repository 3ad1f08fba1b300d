"""Prepared-dataset files: round trip and clear errors for bad input."""

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.data.io import load_dataset, load_split, save_dataset, save_split
from recsys.data.schema import DataError


def test_roundtrip_is_exact(tmp_path, tiny_dataset):
    ds, split = tiny_dataset
    save_dataset(ds, tmp_path)
    save_split(split, tmp_path)
    back = load_dataset(tmp_path)
    pd.testing.assert_frame_equal(back.interactions, ds.interactions)
    pd.testing.assert_frame_equal(back.users, ds.users, check_dtype=False)
    assert back.items["categories"].tolist() == ds.items["categories"].tolist()
    assert back.items["age_rating"].dtype == "int16" and back.items["year"].dtype == "int32"
    assert back.meta == ds.meta
    sp = load_split(tmp_path, "loo")
    for part in ("train", "valid", "test"):
        pd.testing.assert_frame_equal(sp.part(part), split.part(part))


def test_missing_file(tmp_path, tiny_dataset):
    save_dataset(tiny_dataset[0], tmp_path)
    (tmp_path / "items.parquet").unlink()
    with pytest.raises(DataError, match=r"items\.parquet: file not found"):
        load_dataset(tmp_path)
    with pytest.raises(DataError, match=r"meta\.json: metadata file not found"):
        load_dataset(tmp_path / "nothing")
    with pytest.raises(DataError, match=r"splits/temporal: split 'temporal' not found"):
        load_split(tmp_path, "temporal")


def test_missing_and_wrong_column(tmp_path, tiny_dataset):
    ds, _ = tiny_dataset
    save_dataset(ds, tmp_path)
    pq.write_table(pa.Table.from_pandas(ds.interactions.drop(columns="timestamp"), preserve_index=False), tmp_path / "interactions.parquet")
    with pytest.raises(DataError, match=r"interactions\.parquet: missing column\(s\) \['timestamp'\]"):
        load_dataset(tmp_path)
    wrong = ds.interactions.assign(item_idx=ds.interactions.item_idx.astype(str))
    pq.write_table(pa.Table.from_pandas(wrong, preserve_index=False), tmp_path / "interactions.parquet")
    with pytest.raises(DataError, match=r"interactions\.parquet: column 'item_idx' has dtype"):
        load_dataset(tmp_path)


def test_empty_table_and_corrupt_file(tmp_path, tiny_dataset):
    ds, split = tiny_dataset
    save_dataset(ds, tmp_path)
    pq.write_table(pa.Table.from_pandas(ds.interactions.iloc[:0], preserve_index=False), tmp_path / "interactions.parquet")
    with pytest.raises(DataError, match=r"interactions\.parquet: table is empty"):
        load_dataset(tmp_path)
    (tmp_path / "interactions.parquet").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"interactions\.parquet: cannot read parquet"):
        load_dataset(tmp_path)


def test_meta_disagreeing_with_tables(tmp_path, tiny_dataset):
    ds, _ = tiny_dataset
    ds.meta.n_items = 9
    save_dataset(ds, tmp_path)
    with pytest.raises(DataError, match=r"meta\.json: says 5 users / 9 items"):
        load_dataset(tmp_path)


def test_out_of_range_index(tmp_path, tiny_dataset):
    ds, _ = tiny_dataset
    save_dataset(ds, tmp_path)
    bad = ds.interactions.copy()
    bad.loc[0, "item_idx"] = 8
    pq.write_table(pa.Table.from_pandas(bad, preserve_index=False), tmp_path / "interactions.parquet")
    with pytest.raises(DataError, match=r"item_idx outside \[0, 8\)"):
        load_dataset(tmp_path)


def test_empty_valid_split_part_is_allowed(tmp_path, tiny_dataset):
    ds, split = tiny_dataset
    split.valid = split.valid.iloc[:0]
    save_split(split, tmp_path)
    assert len(load_split(tmp_path, "loo").valid) == 0


@pytest.mark.parametrize("col,value,error", [
    ("value", float("inf"), r"row 2: value inf must be finite"),
    ("value", float("nan"), r"row 2: value nan must be finite"),
    ("timestamp", -1, r"row 2: timestamp -1 must be in \[0, 4102444800\]"),
    ("timestamp", 2**62, r"row 2: timestamp 4611686018427387904 must be in"),
])
def test_out_of_range_values_name_file_and_row(tmp_path, tiny_dataset, col, value, error):
    ds, split = tiny_dataset
    save_dataset(ds, tmp_path)
    save_split(split, tmp_path)
    bad = ds.interactions.copy()
    bad[col] = bad[col].astype("float64" if col == "value" else "int64")
    bad.loc[2, col] = value
    pq.write_table(pa.Table.from_pandas(bad, preserve_index=False), tmp_path / "interactions.parquet")
    with pytest.raises(DataError, match=r"interactions\.parquet: " + error):
        load_dataset(tmp_path)
    train = split.train.copy()
    train[col] = train[col].astype("float64" if col == "value" else "int64")
    train.loc[2, col] = value
    pq.write_table(pa.Table.from_pandas(train, preserve_index=False), tmp_path / "splits" / "loo" / "train.parquet")
    with pytest.raises(DataError, match=r"train\.parquet: " + error):
        load_split(tmp_path, "loo")
