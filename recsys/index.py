"""Index a trained two-tower: ``python -m recsys.index ckpt=<path> index=ivf_flat``.

1. loads the ``LitTwoTower`` checkpoint and embeds the whole catalogue with the item tower;
2. builds the FAISS index chosen by ``configs/index/<kind>.yaml`` (GPU when faiss has one);
3. writes, beside the checkpoint (``<run>/``): ``item_embeddings.npy`` and
   ``index/<kind>/{index.faiss, id_map.npy, index.json}``;
4. measures ANN recall@k against exact search with real user vectors (the
   test-time histories of the checkpoint's dataset) and queries/second, over the
   config's sweep of nprobe / efSearch, printing the curve and saving ``ann_sweep.png``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def run_dir_of(ckpt: Path) -> Path:
    """outputs/<exp>/<run>/checkpoints/x.ckpt -> outputs/<exp>/<run>; else the checkpoint's folder."""
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


@torch.no_grad()
def user_queries(model, dataset_dir: str | Path, split_name: str, n: int, seed: int = 0) -> np.ndarray:
    """(n, D) user vectors from the split's test-time histories (train + valid)."""
    from recsys.data.history import History
    from recsys.data.io import load_split

    split = load_split(dataset_dir, split_name)
    hist = split.history_for("test")
    users = np.unique(hist["user_idx"].to_numpy())
    users = np.random.default_rng(seed).permutation(users)[:n]
    h = History.from_interactions(hist, users=users)
    model.eval()
    return model.user_embeddings(h.users, h).cpu().numpy().astype(np.float32)


def run(cfg: DictConfig) -> tuple[dict, dict]:
    from recsys.models.lit_two_tower import LitTwoTower
    from recsys.retrieval import ann_eval

    ckpt = Path(cfg.ckpt)
    if not ckpt.exists():
        raise FileNotFoundError(f"{ckpt}: checkpoint not found")
    overrides = {"dataset_dir": cfg.dataset_dir} if cfg.get("dataset_dir") else {}
    model = LitTwoTower.from_checkpoint(ckpt, trusted=bool(cfg.get("trusted_checkpoint", False)), **overrides).eval()
    items = model.item_embeddings().cpu().numpy().astype(np.float32)  # (N, D)
    run_dir = run_dir_of(ckpt)
    np.save(run_dir / "item_embeddings.npy", items)

    index_cfg = OmegaConf.to_container(cfg.index, resolve=True)
    values = index_cfg.pop("sweep", None) or []
    index = instantiate(index_cfg).build(items)
    out = Path(cfg.out_dir) if cfg.get("out_dir") else run_dir / "index" / index.kind
    index.save(out)
    log.info("wrote %s index of %d items (dim %d, %s) to %s", index.kind, len(index), items.shape[1],
             "GPU" if index.on_gpu else "CPU", out)

    dataset_dir = cfg.get("dataset_dir") or model.hparams.get("dataset_dir")
    queries = user_queries(model, dataset_dir, cfg.split, cfg.n_queries) if dataset_dir else items[: cfg.n_queries]
    rows = ann_eval.evaluate(items, queries, index, k=min(cfg.k, len(index)), values=values)
    table = ann_eval.format_table(rows, min(cfg.k, len(index)))
    print(table)
    plot = ann_eval.plot(rows, out / "ann_sweep.png", title=f"{index.kind}: {len(index)} items, {len(queries)} queries")
    (out / "ann_sweep.json").write_text(json.dumps(rows, indent=2))
    metrics = {f"ann/{index.kind}/recall@{cfg.k}": rows[-1]["recall"], f"ann/{index.kind}/qps": rows[-1]["qps"]}
    return metrics, {"index_dir": str(out), "item_embeddings": str(run_dir / "item_embeddings.npy"),
                     "plot": str(plot), "table": table, "index": index}


@hydra.main(version_base="1.3", config_path="../configs", config_name="build_index")
def main(cfg: DictConfig) -> None:
    torch.set_num_threads(int(__import__("os").environ.get("OMP_NUM_THREADS", "1")))
    run(cfg)


if __name__ == "__main__":
    main()
