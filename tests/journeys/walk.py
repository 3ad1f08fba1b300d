"""One walk through the README: its commands taken in order, run in one scratch checkout, checked.

    walk = Walk(Scratch(tmp / "checkout"))
    cmd = walk.take("train-serve", "train")   # the block's next command; expected.JOURNEYS says it is "train"
    res = walk.run(cmd)                     # Result; the README text with only run.as_run's changes
    walk.serve(walk.take("ranker", ...))    # a background server (the previous one is stopped first)

``take`` hands out the README's commands strictly in order (block after block, command after
command), and asserts the command is the one the journey expects (``expected.JOURNEYS``: its key
at that position, its regex): a command added, removed, reordered or changed in the README fails
the walk at that point, and ``unwalked()`` lists any left over at the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from tests.journeys.expected import JOURNEYS
from tests.journeys.readme import Command, journey_blocks
from tests.journeys.run import README, README_PORT, Result, Scratch, Server, as_run, is_server


class Walk:
    def __init__(self, scratch: Scratch, readme: Path = README):
        self.scratch = scratch
        self.blocks = journey_blocks(readme)
        self.order = list(self.blocks)
        self.cursor: tuple[int, int] = (0, -1)   # (block position, last command index taken in it)
        self.taken: dict[tuple[str, int], str] = {}  # (block, index) -> "run" | reason it is not run
        self.server: Server | None = None
        self.state: dict = {}                    # what one journey leaves for the next (run dirs, ids)

    # ---- the README's commands, in order ----

    def take(self, block: str, key: str) -> Command:
        """The README's next command; it must be in ``block`` and be the one ``expected.JOURNEYS`` lists as
        ``key`` at that position (and match its regex)."""
        assert block in self.blocks, f"README.md has no <!-- journey: {block} --> block (blocks: {self.order})"
        pos, last = self.cursor
        at = self.order.index(block)
        assert at >= pos, f"journey block {block!r} comes before {self.order[pos]!r} in README.md: the order changed"
        if at > pos:
            self._check_block_done(self.order[pos], last)
            last = -1
        cmds, expected = self.blocks[block], JOURNEYS[block]
        assert last + 1 < len(cmds), f"README.md block {block!r} has no command left; the suite expected {key!r}"
        cmd = cmds[last + 1]
        listed, pattern = expected[cmd.index] if cmd.index < len(expected) else (None, None)
        assert listed == key, f"{cmd}: the journey takes {key!r} here; tests/journeys/expected.py lists {listed!r}"
        assert re.search(pattern, cmd.text), (f"{cmd}: tests/journeys/expected.py expects a command matching "
                                              f"{pattern!r} here; update it with the README")
        self.cursor = (at, cmd.index)
        self.taken[(block, cmd.index)] = "run"
        return cmd

    def skip(self, block: str, key: str, reason: str) -> Command:
        """Take the next command without running it (listed with ``reason`` in the summary)."""
        cmd = self.take(block, key)
        self.taken[(block, cmd.index)] = reason
        return cmd

    def _check_block_done(self, block: str, last: int) -> None:
        left = self.blocks[block][last + 1:]
        assert not left, f"the suite left {block!r} with README commands it does not walk: {[str(c) for c in left]}"

    def unwalked(self) -> list[Command]:
        return [c for cmds in self.blocks.values() for c in cmds if (c.block, c.index) not in self.taken]

    def not_run(self) -> list[tuple[Command, str]]:
        return [(c, self.taken[(c.block, c.index)]) for cmds in self.blocks.values() for c in cmds
                if self.taken.get((c.block, c.index), "run") != "run"]

    # ---- running them ----

    def run(self, cmd: Command, timeout: float = 900, check: bool = True) -> Result:
        assert not is_server(cmd.text), f"{cmd} is a server: use serve()"
        return self.scratch.run(as_run(cmd.text), timeout=timeout, check=check)

    def serve(self, cmd: Command, timeout: float = 600) -> Server:
        """Start a README serve command on a free port (after stopping the running one: one port 8000)."""
        from recsys.serve.process import free_port

        self.stop()
        port = free_port()
        n = sum(1 for _ in self.scratch.root.glob("server-*.log"))
        self.server = Server(self.scratch, as_run(cmd.text, port), port, self.scratch.path(f"server-{n}.log"))
        return self.server.start(timeout)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def client_script(self, cmds: list[Command], port: int) -> str:
        """One bash session of the README's client lines (shell variables carry from line to line), with a
        marker line before each command's output."""
        lines = ["set -euo pipefail"]
        for c in cmds:
            assert f"localhost:{README_PORT}" in c.text or c.text.startswith("read "), f"{c}: no localhost:{README_PORT}"
            lines += [f"printf '\\n@@command {c.index}\\n'", as_run(c.text, port)]
        return "\n".join(lines) + "\n"


def split_outputs(stdout: str) -> dict[int, str]:
    """``client_script`` output -> {command index: its stdout}."""
    parts = re.split(r"\n?@@command (\d+)\n", stdout)
    return {int(parts[i]): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


# ---- what a training run prints at its end (recsys/train.py's summary) ----

# "<name>-<config hash>: how" for a run; a sweep's trial is "<trial number>: how" (Hydra's multirun dir, no hash)
TITLE = re.compile(r"^(?P<name>\S+?)(?:-(?P<hash>[0-9a-f]{12}))?: (?P<how>.+)$")
PATH_KEYS = ("run dir", "metrics", "best checkpoint", "W&B run", "latest of its name")


@dataclass
class RunSummary:
    name: str
    config_hash: str | None  # None for a sweep's trial
    how: str
    table: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> {"val": x, "test": y}
    paths: dict[str, str] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return Path(self.paths["run dir"])


def run_summaries(stdout: str) -> list[RunSummary]:
    """Every end-of-run summary in ``stdout``, in order (a refresh's retrain prints one after the refresh log)."""
    out: list[RunSummary] = []
    lines = stdout.splitlines()
    for i, ln in enumerate(lines):
        m = TITLE.match(ln)
        if not m or i + 1 >= len(lines) or not lines[i + 1].split()[:1] == ["metric"]:
            continue
        s = RunSummary(m["name"], m["hash"], m["how"])
        stages = lines[i + 1].split()[1:]
        for row in lines[i + 2:]:
            key = next((k for k in PATH_KEYS if row.startswith(f"  {k}  ")), None)
            if key:
                s.paths[key] = row[len(key) + 2:].strip()
            elif row.startswith("  ") and len(row.split()) == len(stages) + 1:
                metric, *values = row.split()
                s.table[metric] = {st: float(v) for st, v in zip(stages, values) if v != "-"}
            else:
                break
        out.append(s)
    return out


def one_summary(res: Result) -> RunSummary:
    found = run_summaries(res.stdout)
    assert len(found) == 1, f"expected one end-of-run summary, found {len(found)}:\n{res}"
    return found[0]
