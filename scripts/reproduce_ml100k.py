"""One command for the MovieLens-100K paper-style table (issue 7).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/reproduce_ml100k.py               # CPU, seeds 0 1 2
    .venv/bin/python scripts/reproduce_ml100k.py --quick --out /tmp/r            # a few steps of everything
    .venv/bin/python scripts/reproduce_ml100k.py --gpu                           # GPU box: trainer=gpu, vLLM
    .venv/bin/python scripts/reproduce_ml100k.py --steps report                  # rewrite README from the JSON

Steps (each timed; results go to ``<work>/reproduce.json`` as they finish, so an
interrupted run keeps what it measured and ``--steps`` can resume a subset):

1. ``prepare``   -- MovieLens-100K from the offline copy, 5-core, leave-one-out split;
2. ``train``     -- Pop, ItemKNN, BPR-MF, SASRec and the two-tower through
   ``recsys.train.run`` for every seed (fresh run directory, ``resume=false``);
3. ``index``     -- ``python -m recsys.index`` on the first seed's two-tower checkpoint;
4. ``retrieval`` -- ``scripts/retrieval_report.py`` (recall at candidate depth 10..200, merged sources);
5. ``ranking``   -- two-tower + DLRM / + DCN-v2 (``TwoStageRanker``, configs ``experiment=ml100k/{dlrm,dcn}``);
6. ``llm``       -- ``scripts/eval_llm_rerank.py``: LlamaRec protocol on a seeded sample of test users;
7. ``ablation``  -- ``scripts/ablate_pipeline.py`` on a seeded sample of users;
8. ``latency``   -- per-stage latency of the default pipeline (its own trace);
9. ``determinism`` -- BPR-MF, first seed, trained a second time: metrics must match exactly;
10. ``report``   -- ``experiments/ml100k/README.md`` + PNG plots (``scripts/reproduce_report.py``).

The epochs are chosen here (not in the experiment configs) so that the default
run fits in an hour on a shared 2-core CPU: see ``EPOCHS``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
PY = sys.executable
STEPS = ["prepare", "train", "index", "retrieval", "ranking", "llm", "ablation", "latency", "determinism", "report"]
MODELS = ["pop", "itemknn", "bpr", "sasrec", "two_tower"]
# Reproduction budget (CPU, 3 seeds, < 60 min): fewer epochs than the experiment configs' maxima
# (BPR 60, SASRec 100, two-tower 12, rankers 8), which early stopping rarely reaches anyway.
EPOCHS = {"bpr": 20, "sasrec": 15, "two_tower": 8, "ranking": 3}
QUICK = ["trainer.max_epochs=1", "trainer.limit_train_batches=3"]
ABLATION_VARIANTS = ["full (default config)", "- exploration", "- category cap", "- MMR", "- filters",
                     "item2item only, no stages"]


class Recorder:
    """reproduce.json: settings, per-step wall time and every result, rewritten after each step."""

    def __init__(self, path: Path, fresh: bool):
        self.path = path
        self.data = {} if fresh or not path.exists() else json.loads(path.read_text())
        self.data.setdefault("steps", {})

    def step(self, name: str, seconds: float, **results) -> None:
        self.data["steps"][name] = round(seconds, 1)
        self.data.update(results)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=1, default=float))


def compose(experiment: str, seed: int, overrides: list[str], run_dir: Path):
    """Config of ``python -m recsys.train experiment=<experiment> seed=<seed>`` in a fresh run dir."""
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = hcompose("train", overrides=[f"experiment={experiment}", f"seed={seed}", "logger=none",
                                           "eval.progress=false", *overrides])
    with open_dict(cfg):
        shutil.rmtree(run_dir, ignore_errors=True)  # no stale checkpoints, no resume: reruns are identical
        cfg.paths.output_dir = str(run_dir)
        cfg.resume = False
    return cfg


def numbers(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def sh(cmd: list[str], log: Path) -> None:
    """Run a sub-step script; its output goes to a log file, a failure names that file."""
    print("$", " ".join(cmd), flush=True)
    with open(log, "w") as f:
        rc = subprocess.call(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise RuntimeError(f"{' '.join(cmd[:2])} failed (exit {rc}); log {log}:\n{tail}")


def train_overrides(model: str, a) -> list[str]:
    ovr = ["trainer=gpu"] if a.gpu else []
    if a.quick:
        return ovr + QUICK
    return ovr + ([f"trainer.max_epochs={EPOCHS[model]}"] if model in EPOCHS else [])


def step_train(a, rec: Recorder, work: Path) -> None:
    from recsys.train import run

    results = rec.data.setdefault("train", {})
    for model in MODELS:
        for seed in a.seeds:
            cfg = compose(f"{a.dataset}/{model}", seed, train_overrides(model, a), work / "runs" / f"{model}-seed{seed}")
            metrics, art = run(cfg)
            results.setdefault(model, {})[str(seed)] = numbers(metrics) | {"best_checkpoint": metrics.get("best_checkpoint")}
            rec.save()
            print(f"{model} seed {seed}: test/ndcg@10 {metrics['test/ndcg@10']:.4f}", flush=True)


def step_ranking(a, rec: Recorder, work: Path) -> None:
    """Two-tower + DLRM / + DCN-v2, as scripts/run_ranking.py does, evaluated at 10 and 20 with beyond metrics."""
    import torch  # noqa: F401  (before hydra instantiate of torchrec modules)
    from hydra.utils import instantiate

    from recsys.core.inject import instantiate_with
    from recsys.data.io import load_dataset, load_split
    from recsys.eval.evaluator import Evaluator
    from run_ranking import compose as ranking_compose

    results = rec.data.setdefault("ranking", {})
    ovr = (["trainer=gpu"] if a.gpu else []) + (["trainer.max_epochs=1"] if a.quick else [f"trainer.max_epochs={EPOCHS['ranking']}"])
    for seed in a.seeds:
        fitted = None
        for exp, key in ((f"{a.dataset}/dlrm", "dlrm"), (f"{a.dataset}/dcn", "dcn")):
            cfg = ranking_compose(exp, [f"seed={seed}", *ovr], work / "runs" / f"{key}-seed{seed}")
            dataset_dir = Path(instantiate(cfg.data))
            ds, sp = load_dataset(dataset_dir), load_split(dataset_dir, cfg.data.split.name)
            # partial, then meta (plain containers: the ranker's checkpoint loads weights-only)
            model = instantiate_with(cfg.model.module, meta=ds.meta, dataset_dir=str(dataset_dir))
            if fitted:  # same seed, same retriever config: reuse the DLRM run's trained two-tower
                model.use_fitted_retrievers(*fitted)
            t0 = time.perf_counter()
            model.fit(ds, sp)
            fit_s = time.perf_counter() - t0
            fitted = (model.inner_retriever, model.retriever)
            ev = Evaluator(ks=(10, 20), progress=False)
            m = {**ev.evaluate(model, ds, sp, "valid"), **ev.evaluate(model, ds, sp, "test"), "train/time_s": fit_s}
            results.setdefault(key, {})[str(seed)] = numbers(m)
            if key == "dlrm":
                results.setdefault("retriever", {})[str(seed)] = numbers(ev.evaluate(model.retriever, ds, sp, "test"))
            rec.save()
            print(f"{key} seed {seed}: test/ndcg@10 {m['test/ndcg@10']:.4f}", flush=True)


def step_latency(a, rec: Recorder, dataset_dir: Path) -> None:
    """Mean per-stage latency (ms) of the default pipeline over a seeded sample of test users."""
    import numpy as np

    from recsys.data.io import load_split
    from recsys.pipeline.build import build_recommender, compose_serve

    # the server's own pipeline (configs/serve.yaml), on the test-time histories
    recommender = build_recommender(compose_serve([f"dataset_dir={dataset_dir}", "split=loo", "history=test"]))
    users = np.sort(load_split(dataset_dir, "loo").test["user_idx"].unique())
    users = np.random.default_rng(0).choice(users, size=min(a.latency_users, len(users)), replace=False)
    recommender.recommend(int(users[0]))  # warm-up (lazy index builds) is not a request
    per_stage: dict[str, list[float]] = {}
    for u in users:
        cands, _ = recommender.recommend(int(u))
        for stage, ms in cands.trace["latency_ms"].items():
            per_stage.setdefault(stage, []).append(ms)
    return {s: {"mean": float(np.mean(v)), "p95": float(np.percentile(v, 95))} for s, v in per_stage.items()} | {
        "_users": len(users)}


def step_determinism(a, rec: Recorder, work: Path) -> dict:
    from recsys.train import run

    seed = a.seeds[0]
    cfg = compose(f"{a.dataset}/bpr", seed, train_overrides("bpr", a), work / "runs" / f"bpr-seed{seed}-rerun")
    again = numbers(run(cfg)[0])
    first = rec.data.get("train", {}).get("bpr", {}).get(str(seed))
    if first is None:
        return {"model": "bpr", "seed": seed, "compared": 0, "note": "train step not run"}
    keys = [k for k in first if k.startswith(("test/", "val/"))]
    diff = max(abs(first[k] - again[k]) for k in keys)
    return {"model": "bpr", "seed": seed, "compared": len(keys), "max_abs_diff": diff, "identical": diff == 0.0}


def hardware(a) -> dict:
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "gpu": gpu, "python": platform.python_version(),
            "omp_threads": os.environ.get("OMP_NUM_THREADS", "unset"), "load_avg_start": os.getloadavg()[0]}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--quick", action="store_true", help="one epoch of a few batches everywhere, small samples (tests)")
    p.add_argument("--gpu", action="store_true", help="trainer=gpu and the vLLM config for the LLM re-rank")
    p.add_argument("--dataset", default="ml100k", choices=["ml100k", "ml1m"], help="experiment group configs/experiment/<name>/")
    p.add_argument("--out", type=Path, default=ROOT / "experiments" / "ml100k", help="README.md, plots and reproduce.json")
    p.add_argument("--work", type=Path, default=None, help="run directories and logs (default: outputs/reproduce_<dataset>)")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("RECSYS_DATA", ROOT / "data")))
    p.add_argument("--steps", nargs="+", default=STEPS, choices=STEPS)
    p.add_argument("--llm-users", type=int, default=200, help="seeded sample of test users for the LLM re-rank")
    p.add_argument("--ablation-users", type=int, default=300, help="seeded sample of test users for the ablations")
    p.add_argument("--latency-users", type=int, default=200)
    a = p.parse_args(argv)
    if a.quick:
        a.llm_users, a.ablation_users, a.latency_users = min(a.llm_users, 4), min(a.ablation_users, 30), min(a.latency_users, 20)
    a.work = a.work or (a.out / "work" if a.quick else ROOT / "outputs" / f"reproduce_{a.dataset}")
    return a


def main(argv=None) -> dict:
    a = parse(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["RECSYS_DATA"] = str(a.data_dir)  # read by configs/paths and scripts/run_ranking.py
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    a.work.mkdir(parents=True, exist_ok=True)
    logs = a.work / "logs"
    logs.mkdir(exist_ok=True)
    rec = Recorder(a.out / "reproduce.json", fresh=a.steps == STEPS)
    if "train" in a.steps or "settings" not in rec.data:  # a partial rerun keeps the full run's command and hardware
        rec.data["settings"] = {
            "seeds": a.seeds, "quick": a.quick, "gpu": a.gpu, "dataset": a.dataset, "epochs": QUICK if a.quick else EPOCHS,
            "llm_users": a.llm_users, "ablation_users": a.ablation_users, "latency_users": a.latency_users,
            "command": " ".join(["python scripts/reproduce_ml100k.py", *(sys.argv[1:] if argv is None else argv)])}
        rec.data["hardware"] = hardware(a)
    t_all = time.perf_counter()
    dataset_dir = a.data_dir / a.dataset
    tt_ckpt = lambda: Path(rec.data["train"]["two_tower"][str(a.seeds[0])]["best_checkpoint"])  # noqa: E731

    for step in [s for s in STEPS if s in a.steps]:
        t0 = time.perf_counter()
        print(f"== {step}", flush=True)
        if step == "prepare":
            from recsys.train import prepare_data

            dataset_dir, ds, _ = prepare_data(compose(f"{a.dataset}/pop", a.seeds[0], [], a.work / "runs" / "prepare"))
            rec.step(step, time.perf_counter() - t0, dataset={"dir": str(dataset_dir), "users": ds.meta.n_users,
                                                               "items": ds.meta.n_items, "interactions": ds.meta.n_interactions})
        elif step == "train":
            rec.data["train"] = {}
            step_train(a, rec, a.work)
            rec.step(step, time.perf_counter() - t0)
        elif step == "index":
            kind = "flat" if a.quick else "ivf_flat"
            sh([PY, "-m", "recsys.index", f"ckpt={tt_ckpt()}", f"index={kind}",
                f"dataset_dir={dataset_dir}", f"hydra.run.dir={a.work / 'index'}"], logs / "index.log")
            rec.step(step, time.perf_counter() - t0, index={"kind": kind, "dir": str(tt_ckpt().parent.parent / "index" / kind)})
        elif step == "retrieval":
            out = a.work / "retrieval.md"
            sh([PY, "scripts/retrieval_report.py", "--run-dir", str(tt_ckpt().parent.parent), "--dataset-dir", str(dataset_dir),
                "--baselines", str(a.work / "runs"), "--out", str(out)], logs / "retrieval.log")
            rec.step(step, time.perf_counter() - t0, retrieval=json.loads(out.with_suffix(".json").read_text()))
        elif step == "ranking":
            rec.data["ranking"] = {}
            step_ranking(a, rec, a.work)
            rec.step(step, time.perf_counter() - t0)
        elif step == "llm":
            out = a.work / "llm_rerank.json"
            cmd = [PY, "scripts/eval_llm_rerank.py", "--data-dir", str(a.work / "llm_data"), "--n-users", str(a.llm_users),
                   "--seed", "0", "--protocols", "llamarec", "--max-history", "5", "--batch-size", "6", "--out", str(out)]
            # --quick: the LLM scores every sampled user, so SmolLM2 really runs even when no target is in a top-20
            cmd += [] if a.quick else ["--skip-misses"]
            cmd += ["--llm", "vllm", "--device", "cuda"] if a.gpu else []
            sh(cmd, logs / "llm.log")
            rec.step(step, time.perf_counter() - t0, llm=json.loads(out.read_text()))
        elif step == "ablation":
            out = a.work / "pipeline.md"
            out.unlink(missing_ok=True)
            sh([PY, "scripts/ablate_pipeline.py", "--dataset-dir", str(dataset_dir), "--max-users", str(a.ablation_users),
                "--only", *ABLATION_VARIANTS, "--report", str(out), "--json", str(a.work / "pipeline.json")], logs / "ablation.log")
            rec.step(step, time.perf_counter() - t0, ablation=json.loads((a.work / "pipeline.json").read_text()))
        elif step == "latency":
            latency = step_latency(a, rec, dataset_dir)
            rec.step(step, time.perf_counter() - t0, latency=latency)
        elif step == "determinism":
            det = step_determinism(a, rec, a.work)
            rec.step(step, time.perf_counter() - t0, determinism=det)
        elif step == "report":
            from reproduce_report import write_report

            rec.data["total_s"] = sum(v for k, v in rec.data["steps"].items() if k != "report")
            write_report(rec.data, a.out)
            rec.step(step, time.perf_counter() - t0)
        print(f"== {step}: {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"total {time.perf_counter() - t_all:.0f} s; wrote {a.out / 'README.md'}")
    return rec.data


if __name__ == "__main__":
    main()
