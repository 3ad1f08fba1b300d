"""One command for the MovieLens-100K table (experiments/ml100k/README.md): every model, then the served pipeline stage by stage.

    scripts/reproduce_ml100k.sh                                # seeds 0 1 2, CPU (= OMP_NUM_THREADS=1 python scripts/reproduce_ml100k.py)
    scripts/reproduce_ml100k.sh --steps report                 # rewrite README from reproduce.json
    scripts/reproduce_ml100k.sh --quick --out /tmp/r           # a few steps of everything (tests)

The default --out is experiments/ml100k, the committed report: a run rewrites it (git shows what changed).

Every model trains through ``python -m recsys.train experiment=ml100k/<model> seed=<s>`` (a subprocess,
as a user runs it), so its run is ``outputs/train/ml100k-<model>-seed<s>`` and a finished identical run
is reused (a rerun only evaluates). Within a step, ``--jobs`` runs (default 2) train side by side, each
single-threaded (``OMP_NUM_THREADS=1``), longest first. Steps (each timed; ``<out>/reproduce.json`` is rewritten after each):

1. ``prepare``   -- ``python -m recsys.data.prepare data=ml100k`` (LOO split, ties by source row order);
2. ``train``     -- Pop, ItemKNN, SASRec, the sequential two-tower (``DEFAULT_MODELS``; BPR-MF and the bag
                    two-tower with ``--models``), every seed;
3. ``index``     -- ``python -m recsys.index`` (IVF-Flat) on each seed's sequential two-tower run;
4. ``rank``      -- the DLRM ranker behind each seed's sequential two-tower (``experiment=ml100k/seq_dlrm``;
                    ``--rankers seq_dlrm seq_dcn`` adds DCN-v2, and the served one is chosen on validation);
5. ``strengths`` -- ``scripts/sweep_pipeline_strengths.py`` on every seed (validation only): the
                    accuracy cost of filters, MMR, category cap and exploration by strength (mean over
                    seeds), the chosen defaults (copied into configs/pipeline/seq_ranked.yaml by hand,
                    then served; the report flags a config that differs);
6. ``pipeline``  -- the served pipeline stage by stage, validation and test, every seed:
                    seq two-tower -> "+ merged sources" -> "+ <ranker>" -> "+ filters, MMR, cap[, exploration]"
                    (``configs/pipeline/seq_ranked.yaml`` as served: the stages it switches on), per-user NDCG@10 for paired tests;
7. ``report``    -- ``<out>/README.md`` + plots (``scripts/reproduce_report.py``; default --out: experiments/ml100k).

The LLM rows (the LLM re-rank of the served pipeline's top 20, zero-shot and LoRA, blend chosen on
validation) are not run by this script (~8 min of SmolLM2 on one CPU thread for 150 users, zero-shot and
fine-tuned together, after ~36 min training the adapter): the report shows
``<out>/llm_pipeline_seq_ranked.json`` when ``scripts/eval_llm_pipeline.py --pipeline seq_ranked`` wrote
it, else the command (``reproduce_report.LLM_CMD``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from reproduce_report import DEFAULT_MODELS, RANKER_LABEL  # noqa: E402  (the report owns the rows and their names)

PY = sys.executable
STEPS = ["prepare", "train", "index", "rank", "strengths", "pipeline", "report"]
MODELS = ["pop", "itemknn", "bpr", "sasrec", "two_tower", "two_tower_seq"]
RANKERS = ["seq_dlrm", "seq_dcn"]
# the default run (~37 min on 2 cores; 41 on an AVX2 EPYC): reproduce_report.DEFAULT_MODELS and the ranker validation chose.
# BPR-MF and the bag two-tower (~+12 min) and DCN-v2 (~+10 min; lost to DLRM on validation) are one flag away
DEFAULT_RANKERS = ["seq_dlrm"]
# longest first, so that --jobs 2 keeps both cores busy to the end of a step
LONGEST_FIRST = ["two_tower_seq", "sasrec", "two_tower", "bpr", "itemknn", "pop"]
# Hydra's global state (``completed`` composes a config) and the Recorder are shared by the --jobs threads
LOCK = threading.Lock()
# per-model epoch overrides on top of the experiment configs (none: each config owns its epochs; the seq
# two-tower's 60 is the served pipeline's training budget, configs/experiment/ml100k/two_tower_seq.yaml)
EPOCHS: dict[str, list[str]] = {}
QUICK = ["trainer.max_epochs=1", "trainer.limit_train_batches=3"]
QUICK_RANK = ["model.module.max_train_users=40", "model.module.n_holdout=2", "model.module.retriever.max_epochs=1"]
COMMON = ["logger=none", "eval.progress=false", "trainer.enable_progress_bar=false"]
RANK_COMMON = ["model.module.progress=false"]  # the ranker's list-building bars (not part of a run's identity)


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
        with LOCK:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.data, indent=1, default=float))


def in_parallel(a, tasks: list, fn) -> None:
    """``fn(*task)`` for every task, ``a.jobs`` at a time (each task one single-threaded subprocess).
    On the first failure the tasks not yet started are cancelled; it is raised once the running ones end."""
    if a.jobs <= 1:
        for t in tasks:
            fn(*t)
        return
    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        futures = [pool.submit(fn, *t) for t in tasks]
        wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f.done() and not f.cancelled() and f.exception()), None)
        if failed is not None:
            pool.shutdown(wait=True, cancel_futures=True)
            raise failed.exception()


def sh(cmd: list[str], log: Path) -> float:
    """Run one command (cwd = repo root); its output goes to ``log``; a failure names the log. -> wall seconds."""
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.call(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise RuntimeError(f"{' '.join(cmd[:4])} failed (exit {rc}); log {log}:\n{tail}")
    return time.perf_counter() - t0


def run_dir(a, name: str, seed: int) -> Path:
    return a.runs / f"{a.dataset}-{name}-seed{seed}"


def metrics_of(path: Path) -> dict:
    m = json.loads((path / "metrics.json").read_text())
    return {k: float(v) for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def completed(a, overrides: list[str]) -> bool:
    """Whether the stable run of these ``recsys.train`` overrides is a completed run of the same identity
    (``recsys.utils.run_identity``): the rankers are fitted recommenders, which ``recsys.train`` fits again
    (no checkpoint to resume), so a rerun of this script skips them when they finished before."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from recsys.utils.artifacts import hash_of
    from recsys.utils.run_identity import identity_config

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    prov = a.runs / str(cfg.run_name) / "provenance.json"
    if not prov.is_file():
        return False
    rec = json.loads(prov.read_text())
    return rec.get("extra", {}).get("status") == "complete" and rec.get("config_hash") == hash_of(identity_config(cfg))


