"""FAISS item index chosen by config: exact inner product, IVF-Flat, IVF-PQ, HNSW.

The index stores item embeddings (N, D) float32 and answers top-k inner
product queries. Positions inside FAISS are mapped back to ``item_idx``
through an id map (so an index may hold a subset of the catalogue, e.g.
only available items). On a machine where faiss sees GPUs
(``faiss.get_num_gpus() > 0``, the faiss-gpu build) the flat and IVF
indices are moved to GPU 0; HNSW has no GPU version and stays on CPU.

GPU limits (faiss v1.15 ``GpuIndexIVFPQ::verifyPQSettings_`` and
``validateKSelect``/``validateNProbe``, non-cuVS build) are checked by
``gpu_problems`` before faiss sees the parameters: IVF-PQ needs 8 bits per
code (so at least 256 vectors to train the codebooks) and ``pq_m`` in
``GPU_PQ_M``, with float16 lookup tables from ``pq_m`` >= 56 (their float32
tables would not fit in 48 KiB of shared memory); ``k`` and ``nprobe`` are at
most 2048. ``device="cuda"`` turns a problem into a ``ValueError``;
``device="auto"`` keeps that index on the CPU and logs why (documented
fallback). All GPU indices of a process share one ``StandardGpuResources``
(each one reserves scratch memory) and one lock: faiss GPU objects are not
thread-safe, and the server searches from a thread pool.

On disk (``save(dir)``)::

    index.faiss     the CPU index (GPU indices are copied back before writing)
    id_map.npy      (N,) int64 item_idx of each FAISS row
    index.json      the constructor arguments (kind, nlist, m, ...), to rebuild or reload, plus
                    ``built_on`` (``cuda`` or ``cpu``: where this index was built and searched,
                    what ``scripts/gpu_smoke.sh`` checks), ``n_items`` and ``dim``

Papers: IVF-PQ is Jegou, Douze, Schmid, "Product Quantization for Nearest
Neighbor Search", TPAMI 2011; HNSW is Malkov, Yashunin, TPAMI 2018.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

KINDS = ("flat", "ivf_flat", "ivf_pq", "hnsw")
GPU_PQ_M = (1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96)  # faiss IVFPQ::isSupportedPQCodeLength
GPU_FLOAT16_LUT_FROM_M = 56  # 256 codes x pq_m x 4 B > 48 KiB of shared memory from here on
GPU_MAX_K = 2048  # GPU_MAX_SELECTION_K: the most k (and nprobe) a GPU index selects


class NoGpuIndexError(RuntimeError):
    """``device="cuda"`` where faiss sees no GPU: a setup problem, reported by entry points as one line."""

_GPU = {"resources": None, "lock": threading.RLock()}  # re-entrant: _set_index holds it while making resources


def _gpu_resources():
    """The process's one StandardGpuResources (made on first use)."""
    with _GPU["lock"]:
        if _GPU["resources"] is None:
            _GPU["resources"] = _faiss().StandardGpuResources()
        return _GPU["resources"]


