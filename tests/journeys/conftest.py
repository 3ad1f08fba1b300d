"""Fixtures of the journey suite (tests/journeys/test_readme.py).

- ``walk``  one ``Walk`` per module: a scratch copy of the checkout (its own data/ and outputs/, in
  pytest's tmp dir) that every journey of the module shares, in order: one prepare, one two-tower run.
  Its server, if one is left running, is stopped at the end.

The journeys depend on each other's outputs: after a failed one, the rest of the module is skipped
(with the name of the failure) instead of failing again for the same reason; tests marked
``independent`` still run. The terminal summary lists each README command run with its wall time.
"""

from __future__ import annotations

import os

import pytest

from tests.journeys.run import Scratch
from tests.journeys.walk import Walk

FAILED = pytest.StashKey[str]()
WALKS = pytest.StashKey[list]()


def pytest_configure(config):
    config.addinivalue_line("markers", "independent: a journey test that needs no earlier journey")
    config.stash[WALKS] = []


@pytest.fixture(scope="module")
def walk(request, tmp_path_factory):
    w = Walk(Scratch(tmp_path_factory.mktemp("journeys") / "checkout"))
    request.config.stash[WALKS].append(w)
    yield w
    w.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and item.path.parent.name == "journeys" and FAILED not in item.session.stash:
        item.session.stash[FAILED] = item.name


@pytest.fixture(autouse=True)
def _after_a_failed_journey(request):
    failed = request.session.stash.get(FAILED, None)
    if failed and request.node.get_closest_marker("independent") is None:
        pytest.skip(f"{failed} failed; the journeys after it need its outputs")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    walks = config.stash.get(WALKS, [])
    if not walks:
        return
    tr = terminalreporter
    tr.section("README journeys: wall time per command")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    for w in walks:
        for command, seconds in w.scratch.times:
            tr.write_line(f"{seconds:8.1f} s  {command}")
        total = sum(s for _, s in w.scratch.times)
        tr.write_line(f"{total:8.1f} s  in all ({len(w.scratch.times)} commands; load average now {load})")
        for cmd, reason in w.not_run():
            tr.write_line(f"     not run: {cmd}  ({reason})")