def train(a, experiment: str, seed: int, extra: list[str], logs: Path, reuse: bool = False) -> tuple[dict, float]:
    """``python -m recsys.train experiment=<dataset>/<experiment> seed=<seed>`` -> (its metrics.json, wall s of this call).

    ``reuse``: a completed run of the same identity is read, not run again (fitted recommenders)."""
    overrides = [f"experiment={a.dataset}/{experiment}", f"seed={seed}", *COMMON, *extra] + (["trainer=gpu"] if a.gpu else [])
    with LOCK:
        done = reuse and completed(a, overrides)
    if done:
        print(f"{experiment} seed {seed}: completed before, reused", flush=True)
        return metrics_of(run_dir(a, experiment.split("/")[-1], seed)), 0.0
    wall = sh([PY, "-m", "recsys.train", *overrides], logs / f"{experiment}-seed{seed}.log")
    return metrics_of(run_dir(a, experiment.split("/")[-1], seed)), wall


def step_train(a, rec: Recorder, logs: Path) -> None:
    results = rec.data.setdefault("train", {})

    def one(model: str, seed: int) -> None:
        extra = QUICK if a.quick else EPOCHS.get(model, [])
        m, wall = train(a, model, seed, extra, logs)
        with LOCK:
            results.setdefault(model, {})[str(seed)] = m | {"call_s": wall}
        rec.save()
        print(f"{model} seed {seed}: test/ndcg@10 {m.get('test/ndcg@10', float('nan')):.4f}", flush=True)

    order = sorted(a.models, key=lambda m: LONGEST_FIRST.index(m) if m in LONGEST_FIRST else -1)
    in_parallel(a, [(m, s) for m in order for s in a.seeds], one)


