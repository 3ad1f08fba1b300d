"""The Python pieces of ``scripts/gpu_smoke.sh``: one subcommand per check, exit 0 = PASS.

    python scripts/gpu_checks.py versions --device cuda      # versions, CUDA 13 / driver >= 580, pip check
    python scripts/gpu_checks.py fbgemm --device cuda        # one fbgemm CUDA op + one bf16 DLRM step
    python scripts/gpu_checks.py faiss --device cuda         # flat / IVF-Flat / IVF-PQ on GPU vs CPU, save/load
    python scripts/gpu_checks.py dlrm-sharded --nproc 2 --device cuda --sharding row_wise   # save + resume exact
    python scripts/gpu_checks.py two-tower-sharded --nproc 2 --device cuda --dataset-dir data/ml100k

Every check also runs with ``--device cpu`` (gloo for the torchrun ones), which is how
``tests/test_gpu_scripts.py`` exercises them on a machine without a GPU. Each prints
what it measured as one JSON line, then raises (exit 1) on a failed expectation.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DRIVER_MIN = 580  # torch 2.14 / fbgemm-gpu 1.9 / vllm 0.33 wheels are CUDA 13.0 builds
# Installed with --no-deps on purpose (their own metadata is not meant to be satisfied):
NO_DEPS_FILES = {"cuda": "requirements/data.txt", "cpu": "requirements/nodeps.txt"}


def _report(name: str, **facts) -> None:
    print(json.dumps({"check": name, **facts}, default=str))


def expect(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"FAILED: {what}")


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def no_deps_names(path: str | Path) -> set[str]:
    """Package names pinned in a requirements file (following ``-r``), as ``pip check`` spells them."""
    path = ROOT / path if not Path(path).is_absolute() else Path(path)
    names: set[str] = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r"):
            names |= no_deps_names(path.parent / line[2:].strip())
        elif line:
            names.add(_canon(re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0]))
    return names


def pip_check_problems(output: str, no_deps: set[str]) -> list[str]:
    """Lines of ``pip check`` that are real problems: not about the wheels installed --no-deps on purpose."""
    lines = [x for x in output.splitlines() if x.strip() and not x.startswith("No broken requirements")]
    return [x for x in lines if _canon(x.split()[0]) not in no_deps]


def driver_major() -> int | None:
    """NVIDIA driver major version from nvidia-smi (None where there is no nvidia-smi)."""
    if shutil.which("nvidia-smi") is None:
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True)
    return int(out.stdout.split(".")[0]) if out.returncode == 0 and out.stdout.strip() else None


def check_versions(args) -> None:
    import importlib.metadata as md

    import torch

    versions = {}
    for pkg in ("torch", "fbgemm-gpu", "fbgemm-gpu-cpu", "torchrec", "faiss-gpu", "faiss-cpu", "vllm", "torchaudio",
                "transformers", "numpy", "pytorch-lightning"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    pip = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    problems = pip_check_problems(pip.stdout + pip.stderr, no_deps_names(NO_DEPS_FILES[args.device]))
    facts = {"versions": versions, "torch_cuda": torch.version.cuda, "pip_check_problems": problems}
    if args.device == "cuda":
        facts |= {"gpus": torch.cuda.device_count(), "driver": driver_major(),
                  "names": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
    _report("versions", **facts)
    if args.device == "cuda":  # the device first: without it everything below is noise
        expect(torch.cuda.is_available(), f"torch sees no CUDA device (torch {torch.__version__}, CUDA "
                                          f"{torch.version.cuda}): check nvidia-smi and the driver")
        expect(str(torch.version.cuda or "").startswith("13."), f"torch is a CUDA {torch.version.cuda} build, want 13.x")
        if facts["driver"] is None:  # said, not silently passed
            print(f"WARNING: driver not checked: no nvidia-smi on PATH (need >= {DRIVER_MIN})", file=sys.stderr)
        expect(facts["driver"] is None or facts["driver"] >= DRIVER_MIN, f"NVIDIA driver {facts['driver']} < {DRIVER_MIN}")
        for pkg in ("fbgemm-gpu", "torchrec", "faiss-gpu", "vllm"):
            expect(pkg in versions, f"{pkg} is not installed (requirements/gpu.txt)")
    expect(not problems, f"pip check: {problems}")


def check_fbgemm(args) -> None:
    import fbgemm_gpu  # noqa: F401  (registers torch.ops.fbgemm)
    import torch

    from recsys.models.dlrm import build_dlrm

    dev = torch.device(args.device)
    lengths = torch.tensor([1, 2, 3], device=dev)
    cumsum = torch.ops.fbgemm.asynchronous_complete_cumsum(lengths)
    expect(cumsum.tolist() == [0, 1, 3, 6] and cumsum.device.type == dev.type, f"fbgemm cumsum gave {cumsum}")

    from recsys.data.criteo import to_kjt

    torch.manual_seed(0)
    model = build_dlrm({"a": 100, "b": 50}, num_dense_features=4, embedding_dim=16).to(dev)
    opt = torch.optim.Adagrad(model.parameters(), lr=0.05)
    dense, labels = torch.randn(32, 4, device=dev), torch.randint(0, 2, (32,), device=dev).float()
    kjt = to_kjt(torch.randint(0, 50, (32, 2)), ["a", "b"]).to(dev)
    with torch.autocast(device_type=dev.type, dtype=torch.bfloat16):
        logits = model(dense, kjt)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels)
    loss.backward()
    opt.step()
    _report("fbgemm", device=str(dev), cumsum=cumsum.tolist(), logits_dtype=str(logits.dtype), loss=loss.item())
    expect(logits.dtype == torch.bfloat16, f"autocast gave {logits.dtype} logits, want bfloat16")
    expect(bool(torch.isfinite(loss)), f"non-finite bf16 DLRM loss {loss}")


def _clustered(n: int, d: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(20, d))[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def check_faiss(args) -> None:
    import numpy as np

    from recsys.retrieval.index import ItemIndex, exact_topk

    items, queries = _clustered(20000, 64, 0), _clustered(200, 64, 1)
    truth = exact_topk(items, queries, 10)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, params, floor in (("flat", {}, 1.0), ("ivf_flat", dict(nlist=128, nprobe=16), 0.9),
                                    ("ivf_pq", dict(nlist=128, nprobe=16, pq_m=16), 0.5)):
            idx = ItemIndex(kind, device=args.device, **params).build(items)
            expect(idx.on_gpu == (args.device == "cuda"), f"{kind}: on_gpu={idx.on_gpu} on device {args.device}")
            s1, found = idx.search(queries, 10)
            cpu = ItemIndex(kind, device="cpu", **params).build(items).search(queries, 10)[1]
            recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)]))
            cpu_recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(cpu, truth)]))
            back = ItemIndex.load(idx.save(Path(tmp) / kind), device=args.device)
            s2, again = back.search(queries, 10)
            rows[kind] = {"recall@10": recall, "cpu_recall@10": cpu_recall, "round_trip_equal": bool(np.array_equal(found, again))}
            expect(recall >= floor and recall >= cpu_recall - 0.05, f"{kind}: recall {recall:.3f} (CPU {cpu_recall:.3f}, floor {floor})")
            expect(rows[kind]["round_trip_equal"] and np.allclose(s1, s2, atol=1e-4), f"{kind}: save/load changed the results")
    _report("faiss", device=args.device, **rows)


def _torchrun(nproc: int, device: str, module: str, *job_args: str) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU check stays on gloo even on a GPU box
    job_args = ("--device", device, *job_args)
    cmd = [os.environ.get("TORCHRUN", "torchrun"), "--standalone", f"--nproc_per_node={nproc}", "-m", module, *job_args]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if res.returncode:
        sys.stderr.write(res.stderr[-4000:])
        raise SystemExit(f"FAILED: {' '.join(cmd)} exited {res.returncode}")


def check_dlrm_sharded(args) -> None:
    """Save at step k of 2k and continue; a fresh job resumes from k: the losses after k must be identical."""
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        common = ["--steps", str(2 * args.steps), "--rows-per-rank", "1024", "--batch-size", "64",
                  "--sharding", args.sharding]
        _torchrun(args.nproc, args.device, "recsys.distributed.dlrm_job", *common, "--save", str(t / "ckpt"), "--save-at", str(args.steps),
                  "--result", str(t / "full.json"))
        _torchrun(args.nproc, args.device, "recsys.distributed.dlrm_job", *common, "--resume", str(t / "ckpt"), "--result", str(t / "resumed.json"))
        full, resumed = (json.loads((t / f).read_text()) for f in ("full.json", "resumed.json"))
    diff = max(abs(a - b) for a, b in zip(full["losses"][args.steps:], resumed["losses"]))
    _report("dlrm-sharded", device=full["device"], backend=full["backend"], world_size=full["world_size"],
            plan=sorted(set(full["plan"].values())), first_loss=full["losses"][0], last_loss=full["losses"][-1], resume_max_diff=diff)
    expect(set(full["plan"].values()) == {args.sharding}, f"plan {full['plan']} is not {args.sharding}")
    expect(resumed["start"] == args.steps and len(resumed["losses"]) == args.steps, "resume did not start at the saved step")
    expect(diff <= 1e-5, f"resumed losses differ by {diff}")


def check_two_tower_sharded(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "tt.json"
        _torchrun(args.nproc, args.device, "recsys.retrieval.sharded_two_tower", "--dataset-dir", args.dataset_dir,
                  "--steps", str(args.steps), "--batch-size", "512", "--dim", "32", "--result", str(out))
        res = json.loads(out.read_text())
    ls = res["losses"]
    k = max(1, len(ls) // 4)
    first, last = sum(ls[:k]) / k, sum(ls[-k:]) / k
    _report("two-tower-sharded", device=res["device"], world_size=res["world_size"], plan=sorted(set(res["plan"].values())),
            first_loss=first, last_loss=last, steps=len(ls))
    expect(len(ls) == args.steps, f"rank 0 ran {len(ls)} of {args.steps} steps")
    expect(last < first, f"loss did not fall ({first:.3f} -> {last:.3f})")


CHECKS = {"versions": check_versions, "fbgemm": check_fbgemm, "faiss": check_faiss,
          "dlrm-sharded": check_dlrm_sharded, "two-tower-sharded": check_two_tower_sharded}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("check", choices=sorted(CHECKS))
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--nproc", type=int, default=2, help="torchrun processes (the GPU count on a GPU box)")
    p.add_argument("--sharding", default="table_wise", help="dlrm-sharded: the one sharding type to force")
    p.add_argument("--steps", type=int, default=20, help="dlrm-sharded: steps before the save (and after); two-tower: steps")
    p.add_argument("--dataset-dir", default="data/ml100k", help="two-tower-sharded: a prepared dataset")
    args = p.parse_args(argv)
    CHECKS[args.check](args)


if __name__ == "__main__":
    main()
