"""The README and the journey suite agree, checked in seconds without running anything (the walk itself,
``test_readme.py``, is slow): every marked block lists exactly the commands ``expected.JOURNEYS`` lists, in
that order; every other shell block is the GPU box's; the README documents the overrides the suite appends.
"""

from __future__ import annotations

import re

import pytest

from tests.journeys.expected import JOURNEYS
from tests.journeys.readme import fenced_blocks, journey_blocks
from tests.journeys.run import README, SHORT, SHORT_SWEEP, as_run

pytestmark = pytest.mark.independent  # runs even after a failed journey (conftest.py)
SHELL_FENCES = ("```bash", "```sh", "```shell", "```console")


def test_readme_blocks_are_the_expected_journeys():
    blocks = journey_blocks(README)
    assert list(blocks) == list(JOURNEYS), "README journey blocks and tests/journeys/expected.py differ in order"
    for name, expected in JOURNEYS.items():
        cmds = blocks[name]
        assert len(cmds) == len(expected), (f"block {name!r}: README has {[c.text for c in cmds]}, "
                                            f"expected.py {[k for k, _ in expected]}")
        for cmd, (key, pattern) in zip(cmds, expected):
            assert re.search(pattern, cmd.text), f"{cmd}: expected.py's {key!r} wants {pattern!r}"


def test_readme_opens_with_make_run_and_make_test():
    first = next(b for b in fenced_blocks(README))
    assert first[1] == "quickstart" and [c.text for c in journey_blocks(README)["quickstart"]] == ["make run", "make test"]


def test_every_other_shell_block_is_the_gpu_section():
    text = README.read_text()
    start = text.index("## On a GPU box")
    end = text.index("\n## ", start + 5)
    lines = text.splitlines()
    for line, name, _ in fenced_blocks(README):
        if name is None and lines[line - 1].strip() in SHELL_FENCES:
            offset = sum(len(ln) + 1 for ln in lines[: line - 1])
            assert start <= offset < end, f"README.md:{line}: a shell block with no journey marker"


def test_the_suite_only_appends_documented_overrides():
    text = README.read_text()
    assert SHORT in text and SHORT_SWEEP in text
    train = "python -m recsys.train experiment=ml100k/bpr"
    assert as_run(train) == f"{train} {SHORT}"
    assert as_run(f"python -m recsys.train -m x=y") == f"python -m recsys.train -m x=y {SHORT} {SHORT_SWEEP}"
    assert as_run('refresh --retrain "python -m recsys.train a=b"') == f'refresh --retrain "python -m recsys.train a=b {SHORT}"'
    assert as_run("make serve", 9) == f'make -o .venv/.installed serve TRAIN_ARGS="{SHORT}" SERVE_ARGS="port=9"'
    assert as_run("curl -s localhost:8000/health", 9) == "curl -s localhost:9/health"