def step_rank(a, rec: Recorder, logs: Path) -> None:
    results = rec.data.setdefault("rank", {})

    def one(ranker: str, seed: int) -> None:
        extra = RANK_COMMON + (QUICK + QUICK_RANK if a.quick else [])
        m, wall = train(a, ranker, seed, extra, logs, reuse=True)
        prov = json.loads((run_dir(a, ranker, seed) / "model" / "provenance.json").read_text())
        with LOCK:
            results.setdefault(ranker, {})[str(seed)] = m | {"call_s": wall, **prov["extra"].get("fit_stats", {})}
        rec.save()
        print(f"{ranker} seed {seed}: val/ndcg@10 {m['val/ndcg@10']:.4f}", flush=True)

    in_parallel(a, [(r, s) for r in a.rankers for s in a.seeds], one)


def chosen_ranker(rec: Recorder) -> str:
    """The ranker with the higher mean validation NDCG@10 over seeds (the test set plays no part)."""
    rank = rec.data.get("rank", {})
    scores = {r: sum(s["val/ndcg@10"] for s in runs.values()) / len(runs) for r, runs in rank.items() if runs}
    return max(scores, key=scores.get) if scores else RANKERS[0]


def pipeline_rows(ranker: str) -> list[tuple[str, str | None, list[str]]]:
    """(row name, its input row, overrides on configs/serve.yaml) of the served pipeline, stage by stage."""
    from pipeline_eval import DIVERSIFY, FILTERS, off

    from recsys.pipeline.build import compose_serve

    label = RANKER_LABEL.get(ranker, ranker)
    merged = "seq two-tower + merged sources"
    ranked = f"{merged} + {label}"
    # the served stages' name from seq_ranked.yaml itself (its strengths are chosen on validation, exploration too)
    stages = compose_serve(["pipeline=seq_ranked"]).pipeline.stages
    served = ", ".join(n for key, n in (("mmr", "MMR"), ("category_cap", "cap"), ("exploration", "exploration"))
                       if stages.get(key) is not None)
    return [
        (merged, "seq two-tower", ["pipeline=seq_two_tower", *off(*FILTERS, *DIVERSIFY)]),
        (ranked, merged, ["pipeline=seq_ranked", *off(*FILTERS, *DIVERSIFY)]),
        (f"{ranked} + filters, {served} (served: pipeline=seq_ranked)", ranked, ["pipeline=seq_ranked"]),
    ]


