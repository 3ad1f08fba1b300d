"""Strict parsing of LLM ranking output. LLM output is untrusted input.

Accepted forms (whitespace around them is ignored):

* a bare list of labels: ``C, A, B`` / ``C > A > B`` / ``["C", "A"]`` / ``C A B``;
* JSON ``{"ranking": ["C", "A", ...]}`` (other keys are ignored and counted).

Anything else (prose, empty text, truncated JSON) is a parse failure: the
caller keeps the previous stage's order and counts the failure. Labels that
are not in the candidate set are dropped and counted as invalid ids;
repeated labels keep their first position and are counted as duplicates.
The result therefore only ever contains known labels, each at most once.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

_LIST = re.compile(r'^\[?\s*"?[A-Za-z]{1,2}"?(?:\s*(?:,|>|;|\s)\s*"?[A-Za-z]{1,2}"?)*\s*,?\s*\]?\.?$')
_TOKEN = re.compile(r"[A-Za-z]{1,2}")


@dataclass
class ParseResult:
    order: list[int] = field(default_factory=list)  # positions into the label list, best first
    ok: bool = False
    invalid_ids: int = 0
    duplicates: int = 0
    extra_fields: int = 0
    error: str = ""


def _finish(tokens: list[str], labels: list[str], extra_fields: int = 0) -> ParseResult:
    pos = {lab.upper(): i for i, lab in enumerate(labels)}
    res = ParseResult(extra_fields=extra_fields)
    seen: set[int] = set()
    for t in tokens:
        i = pos.get(str(t).strip().upper()) if isinstance(t, str) else None
        if i is None:
            res.invalid_ids += 1
        elif i in seen:
            res.duplicates += 1
        else:
            seen.add(i)
            res.order.append(i)
    res.ok = bool(res.order)
    if not res.ok:
        res.error = "no known label in the answer"
    return res


def parse_ranking(text: str | None, labels: list[str]) -> ParseResult:
    """Parse a listwise answer into positions of ``labels`` (see module docstring)."""
    if text is None or not str(text).strip():
        return ParseResult(error="empty answer")
    s = str(text).strip()
    if s.startswith("```"):  # a fenced block is accepted only if it holds one of the forms
        s = re.sub(r"^```[a-zA-Z]*\s*|\s*```$", "", s).strip()
    if s.startswith("{"):
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as e:
            return ParseResult(error=f"invalid JSON: {e.msg}")
        if not isinstance(obj, dict) or not isinstance(obj.get("ranking"), list):
            return ParseResult(error="JSON without a 'ranking' list")
        if not all(isinstance(x, str) for x in obj["ranking"]):
            return ParseResult(error="'ranking' must be a list of labels")
        return _finish(obj["ranking"], labels, extra_fields=len(obj) - 1)
    if not _LIST.match(s):
        return ParseResult(error="answer is not a list of labels")
    return _finish(_TOKEN.findall(s), labels)


def apply_order(parse: ParseResult, k: int) -> list[int]:
    """Full permutation of range(k): parsed positions first, the rest in previous order."""
    head = [i for i in parse.order if 0 <= i < k]
    rest = [i for i in range(k) if i not in set(head)]
    return head + rest
