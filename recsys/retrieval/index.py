"""FAISS item index chosen by config: exact inner product, IVF-Flat, IVF-PQ, HNSW.

The index stores item embeddings (N, D) float32 and answers top-k inner
product queries. Positions inside FAISS are mapped back to ``item_idx``
through an id map (so an index may hold a subset of the catalogue, e.g.
only available items). On a machine where faiss sees GPUs
(``faiss.get_num_gpus() > 0``, the faiss-gpu build) the flat and IVF
indices are moved to GPU 0; HNSW has no GPU version and stays on CPU.

On disk (``save(dir)``)::

    index.faiss     the CPU index (GPU indices are copied back before writing)
    id_map.npy      (N,) int64 item_idx of each FAISS row
    index.json      the constructor arguments (kind, nlist, m, ...), to rebuild or reload

Papers: IVF-PQ is Jegou, Douze, Schmid, "Product Quantization for Nearest
Neighbor Search", TPAMI 2011; HNSW is Malkov, Yashunin, TPAMI 2018.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

KINDS = ("flat", "ivf_flat", "ivf_pq", "hnsw")


def _faiss():
    import faiss  # heavy, and GPU-specific in the GPU environment: import on use

    return faiss


class ItemIndex:
    """Args:
        kind: ``flat`` (exact, IndexFlatIP), ``ivf_flat``, ``ivf_pq`` or ``hnsw``.
        nlist: IVF cells; None = about 4 * sqrt(N), capped so every cell gets >= 39 training points.
        nprobe: IVF cells visited per query (the recall/speed knob).
        pq_m, pq_nbits: IVF-PQ sub-quantisers (must divide D) and bits per code.
        hnsw_m, ef_construction, ef_search: HNSW graph degree and beam widths.
        device: ``auto`` (GPU when faiss has one), ``cpu`` or ``cuda``.
    """

    def __init__(self, kind: str = "flat", nlist: int | None = None, nprobe: int = 8, pq_m: int = 8,
                 pq_nbits: int = 8, hnsw_m: int = 32, ef_construction: int = 200, ef_search: int = 64,
                 device: str = "auto", seed: int = 0) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}; expected one of {KINDS}")
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
        self.config = dict(kind=kind, nlist=nlist, nprobe=nprobe, pq_m=pq_m, pq_nbits=pq_nbits, hnsw_m=hnsw_m,
                           ef_construction=ef_construction, ef_search=ef_search, device=device, seed=seed)
        self.index = None
        self.id_map: np.ndarray | None = None
        self.on_gpu = False

    @property
    def kind(self) -> str:
        return self.config["kind"]

    def __len__(self) -> int:
        return 0 if self.id_map is None else len(self.id_map)

    def _nlist(self, n: int) -> int:
        nlist = self.config["nlist"] or int(4 * math.sqrt(n))
        return max(1, min(nlist, n // 39))  # faiss wants >= 39 points per centroid

    def build(self, emb: np.ndarray, ids: np.ndarray | None = None) -> "ItemIndex":
        """emb (N, D) float32 item embeddings; ids (N,) their item_idx (default 0..N-1)."""
        faiss = _faiss()
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        if emb.ndim != 2 or not np.isfinite(emb).all():
            raise ValueError(f"item embeddings must be a finite (N, D) array, got shape {emb.shape}")
        n, d = emb.shape
        self.id_map = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        if len(self.id_map) != n:
            raise ValueError(f"{len(self.id_map)} ids for {n} embeddings")
        c = self.config
        ip = faiss.METRIC_INNER_PRODUCT
        if c["kind"] == "flat":
            index = faiss.IndexFlatIP(d)
        elif c["kind"] == "hnsw":
            index = faiss.IndexHNSWFlat(d, c["hnsw_m"], ip)
            index.hnsw.efConstruction = c["ef_construction"]
        else:
            quantizer = faiss.IndexFlatIP(d)
            nlist = self._nlist(n)
            if c["kind"] == "ivf_flat":
                index = faiss.IndexIVFFlat(quantizer, d, nlist, ip)
            else:
                if d % c["pq_m"]:
                    raise ValueError(f"ivf_pq: pq_m={c['pq_m']} must divide the embedding dim {d}")
                nbits = min(c["pq_nbits"], max(1, int(math.log2(max(n, 2)) - 1)))  # PQ training needs ~2^nbits points
                index = faiss.IndexIVFPQ(quantizer, d, nlist, c["pq_m"], nbits, ip)
            index.cp.seed = c["seed"]
            index.train(emb)
        index.add(emb)
        self._set_index(index)
        return self

    def _set_index(self, index) -> None:
        faiss = _faiss()
        want_gpu = self.config["device"] == "cuda" or (self.config["device"] == "auto" and faiss.get_num_gpus() > 0)
        if want_gpu and self.kind != "hnsw":
            if faiss.get_num_gpus() == 0:
                raise RuntimeError("index device=cuda but faiss sees no GPU (is faiss-gpu installed?)")
            self._res = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._res, 0, index)
            self.on_gpu = True
        self.index = index
        self.set_search_params()

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change the recall/speed knob of a built index (nprobe for IVF, efSearch for HNSW)."""
        faiss = _faiss()
        if nprobe is not None:
            self.config["nprobe"] = nprobe
        if ef_search is not None:
            self.config["ef_search"] = ef_search
        if self.kind in ("ivf_flat", "ivf_pq"):
            if self.on_gpu:
                faiss.GpuParameterSpace().set_index_parameter(self.index, "nprobe", self.config["nprobe"])
            else:
                self.index.nprobe = self.config["nprobe"]
        elif self.kind == "hnsw":
            self.index.hnsw.efSearch = self.config["ef_search"]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries (B, D) -> scores (B, k) float32, item_idx (B, k) int64 (-1 where fewer than k found)."""
        if self.index is None:
            raise RuntimeError("index is empty: call build() or load() first")
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, len(self))
        scores, pos = self.index.search(q, k)
        items = np.where(pos >= 0, self.id_map[np.clip(pos, 0, None)], -1)
        return scores, items

    def save(self, directory: str | Path) -> Path:
        faiss = _faiss()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        cpu = faiss.index_gpu_to_cpu(self.index) if self.on_gpu else self.index
        faiss.write_index(cpu, str(d / "index.faiss"))
        np.save(d / "id_map.npy", self.id_map)
        (d / "index.json").write_text(json.dumps({**self.config, "n_items": len(self), "dim": int(cpu.d)}, indent=2))
        return d

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> "ItemIndex":
        faiss = _faiss()
        d = Path(directory)
        for f in ("index.faiss", "id_map.npy", "index.json"):
            if not (d / f).exists():
                raise FileNotFoundError(f"{d / f}: missing; an index directory holds index.faiss, id_map.npy, index.json")
        cfg = json.loads((d / "index.json").read_text())
        cfg.pop("n_items", None), cfg.pop("dim", None)
        if device is not None:
            cfg["device"] = device
        obj = cls(**cfg)
        obj.id_map = np.load(d / "id_map.npy")
        obj._set_index(faiss.read_index(str(d / "index.faiss")))
        return obj


def exact_topk(items: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k positions by inner product with a flat index: (B, k) int64 (ground truth for ANN recall)."""
    return ItemIndex("flat", device="cpu").build(items).search(queries, k)[1]
