"""FAISS item index: exactness of the flat index, ANN recall, save/load round trip."""

import numpy as np
import pytest

from recsys.retrieval.index import ItemIndex, NoGpuIndexError, exact_topk


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


# ---- GPU parameters, validated before faiss sees them (runs on CPU) ----------------------


def test_gpu_problems_names_each_faiss_gpu_limit():
    from recsys.retrieval.index import GPU_MAX_K, gpu_problems

    assert gpu_problems("ivf_pq", 5000, 8, 8, 8) == []
    assert gpu_problems("flat", 10, 10**6, 7, 3) == []  # flat has no such knobs
    assert gpu_problems("hnsw", 10, 10**6, 7, 3) == []
    (p,) = gpu_problems("ivf_flat", 5000, GPU_MAX_K + 1, 8, 8)
    assert "nprobe=2049" in p
    probs = gpu_problems("ivf_pq", 200, 8, 6, 4)
    assert any("pq_nbits=4" in x for x in probs) and any("pq_m=6" in x for x in probs)
    assert any("200 vectors" in x and "256" in x for x in probs)


def test_device_cuda_refuses_bad_gpu_params_before_faiss_is_asked():
    """On this CPU box faiss would say 'no GPU'; the parameter error must come first."""
    with pytest.raises(ValueError, match="pq_m=6: GPU IVF-PQ supports"):
        ItemIndex("ivf_pq", pq_m=6, device="cuda").build(clustered(600, d=12))
    with pytest.raises(ValueError, match="need at least 256"):
        ItemIndex("ivf_pq", pq_m=4, device="cuda").build(clustered(200))  # CPU would clamp to fewer bits
    with pytest.raises(NoGpuIndexError, match="faiss sees no GPU .*requirements/gpu.txt.*index.device=auto or cpu"):
        ItemIndex("ivf_pq", pq_m=4, device="cuda").build(clustered(600))  # valid: only the GPU is missing


def test_the_index_entry_point_reports_a_missing_gpu_in_one_line(monkeypatch):
    """`python -m recsys.index index.device=cuda` without faiss-gpu: SystemExit with the message, no traceback."""
    import recsys.index as entry
    from omegaconf import OmegaConf

    def no_gpu(cfg):
        ItemIndex("flat", device="cuda").build(clustered(100))

    monkeypatch.setattr(entry, "run", no_gpu)
    with pytest.raises(SystemExit) as exit_:
        entry.main(OmegaConf.create({}))  # hydra.main passes a given config straight to the function
    assert str(exit_.value).startswith("recsys.index: NoGpuIndexError: index.device=cuda but faiss sees no GPU")


def test_index_json_records_where_it_was_built(tmp_path, caplog):
    import json

    ItemIndex("ivf_flat", nlist=8, device="auto").build(clustered(600)).save(tmp_path / "ix")
    assert json.loads((tmp_path / "ix" / "index.json").read_text())["built_on"] == "cpu"
    assert ItemIndex.load(tmp_path / "ix").config["device"] == "auto"  # built_on is a record, not an argument
    with caplog.at_level("WARNING"):
        assert not ItemIndex("hnsw", hnsw_m=8, device="cuda").build(clustered(300)).on_gpu
    assert "faiss has no GPU HNSW" in caplog.text  # said, not silent


class _FakeGpuFaiss:
    """The faiss-gpu calls ItemIndex makes, around a real CPU index (this box has no GPU)."""

    def __init__(self, monkeypatch):
        import faiss

        self.resources, self.cloned = [], []
        monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
        monkeypatch.setattr(faiss, "StandardGpuResources", lambda: self.resources.append(object()) or self.resources[-1], raising=False)
        monkeypatch.setattr(faiss, "GpuClonerOptions", lambda: type("Co", (), {"useFloat16": False})(), raising=False)
        monkeypatch.setattr(faiss, "index_cpu_to_gpu", lambda res, dev, index, co: self.cloned.append((res, co.useFloat16)) or index, raising=False)
        monkeypatch.setattr(faiss, "index_gpu_to_cpu", lambda index: index, raising=False)
        space = type("Space", (), {"set_index_parameter": lambda s, index, name, v: setattr(index, name, v)})
        monkeypatch.setattr(faiss, "GpuParameterSpace", space, raising=False)
        monkeypatch.setattr("recsys.retrieval.index._GPU", {"resources": None, "lock": __import__("threading").RLock()})


def test_auto_falls_back_to_cpu_when_the_gpu_cannot_hold_it(monkeypatch, caplog):
    gpu = _FakeGpuFaiss(monkeypatch)
    with caplog.at_level("WARNING"):
        idx = ItemIndex("ivf_pq", pq_m=4, device="auto").build(clustered(200))
    assert not idx.on_gpu and gpu.cloned == [] and "stays on the CPU" in caplog.text
    assert ItemIndex("hnsw", hnsw_m=8, device="auto").build(clustered(300)).on_gpu is False  # no GPU HNSW


def test_gpu_indices_share_resources_and_use_float16_tables_only_for_wide_pq(monkeypatch):
    gpu = _FakeGpuFaiss(monkeypatch)
    x = clustered(1000, d=64)
    wide = ItemIndex("ivf_pq", nlist=8, pq_m=64, device="auto").build(x)
    narrow = ItemIndex("ivf_pq", nlist=8, pq_m=16, device="auto").build(x)
    flat = ItemIndex("flat", device="auto").build(clustered(3000, d=8))
    assert wide.on_gpu and narrow.on_gpu and flat.on_gpu
    assert len(gpu.resources) == 1 and all(res is gpu.resources[0] for res, _ in gpu.cloned)
    assert [f16 for _, f16 in gpu.cloned] == [True, False, False]  # flat vectors never go float16
    with pytest.raises(ValueError, match="at most 2048"):
        flat.search(clustered(2, d=8), 2049)
    with pytest.raises(ValueError, match="nprobe=4096"):
        narrow.set_search_params(nprobe=4096)
    assert narrow.search(x[:2], 5)[1].shape == (2, 5)
