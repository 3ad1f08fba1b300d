"""scripts/bench_pipeline.py runs end to end with the sequential two-tower as its ANN source (a small
synthetic catalogue; latency figures come from the 1M-item run recorded in experiments/, not from here)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_pipeline_serves_the_sequential_two_tower(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "scripts/bench_pipeline.py", "--items", "5000", "--users", "300", "--interactions", "6000",
           "--requests", "10", "--warmup", "2", "--nprobe", "4", "--data-dir", str(tmp_path), "--json", str(out)]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["setup"]["retriever"] == "seq_two_tower" and "item_tower_s" in r["build"]
    # the request path: the seq two-tower source, the ranker, the filters and the diversifying stages
    assert {"source/two_tower", "source/popularity", "merge", "ranker", "consumed", "mmr"} <= set(r["steps_ms"])
    assert r["non_llm_ms"]["p99"] > 0
