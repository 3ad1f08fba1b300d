"""The README's journeys: its fenced code blocks marked ``<!-- journey: NAME -->``, parsed into commands.

A journey block is the fenced block right after the marker line. A command is one shell line
(lines ending in a backslash joined) without its trailing comment; comment-only lines are prose.
The suite runs these commands as written; the only changes it makes are in ``tests/journeys/run.py``.

    blocks = journey_blocks(README)          # {"quickstart": [Command(...), ...], ...} in README order
    blocks["train-serve"][0].text            # '. .venv/bin/activate'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MARK = re.compile(r"^<!--\s*journey:\s*([\w-]+)\s*-->\s*$")
FENCE = re.compile(r"^```")


@dataclass(frozen=True)
class Command:
    block: str
    index: int     # position in its block, from 0
    text: str      # the shell command as written (continuations joined with one space, no comment)
    comment: str   # its trailing comment: what the README says it does
    line: int      # README line where it starts (1-based)

    def __str__(self) -> str:
        return f"README.md:{self.line} [{self.block}] {self.text}"


def split_comment(line: str) -> tuple[str, str]:
    """``code  # comment`` -> (code, comment), by bash's rule: ``#`` starting a word, outside quotes."""
    quote, prev = None, " "
    for i, ch in enumerate(line):
        if quote:
            if ch == quote and not (quote == '"' and prev == "\\"):
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and prev.isspace():
            return line[:i].rstrip(), line[i + 1:].strip()
        prev = ch
    return line.rstrip(), ""


def parse_commands(block: str, lines: list[tuple[int, str]]) -> list[Command]:
    """(line number, text) rows of one fenced block -> its commands."""
    out: list[Command] = []
    parts: list[str] = []
    notes: list[str] = []
    start = 0
    for number, raw in lines:
        code, comment = split_comment(raw)
        if not parts and not code.strip():
            continue  # blank or comment-only line: prose
        if not parts:
            start = number
        notes += [comment] if comment else []
        if code.endswith("\\"):
            parts.append(code[:-1].strip())
            continue
        parts.append(code.strip())
        out.append(Command(block, len(out), " ".join(p for p in parts if p), " ".join(notes), start))
        parts, notes = [], []
    if parts:
        raise ValueError(f"README.md:{start}: block {block!r} ends inside a continued line")
    return out


def journey_blocks(readme: Path) -> dict[str, list[Command]]:
    """Every marked block of ``readme``, in order; a marker not followed by a fenced block is an error."""
    rows = readme.read_text().splitlines()
    blocks: dict[str, list[Command]] = {}
    i = 0
    while i < len(rows):
        m = MARK.match(rows[i])
        if not m:
            i += 1
            continue
        name = m.group(1)
        if name in blocks:
            raise ValueError(f"README.md:{i + 1}: journey {name!r} marked twice")
        if i + 1 >= len(rows) or not FENCE.match(rows[i + 1]):
            raise ValueError(f"README.md:{i + 1}: the journey marker {name!r} must be followed by a fenced block")
        j = i + 2
        while j < len(rows) and not FENCE.match(rows[j]):
            j += 1
        if j == len(rows):
            raise ValueError(f"README.md:{i + 2}: unclosed fenced block of journey {name!r}")
        blocks[name] = parse_commands(name, [(n + 1, rows[n]) for n in range(i + 2, j)])
        i = j + 1
    return blocks


def fenced_blocks(readme: Path) -> list[tuple[int, str | None, str]]:
    """Every fenced block: (line of its opening fence, its journey name or None, its text)."""
    rows = readme.read_text().splitlines()
    out, i = [], 0
    while i < len(rows):
        if FENCE.match(rows[i]):
            j = i + 1
            while j < len(rows) and not FENCE.match(rows[j]):
                j += 1
            m = MARK.match(rows[i - 1]) if i else None
            out.append((i + 1, m.group(1) if m else None, "\n".join(rows[i + 1:j])))
            i = j + 1
        else:
            i += 1
    return out
