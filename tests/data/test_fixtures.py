"""The shared fixtures are what they claim to be."""

import numpy as np


def test_tiny_dataset_loo_split(tiny_dataset):
    ds, split = tiny_dataset
    assert (ds.meta.n_users, ds.meta.n_items, ds.meta.n_interactions) == (5, 8, 18)
    # item_id "k" -> item_idx k (ids sort numerically), user likewise.
    assert ds.items["item_id"].tolist() == [str(i) for i in range(8)]
    test = dict(zip(split.test["user_idx"], split.test["item_idx"]))
    valid = dict(zip(split.valid["user_idx"], split.valid["item_idx"]))
    assert test == {0: 3, 1: 0, 2: 7, 4: 2}
    assert valid == {0: 2, 1: 5, 2: 6, 4: 4}  # u4: i1 and i4 tie at t=4, i1's row comes first
    assert sorted(split.train[split.train.user_idx == 3]["item_idx"]) == [3, 7]
    assert len(split.train) == 18 - 8


def test_tiny_dir_roundtrip(tiny_dir, tiny_dataset):
    from recsys.data.io import load_dataset, load_split

    ds, split = tiny_dataset
    loaded = load_dataset(tiny_dir)
    assert loaded.interactions.equals(ds.interactions)
    assert loaded.items["categories"].tolist() == ds.items["categories"].tolist()
    assert load_split(tiny_dir, "loo").test.equals(split.test)


def test_ml100k_fixture(ml100k, ml100k_split):
    m = ml100k.meta
    assert (m.n_users, m.n_items, m.n_interactions) == (943, 1349, 99287)
    assert len(ml100k_split.test) == len(ml100k_split.valid) == 943
    assert len(ml100k_split.train) + 2 * 943 == m.n_interactions
    assert np.array_equal(np.sort(ml100k_split.test["user_idx"].to_numpy()), np.arange(943))


def test_ml100k_text_fixture_matches_training_config(ml100k_data_root, ml100k_dir_text):
    """The fixture is cached under the key the real config computes: preparing again is a no-op."""
    import time

    from recsys.data.prepare import prepare_from_config
    from recsys.data.io import load_text_embeddings

    emb = load_text_embeddings(ml100k_dir_text)
    assert emb.shape == (1349, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    t0 = time.perf_counter()
    assert prepare_from_config("ml100k", ml100k_data_root) == ml100k_dir_text
    assert time.perf_counter() - t0 < 5.0  # cache hit: no re-embedding (that takes ~25 s)
