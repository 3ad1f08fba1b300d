"""FAISS item index: exactness of the flat index, ANN recall, save/load round trip."""

import numpy as np
import pytest

from recsys.retrieval.index import ItemIndex, exact_topk


def clustered(n=2000, d=16, seed=0):
    """Unit vectors around 20 centres: structured like learned item embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, d))
    x = centres[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_flat_is_exact_and_maps_ids():
    x = clustered(200)
    ids = np.arange(200) * 3 + 7  # a subset-style id map
    q = clustered(5, seed=1)
    scores, items = ItemIndex("flat", device="cpu").build(x, ids).search(q, 10)
    brute = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10]
    assert np.array_equal(items, ids[brute])
    assert np.allclose(scores, np.take_along_axis(q @ x.T, brute, 1), atol=1e-5)


@pytest.mark.parametrize("kind,params,min_recall", [
    ("ivf_flat", dict(nlist=32, nprobe=8), 0.9),
    ("ivf_pq", dict(nlist=32, nprobe=8, pq_m=8), 0.5),
    ("hnsw", dict(hnsw_m=16, ef_search=64), 0.9),
])
def test_ann_recall_against_exact(kind, params, min_recall):
    x, q = clustered(), clustered(50, seed=2)
    truth = exact_topk(x, q, 10)
    found = ItemIndex(kind, device="cpu", **params).build(x).search(q, 10)[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])
    assert recall >= min_recall


def test_more_probes_never_lower_ivf_recall():
    x, q = clustered(), clustered(50, seed=3)
    truth = exact_topk(x, q, 20)
    idx = ItemIndex("ivf_flat", nlist=40, device="cpu").build(x)
    recalls = []
    for nprobe in (1, 4, 40):
        idx.set_search_params(nprobe=nprobe)
        found = idx.search(q, 20)[1]
        recalls.append(np.mean([len(set(a) & set(b)) / 20 for a, b in zip(found, truth)]))
    assert recalls[0] <= recalls[1] <= recalls[2] == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["flat", "ivf_flat", "ivf_pq", "hnsw"])
def test_save_load_round_trip(tmp_path, kind):
    x, q = clustered(500), clustered(7, seed=4)
    idx = ItemIndex(kind, nlist=8, nprobe=3, pq_m=4, hnsw_m=8, ef_search=20, device="cpu").build(x, np.arange(500) + 1000)
    s1, i1 = idx.search(q, 15)
    idx.save(tmp_path / "ix")
    back = ItemIndex.load(tmp_path / "ix")
    s2, i2 = back.search(q, 15)
    assert back.config == idx.config
    assert np.array_equal(i1, i2) and np.array_equal(s1, s2)


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown index kind"):
        ItemIndex("lsh")
    with pytest.raises(ValueError, match="pq_m=5 must divide"):
        ItemIndex("ivf_pq", pq_m=5, device="cpu").build(clustered(200))
    with pytest.raises(ValueError, match="finite"):
        ItemIndex("flat", device="cpu").build(np.full((3, 4), np.nan, np.float32))
    with pytest.raises(FileNotFoundError, match="index.faiss"):
        ItemIndex.load("/nonexistent/dir")