def step_pipeline(a, rec: Recorder, dataset_dir: Path) -> None:
    """Every row on validation and test for every seed: metrics + per-user NDCG@10 (for the paired tests).

    It runs in this process; each row's line goes to the console and to ``<logs>/pipeline.log`` (the other
    steps' subprocesses write their own logs there).
    """
    from pipeline_eval import DIVERSIFY, evaluate_lists, mean_per_user, model_per_user, paired, runs_for
    from reproduce_report import served_stages

    from recsys.pipeline.build import compose_serve

    ranker = chosen_ranker(rec)
    users = 20 if a.quick else None
    rows = pipeline_rows(ranker)
    served = compose_serve(["pipeline=seq_ranked"]).pipeline.stages  # what the served row runs (the report checks it)
    out = {"ranker": ranker, "rows": {}, "paired": {}, "served_stages": served_stages(served, DIVERSIFY)}
    per_user: dict[str, dict[str, list[dict]]] = {}
    with open(a.logs / "pipeline.log", "w") as log:
        models = {"seq two-tower": "two_tower_seq", "SASRec": "sasrec"}  # single models the pipeline is compared with
        for stage in ("valid", "test"):
            prefix = "val" if stage == "valid" else "test"
            for seed in a.seeds:
                for name, model in models.items():  # the model alone over the full catalogue (its run's own protocol)
                    if run_dir(a, model, seed).exists():  # a partial reproduction (--steps) may not have trained it
                        per_user.setdefault(name, {}).setdefault(stage, []).append(
                            model_per_user(run_dir(a, model, seed), dataset_dir, stage))
                for name, _, ovr in rows:
                    runs = runs_for(seed, ranker if "pipeline=seq_ranked" in ovr else None, str(a.runs), a.dataset)
                    r = evaluate_lists([f"dataset_dir={dataset_dir}", "llm=none", *ovr, *runs], stage, users)
                    out["rows"].setdefault(name, {}).setdefault(str(seed), {}).update(r["metrics"])
                    per_user.setdefault(name, {}).setdefault(stage, []).append(r["per_user"])
                    line = f"{name} seed {seed} {stage}: ndcg@10 {r['metrics'][prefix + '/ndcg@10']:.4f}"
                    print(line, flush=True)
                    print(line, file=log, flush=True)
                rec.data["pipeline"] = out
                rec.save()
        # each stage against its input; the ranked and the served pipeline against the single models (users' means over seeds)
        pairs = [(name, inp) for name, inp, _ in rows] + [(rows[i][0], m) for m in models for i in (-2, -1)]
        for stage in ("valid", "test"):
            for new, base in [(n, b) for n, b in pairs if len(per_user.get(b, {}).get(stage, [])) == len(a.seeds)]:
                key = f"{new} vs {base}"
                out["paired"].setdefault(key, {})[stage] = paired(mean_per_user(per_user[new][stage]),
                                                                  mean_per_user(per_user[base][stage]))
                out["paired"][key][f"{stage}_per_seed"] = [paired(n, b) for n, b in zip(per_user[new][stage], per_user[base][stage])]
                print(f"{key} {stage}: {out['paired'][key][stage]}", file=log, flush=True)
    rec.data["pipeline"] = out
    rec.save()


def hardware() -> dict:
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines() if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        # "AMD EPYC" names several generations; family/model tell them apart (the rankers' floats differ between them)
        cpu = f"{info.get('model name', cpu)} (family {info.get('cpu family', '?')}, model {info.get('model', '?')})"
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "omp_threads": os.environ.get("OMP_NUM_THREADS", "unset"), "load_avg_start": os.getloadavg()[0]}


def parse(argv=None):
    from recsys.utils.cli import ScriptHelp

    p = argparse.ArgumentParser(description=__doc__, formatter_class=ScriptHelp)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                   help="training seeds; every row is the mean ± std over them")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="training/indexing subprocesses at a time within a step, each single-threaded (never more "
                        "than the CPU count); 1 = one after another")
    p.add_argument("--quick", action="store_true", help="one epoch of a few batches everywhere, 20 users (tests)")
    p.add_argument("--gpu", action="store_true", help="trainer=gpu for every training run")
    p.add_argument("--dataset", default="ml100k", help="experiment group configs/experiment/<name>/")
    p.add_argument("--out", type=Path, default=ROOT / "experiments" / "ml100k", help="README.md, plots and reproduce.json")
    p.add_argument("--steps", nargs="+", default=STEPS, choices=STEPS,
                   help="a subset to resume or redo; they always run in this order, and runs whose identity is "
                        "already on disk are reused")
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS, choices=MODELS,
                   help=f"the single-model rows to train (all: {' '.join(MODELS)})")
    p.add_argument("--rankers", nargs="+", default=DEFAULT_RANKERS, choices=RANKERS,
                   help=f"the rankers to train, the served one the best on validation (all: {' '.join(RANKERS)})")
    p.add_argument("--strength-users", type=int, default=None, help="seeded sample of validation users for the sweep (None: all of them)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="paths.data_dir of every command (sets RECSYS_DATA; unset: RECSYS_DATA, else ./data). "
                        "It is part of every run's identity: runs trained with another data_dir are not reused")
    a = p.parse_args(argv)
    # the runs go where `python -m recsys.train` puts them (RECSYS_OUTPUTS, else ./outputs); --quick runs go
    # under --out unless RECSYS_OUTPUTS says otherwise, so they never become the stable names the real runs use
    default_outputs = a.out / "work" / "outputs" if a.quick else ROOT / "outputs"
    a.outputs = Path(os.environ.get("RECSYS_OUTPUTS", default_outputs))
    a.runs = a.outputs / "train"
    a.logs = a.outputs / f"reproduce_{a.dataset}" / "logs"
    return a