def gpu_problems(kind: str, n: int, nprobe: int, pq_m: int, pq_nbits: int) -> list[str]:
    """Why an index of ``kind`` over ``n`` vectors could not live on a faiss GPU (empty: it can).

    Pure (no faiss call), so it runs, and is tested, on any machine.
    """
    out = []
    if kind in ("ivf_flat", "ivf_pq") and not 0 < nprobe <= GPU_MAX_K:
        out.append(f"nprobe={nprobe}: a GPU IVF index probes 1..{GPU_MAX_K} cells")
    if kind == "ivf_pq":
        if pq_nbits != 8:
            out.append(f"pq_nbits={pq_nbits}: GPU IVF-PQ supports 8 bits per code only")
        if pq_m not in GPU_PQ_M:
            out.append(f"pq_m={pq_m}: GPU IVF-PQ supports pq_m in {GPU_PQ_M}")
        if n < 256:
            out.append(f"{n} vectors: 8-bit PQ codebooks need at least 256 to train")
    return out


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

    def _wants_gpu(self, problems: list[str]) -> bool:
        """Place this index: True for GPU. ``problems`` (from ``gpu_problems``) refuse cuda / fall back from auto."""
        device = self.config["device"]
        if device == "cuda" and self.kind == "hnsw":
            log.warning("hnsw index stays on the CPU: faiss has no GPU HNSW (index.device=cuda applies to flat/ivf_*)")
        if device == "cpu" or self.kind == "hnsw":
            return False
        if device == "cuda" and problems:
            raise ValueError(f"{self.kind} index on device=cuda: " + "; ".join(problems))
        faiss = _faiss()
        if device == "cuda" and faiss.get_num_gpus() == 0:
            build = "faiss-gpu" if hasattr(faiss, "StandardGpuResources") else "faiss-cpu (no GPU support)"
            raise NoGpuIndexError(f"index.device=cuda but faiss sees no GPU (installed: {build}; the GPU set is "
                                  "requirements/gpu.txt, see docs/gpu.md); index.device=auto or cpu builds on the CPU")
        if device == "auto" and faiss.get_num_gpus() > 0 and problems:
            log.warning("%s index stays on the CPU: %s", self.kind, "; ".join(problems))
            return False
        return faiss.get_num_gpus() > 0

    def build(self, emb: np.ndarray, ids: np.ndarray | None = None) -> "ItemIndex":
        """emb (N, D) float32 item embeddings; ids (N,) their item_idx (default 0..N-1)."""
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        if emb.ndim != 2 or not np.isfinite(emb).all():
            raise ValueError(f"item embeddings must be a finite (N, D) array, got shape {emb.shape}")
        n, d = emb.shape
        self.id_map = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        if len(self.id_map) != n:
            raise ValueError(f"{len(self.id_map)} ids for {n} embeddings")
        c = self.config
        if c["kind"] == "ivf_pq" and d % c["pq_m"]:
            raise ValueError(f"ivf_pq: pq_m={c['pq_m']} must divide the embedding dim {d}")
        gpu = self._wants_gpu(gpu_problems(c["kind"], n, c["nprobe"], c["pq_m"], c["pq_nbits"]))  # before faiss sees them
        faiss = _faiss()
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
                # PQ training needs ~2^nbits points: small catalogues get fewer bits on CPU; the GPU needs 8.
                nbits = 8 if gpu else min(c["pq_nbits"], max(1, int(math.log2(max(n, 2)) - 1)))
                index = faiss.IndexIVFPQ(quantizer, d, nlist, c["pq_m"], nbits, ip)
            index.cp.seed = c["seed"]
            index.train(emb)
        index.add(emb)
        self._set_index(index, gpu)
        return self

    def _set_index(self, index, gpu: bool) -> None:
        faiss = _faiss()
        self.on_gpu = False
        if gpu:
            co = faiss.GpuClonerOptions()
            # Only IVF-PQ's lookup tables: for flat/IVF-Flat this flag would store the vectors in float16.
            co.useFloat16 = self.kind == "ivf_pq" and self.config["pq_m"] >= GPU_FLOAT16_LUT_FROM_M
            with _GPU["lock"]:
                index = faiss.index_cpu_to_gpu(_gpu_resources(), 0, index, co)
            self.on_gpu = True
        self.index = index
        self.set_search_params()

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change the recall/speed knob of a built index (nprobe for IVF, efSearch for HNSW)."""
        faiss = _faiss()
        if nprobe is not None:
            if self.on_gpu and not 0 < nprobe <= GPU_MAX_K:
                raise ValueError(f"nprobe={nprobe}: a GPU IVF index probes 1..{GPU_MAX_K} cells")
            self.config["nprobe"] = nprobe
        if ef_search is not None:
            self.config["ef_search"] = ef_search
        if self.kind in ("ivf_flat", "ivf_pq"):
            if self.on_gpu:
                with _GPU["lock"]:
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
        if self.on_gpu:
            if k > GPU_MAX_K:
                raise ValueError(f"k={k}: a faiss GPU index returns at most {GPU_MAX_K} results (build with device=cpu)")
            with _GPU["lock"]:
                scores, pos = self.index.search(q, k)
        else:
            scores, pos = self.index.search(q, k)
        items = np.where(pos >= 0, self.id_map[np.clip(pos, 0, None)], -1)
        return scores, items

    def save(self, directory: str | Path) -> Path:
        faiss = _faiss()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        if self.on_gpu:
            with _GPU["lock"]:
                cpu = faiss.index_gpu_to_cpu(self.index)
        else:
            cpu = self.index
        faiss.write_index(cpu, str(d / "index.faiss"))
        np.save(d / "id_map.npy", self.id_map)
        meta = {**self.config, "built_on": "cuda" if self.on_gpu else "cpu", "n_items": len(self), "dim": int(cpu.d)}
        (d / "index.json").write_text(json.dumps(meta, indent=2))
        return d

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> "ItemIndex":
        faiss = _faiss()
        d = Path(directory)
        for f in ("index.faiss", "id_map.npy", "index.json"):
            if not (d / f).exists():
                raise FileNotFoundError(f"{d / f}: missing; an index directory holds index.faiss, id_map.npy, index.json")
        cfg = json.loads((d / "index.json").read_text())
        for key in ("built_on", "n_items", "dim"):
            cfg.pop(key, None)
        if device is not None:
            cfg["device"] = device
        obj = cls(**cfg)
        obj.id_map = np.load(d / "id_map.npy")
        index = faiss.read_index(str(d / "index.faiss"))
        nbits = int(faiss.downcast_index(index).pq.nbits) if obj.kind == "ivf_pq" else 8  # as built (CPU may use fewer)
        obj._set_index(index, obj._wants_gpu(gpu_problems(obj.kind, len(obj.id_map), cfg["nprobe"], cfg["pq_m"], nbits)))
        return obj


def exact_topk(items: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k positions by inner product with a flat index: (B, k) int64 (ground truth for ANN recall)."""
    return ItemIndex("flat", device="cpu").build(items).search(queries, k)[1]
