"""A secret on the command line is refused before Hydra writes anything (recsys/utils/secrets.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from recsys.utils.secrets import secret_overrides

ROOT = Path(__file__).resolve().parents[1]


def test_secret_looking_overrides_are_named():
    assert secret_overrides(["+llm.backend.api_key=sk-1", "++db.password=x", "token=t", "k=3", "data=ml100k",
                             "feedback_db=postgresql://u:pw@localhost/db", "feedback_db=postgresql://u@localhost/db",
                             "llm.backend.base_url=http://u:sk@h:8001/v1", "model.module.tokenizer=x"]) == [
        "llm.backend.api_key", "db.password", "token", "feedback_db", "llm.backend.base_url"]


@pytest.mark.parametrize("entry,override", [
    ("recsys.recommend", "+llm.backend.api_key=sk-SECRET123"),
    ("recsys.serve", "feedback_db=postgresql://recsys:SECRET123@127.0.0.1:5432/recsys"),
    ("recsys.train", "+trainer.token=SECRET123"),
])
def test_a_secret_on_the_command_line_is_refused_and_never_written(tmp_path, entry, override):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RECSYS_OUTPUTS": str(tmp_path / "out"), "RECSYS_DATA": str(tmp_path / "data")}
    r = subprocess.run([sys.executable, "-m", entry, override], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode != 0 and "refusing the override" in r.stderr, r.stderr[-2000:]
    assert "SECRET123" not in r.stdout + r.stderr
    assert not (tmp_path / "out").exists()  # nothing written at all, .hydra/ included
