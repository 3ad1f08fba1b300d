"""Synthetic generator: determinism, power-law popularity, meaningful ground truth."""

import json

import numpy as np
import pandas as pd
import pytest

from recsys.data.synthetic import generate, read_synthetic


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn")
    return generate(out, n_users=500, n_items=1000, n_interactions=30_000, zipf_a=1.1, seed=3, chunk_size=7000)


def test_files_and_determinism(syn, tmp_path):
    again = generate(tmp_path, n_users=500, n_items=1000, n_interactions=30_000, zipf_a=1.1, seed=3, chunk_size=7000)
    a, b = pd.read_parquet(syn / "interactions.parquet"), pd.read_parquet(again / "interactions.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 30_000 and a.user_idx.between(0, 499).all() and a.item_idx.between(0, 999).all()
    assert np.load(syn / "item_factors.npy").shape == (1000, 16) and np.load(syn / "item_factors.npy").dtype == np.float32
    assert json.loads((syn / "config.json").read_text())["seed"] == 3
    items = pd.read_parquet(syn / "items.parquet")
    assert len(items) == 1000 and items.text.iloc[0].endswith(".") and "Genres:" in items.text.iloc[0]


def test_popularity_is_heavy_tailed(syn):
    counts = np.sort(np.bincount(pd.read_parquet(syn / "interactions.parquet").item_idx, minlength=1000))[::-1]
    top = counts[:10].sum() / counts.sum()  # top 1% of items
    assert top > 0.2, top  # uniform would give 0.01
    # Slope of log count vs log rank over the head is close to -zipf_a (candidates are drawn by Zipf).
    ranks = np.arange(1, 51)
    slope = np.polyfit(np.log(ranks), np.log(counts[:50]), 1)[0]
    assert -1.6 < slope < -0.6, slope


def test_ground_truth_factors_explain_choices(syn):
    inter = pd.read_parquet(syn / "interactions.parquet")
    uf, itf = np.load(syn / "user_factors.npy"), np.load(syn / "item_factors.npy")
    chosen = np.einsum("bd,bd->b", uf[inter.user_idx], itf[inter.item_idx])
    rng = np.random.default_rng(0)
    pop = np.load(syn / "item_popularity.npy").astype(np.float64)
    other = rng.choice(1000, size=len(inter), p=pop / pop.sum())  # same popularity, no preference
    control = np.einsum("bd,bd->b", uf[inter.user_idx], itf[other])
    assert chosen.mean() > control.mean() + 0.3


def test_read_synthetic_is_cached_and_keeps_truth_ids(tmp_path):
    ds = read_synthetic(tmp_path, n_users=50, n_items=40, n_interactions=800, seed=0)
    raw = ds.meta.source.split(":", 1)[1]
    stamp = (tmp_path / raw.split("/")[-1] / "config.json").stat().st_mtime_ns
    ds2 = read_synthetic(tmp_path, n_users=50, n_items=40, n_interactions=800, seed=0)
    assert (tmp_path / raw.split("/")[-1] / "config.json").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(ds.interactions, ds2.interactions)
    assert ds.items.item_id.tolist() == [str(i) for i in range(40)]  # item_id = row in item_factors.npy
    assert set(ds.meta.vocabularies) >= {"categories", "gender", "occupation", "age_bucket", "year_bucket"}


def test_read_synthetic_validates_its_cache(tmp_path):
    from recsys.data.schema import DataError

    ds = read_synthetic(tmp_path, n_users=20, n_items=10, n_interactions=100, seed=0)
    raw = tmp_path / ds.meta.source.split(":", 1)[1].split("/")[-1]
    inter = pd.read_parquet(raw / "interactions.parquet")
    inter.loc[3, "item_idx"] = 10  # one past the catalogue
    inter.to_parquet(raw / "interactions.parquet", index=False)
    with pytest.raises(DataError, match=r"interactions\.parquet: item_idx outside \[0, 10\)"):
        read_synthetic(tmp_path, n_users=20, n_items=10, n_interactions=100, seed=0)
    inter.loc[3, "item_idx"] = 0
    inter["value"] = inter["value"].astype("float32")
    inter.loc[5, "value"] = np.inf
    inter.to_parquet(raw / "interactions.parquet", index=False)
    with pytest.raises(DataError, match=r"interactions\.parquet: row 5: value inf must be finite"):
        read_synthetic(tmp_path, n_users=20, n_items=10, n_interactions=100, seed=0)
