"""Property-based fuzzing from the app's own OpenAPI schema (schemathesis): no input makes a 5xx.

In process: every operation, schema-valid and schema-violating cases (a bounded number each), against
the real app over ML-100K. Over HTTP (slow): ``scripts/fuzz_api.py`` against ``python -m recsys.serve``
with 2 workers, 600 requests including hostile mutations, ``/health`` polled throughout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = 300  # in process, drawn over 6 operations x 2 generation modes


@pytest.fixture(scope="module")
def api_schema(ml100k_dir, tmp_path_factory):
    from recsys.llm.conversation import ConversationParser
    from recsys.serve.app import ServeState, create_app
    from recsys.serve.stores import open_store
    from tests.serve.conftest import build_recommender

    store = open_store(tmp_path_factory.mktemp("fuzz") / "fb.sqlite")
    rec = build_recommender(ml100k_dir)
    app = create_app(ServeState(rec, store, ConversationParser(rec.catalog.categories)))
    yield schemathesis.openapi.from_asgi("/openapi.json", app, headers={"Host": "127.0.0.1"})
    store.close()


def test_no_input_gets_a_server_error(api_schema):
    # schemathesis' own pytest plugin does not run under pytest 9: its strategies are driven by hypothesis here
    ops = [r.ok() for r in api_schema.get_all_operations()]
    strategies = [op.as_strategy(generation_mode=mode) for op in ops for mode in schemathesis.GenerationMode]
    seen: Counter = Counter()

    @settings(max_examples=REQUESTS, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(strategies))
    def check(case):
        response = case.call(headers={"Host": "127.0.0.1"})
        seen[f"{case.method.upper()} {case.path}"] += 1
        assert response.status_code < 500, f"{response.status_code} for {case.method} {case.path}: {case.body!r:.300}"
        response.json()  # every answer, errors included, is valid JSON

    check()
    assert len(seen) == len(ops) and sum(seen.values()) >= REQUESTS * 0.9, seen


@pytest.mark.slow
def test_fuzzing_a_running_server_over_http(ml100k_dir, tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts/fuzz_api.py"), "--requests", "600", "--workers", "2",
                          "--data-dir", str(ml100k_dir.parent), "--work-dir", str(tmp_path),
                          "--override", "pipeline.sources.content=null"],
                         cwd=ROOT, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["requests"] == 600 and result["http_5xx_or_no_answer"] == 0
    assert result["health"]["checks"] > 10 and result["health"]["failures"] == 0
    assert result["mutated"] > 100 and result["longest_log_line"] < 2000
