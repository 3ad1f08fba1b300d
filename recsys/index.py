"""Index a trained two-tower: ``python -m recsys.index run=outputs/<task>/<run_name> index=ivf_flat``.

1. loads the run's checkpoint (``checkpoint=best`` by default; or ``ckpt=<file>``) and
   embeds the whole catalogue with the item tower;
2. builds the FAISS index chosen by ``configs/index/<kind>.yaml`` (GPU when faiss has one);
3. writes ``<run>/index/<kind>/{index.faiss, id_map.npy, index.json, item_embeddings.npy,
   provenance.json}`` (built beside it and swapped in complete); the provenance records the
   checkpoint's file hash, the run's config hash and the dataset fingerprint, which
   ``recsys.retrieval.artifacts.load_two_tower_run`` checks;
4. measures ANN recall@k against exact search with real user vectors (the
   test-time histories of the run's dataset) and queries/second, over the
   config's sweep of nprobe / efSearch, printing the curve and saving ``ann_sweep.png``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def run_dir_of(ckpt: Path) -> Path:
    """outputs/<task>/<run>/checkpoints/x.ckpt -> outputs/<task>/<run>; else the checkpoint's folder."""
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def checkpoint_of(cfg: DictConfig) -> Path:
    """The checkpoint file named by ``run=`` (+ ``checkpoint=``) or ``ckpt=``."""
    from recsys.utils import run_dir as R

    if cfg.get("run") and cfg.get("ckpt"):
        from recsys.utils.cli import UsageError

        raise UsageError("give either run=<run dir> (with checkpoint=best|last|epoch_NNN) or ckpt=<file>, not both")
    if cfg.get("run"):
        ckpt = R.checkpoint_file(R.resolve_run(cfg.run), str(cfg.checkpoint))
    elif cfg.get("ckpt"):
        ckpt = Path(cfg.ckpt)
    else:
        raise ValueError("say which model to index: run=outputs/<task>/<run_name> (best checkpoint) or ckpt=<file>")
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: checkpoint not found")
    return ckpt


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
    from recsys.retrieval.artifacts import write_index_provenance
    from recsys.utils.artifacts import load_torch, read_provenance, replace_dir, temp_dir_beside

    ckpt_path = checkpoint_of(cfg)
    run_dir = run_dir_of(ckpt_path)
    ckpt = load_torch(ckpt_path, trusted=bool(cfg.get("trusted", False)))
    dataset_dir = cfg.get("dataset_dir")
    if not dataset_dir and (run_dir / "provenance.json").is_file():
        dataset_dir = read_provenance(run_dir).extra.get("dataset_dir")
    dataset_dir = dataset_dir or ckpt["hyper_parameters"].get("dataset_dir")
    model = LitTwoTower.from_checkpoint(ckpt, dataset_dir=dataset_dir).eval()
    items = model.item_embeddings().cpu().numpy().astype(np.float32)  # (N, D)

    index_cfg = OmegaConf.to_container(cfg.index, resolve=True)
    values = index_cfg.pop("sweep", None) or []
    index = instantiate(index_cfg).build(items)
    out = Path(cfg.out_dir) if cfg.get("out_dir") else run_dir / "index" / index.kind
    tmp = temp_dir_beside(out)
    try:  # complete (files + provenance) before it replaces an index a server may be reading
        index.save(tmp)
        np.save(tmp / "item_embeddings.npy", items)
        prov = write_index_provenance(tmp, ckpt_path, ckpt, dataset_dir, index_cfg)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote %s index of %d items (dim %d, %s) from %s (hash %s) to %s", index.kind, len(index), items.shape[1],
             "GPU" if index.on_gpu else "CPU", ckpt_path, prov.parent_hash, out)

    queries = user_queries(model, dataset_dir, cfg.split, cfg.n_queries) if dataset_dir else items[: cfg.n_queries]
    rows = ann_eval.evaluate(items, queries, index, k=min(cfg.k, len(index)), values=values)
    table = ann_eval.format_table(rows, min(cfg.k, len(index)))
    print(table)
    plot = ann_eval.plot(rows, out / "ann_sweep.png", title=f"{index.kind}: {len(index)} items, {len(queries)} queries")
    (out / "ann_sweep.json").write_text(json.dumps(rows, indent=2))
    print(f"index: {out}\n  built from {ckpt_path} (file hash {prov.parent_hash}, run config {prov.config_hash}, "
          f"dataset {prov.dataset_fingerprint})")
    metrics = {f"ann/{index.kind}/recall@{cfg.k}": rows[-1]["recall"], f"ann/{index.kind}/qps": rows[-1]["qps"]}
    return metrics, {"index_dir": str(out), "item_embeddings": str(out / "item_embeddings.npy"),
                     "plot": str(plot), "table": table, "index": index, "provenance": prov}


@hydra.main(version_base="1.3", config_path="../configs", config_name="build_index")
def main(cfg: DictConfig) -> None:
    from recsys.retrieval.index import NoGpuIndexError

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from recsys.utils.cli import user_errors

    with user_errors("recsys.index", extra=(NoGpuIndexError,)):  # setup problems: one line, no traceback
        run(cfg)


if __name__ == "__main__":
    from recsys.utils.cli import doc_on_help

    doc_on_help(__doc__)
    main()
