"""Two-stage ranking report on MovieLens-100K: retriever alone vs + DLRM vs + DCN-v2.

    python scripts/run_ranking.py                       # two-tower retriever (the configs' default)
    python scripts/run_ranking.py --retriever itemknn   # ItemKNN retriever instead
    python scripts/run_ranking.py -o trainer.max_epochs=4

Composes ``experiment=ml100k/{dlrm,dcn}`` from the real configs and does what
``recsys.train.run`` does for a fitted recommender (leave-one-out,
full ranking over all items, consumed items masked), evaluates the same
fitted serving retriever alone with the same ``Evaluator``, adds the
ranking-stage AUC on the candidates, prints the markdown table (pasted into
``experiments/ml100k/ranking.md`` with the discussion) and writes every metric to
the JSON named by ``--out`` (``.md`` replaced by ``.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "offline")
ROOT = Path(__file__).resolve().parents[1]
RETRIEVERS = {
    "two_tower": [],
    "itemknn": ["~model.module.retriever", "+model.module.retriever={_target_:recsys.models.itemknn.ItemKNN,_partial_:true,k:50}"],
}
COLS = ["ndcg@10", "recall@10", "mrr@10"]


def compose(experiment: str, overrides: list[str], out: Path):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = hcompose("train", overrides=[f"experiment={experiment}", "logger=none", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        cfg.paths.data_dir = os.environ.get("RECSYS_DATA", str(ROOT / "data"))
    return cfg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--retriever", choices=sorted(RETRIEVERS), default="two_tower")
    p.add_argument("-o", "--override", action="append", default=[], help="extra Hydra override")
    p.add_argument("--out", default=str(ROOT / "experiments" / "ml100k" / "ranking.md"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    import torch

    from hydra.utils import instantiate

    from recsys.core.inject import instantiate_with
    from recsys.data.io import load_dataset, load_split
    from recsys.eval.evaluator import Evaluator

    torch.set_num_threads(args.threads)
    rows, allm, fitted = [], {}, None
    for exp, label in [("ml100k/dlrm", "DLRM (dot)"), ("ml100k/dcn", "DCN-v2 (cross)")]:
        t0 = time.perf_counter()
        cfg = compose(exp, RETRIEVERS[args.retriever] + args.override, ROOT / "outputs" / "ranking" / exp.replace("/", "_"))
        dataset_dir = Path(instantiate(cfg.data))
        ds, sp = load_dataset(dataset_dir), load_split(dataset_dir, cfg.data.split.name)
        # Build as a partial, then pass meta: handing DatasetMeta to instantiate() makes Hydra
        # re-instantiate the `_target_` nodes recorded in meta.extra["prepare"].
        model = instantiate_with(cfg.model.module, meta=ds.meta, dataset_dir=str(dataset_dir))
        if fitted:  # same seed and split: reuse the first run's retrievers instead of training them again
            model.use_fitted_retrievers(*fitted)
        model.fit(ds, sp)
        fitted = (model.inner_retriever, model.retriever)
        ev = Evaluator(ks=(10,), progress=False)
        metrics = {**ev.evaluate(model, ds, sp, "valid"), **ev.evaluate(model, ds, sp, "test")}
        if not rows:  # the serving retriever alone, once (both runs fit it with the same seed)
            base = ev.evaluate(model.retriever, ds, sp, "test")
            rows.append((f"{args.retriever} alone", base, {}))
            allm["retriever"] = base
        cm = model.candidate_metrics(ds, sp, "test")
        metrics.update(cm, **model.fit_stats, wall_s=time.perf_counter() - t0)
        rows.append((f"{args.retriever} + {label}", metrics, cm))
        allm[exp] = metrics
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(allm, indent=2, sort_keys=True, default=str))
    lines = [
        "| stage | NDCG@10 | Recall@10 | MRR@10 | ranking AUC (ranker) | ranking AUC (retriever rank) |",
        "|---|---|---|---|---|---|",
    ]
    for name, m, cm in rows:
        auc = f"{cm['test/rank_auc']:.4f}" if cm else "-"
        rauc = f"{cm['test/retriever_auc']:.4f}" if cm else "-"
        lines.append(f"| {name} | " + " | ".join(f"{m[f'test/{c}']:.4f}" for c in COLS) + f" | {auc} | {rauc} |")
    print("\n".join(lines))
    print(f"python {platform.python_version()}, torch {torch.__version__}, written {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