def main(argv=None) -> dict:
    a = parse(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    # every subprocess's roots; left alone by default, so the runs are the ones `python -m recsys.train` makes
    # from the repository root (their data_dir is part of their identity)
    if a.data_dir is not None:
        os.environ["RECSYS_DATA"] = str(a.data_dir)
    if a.quick or "RECSYS_OUTPUTS" in os.environ:
        os.environ["RECSYS_OUTPUTS"] = str(a.outputs)
    a.logs.mkdir(parents=True, exist_ok=True)
    rec = Recorder(a.out / "reproduce.json", fresh=a.steps == STEPS)
    if "train" in a.steps or "settings" not in rec.data:
        rec.data["settings"] = {"seeds": a.seeds, "models": a.models, "rankers": a.rankers, "quick": a.quick, "gpu": a.gpu, "dataset": a.dataset,
                                "epochs": QUICK if a.quick else EPOCHS, "command": " ".join(
                                    ["python scripts/reproduce_ml100k.py", *(sys.argv[1:] if argv is None else argv)])}
        rec.data["hardware"] = hardware()
    rec.data["runs_root"] = str(a.runs)  # where the runs are (the report's LLM command points at them)
    dataset_dir = Path(os.environ.get("RECSYS_DATA", ROOT / "data")) / a.dataset
    t_all = time.perf_counter()
    for step in [s for s in STEPS if s in a.steps]:
        t0 = time.perf_counter()
        print(f"== {step}", flush=True)
        if step == "prepare":
            sh([PY, "-m", "recsys.data.prepare", f"data={a.dataset}"], a.logs / "prepare.log")
        elif step == "train":
            step_train(a, rec, a.logs)
        elif step == "index":
            in_parallel(a, [(s,) for s in a.seeds], lambda seed: sh(
                [PY, "-m", "recsys.index", f"run={run_dir(a, 'two_tower_seq', seed)}", "index=ivf_flat"],
                a.logs / f"index-seed{seed}.log"))
        elif step == "rank":
            step_rank(a, rec, a.logs)
        elif step == "pipeline":
            sweep = a.out / "pipeline_strengths.json"
            if "strengths" not in rec.data and sweep.exists():  # the sweep's last output (step not run now)
                rec.data["strengths"] = json.loads(sweep.read_text())
            step_pipeline(a, rec, dataset_dir)
        elif step == "strengths":
            out = a.out / "pipeline_strengths"
            cmd = [PY, "scripts/sweep_pipeline_strengths.py", "--seeds", *map(str, a.seeds), "--ranker", chosen_ranker(rec),
                   "--dataset-dir", str(dataset_dir), "--runs-root", str(a.runs), "--out", str(out)]
            users = a.strength_users or (20 if a.quick else None)
            cmd += ["--max-users", str(users)] if users else []
            sh(cmd, a.logs / "strengths.log")
            rec.data["strengths"] = json.loads(out.with_suffix(".json").read_text())
        elif step == "report":
            from reproduce_report import write_report

            rec.data["total_s"] = sum(v for k, v in rec.data["steps"].items() if k != "report")
            write_report(rec.data, a.out)
        rec.step(step, time.perf_counter() - t0)
        print(f"== {step}: {time.perf_counter() - t0:.0f} s", flush=True)
    rec.data["total_s"] = sum(v for k, v in rec.data["steps"].items() if k != "report")
    rec.save()
    print(f"total {time.perf_counter() - t_all:.0f} s; wrote {a.out / 'README.md'} (+ reproduce.json, plots) "
          f"from the runs under {a.runs}; step logs in {a.logs}")
    return rec.data


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, FileNotFoundError) as e:  # a failed step: its command, exit code and log tail
        sys.exit(f"reproduce_ml100k: {e}")
