"""Strict, linear-time parsing of LLM output. LLM output is untrusted input.

Listwise ranking answers (``parse_ranking``); whitespace around them is ignored:

* a bare list of labels: ``C, A, B`` / ``C > A > B`` / ``["C", "A"]`` / ``C A B``;
* JSON ``{"ranking": ["C", "A", ...]}`` (other keys are ignored and counted);
* either of these inside a fenced block (```` ``` ````).

Anything else (prose, empty text, truncated JSON) is a parse failure: the
caller keeps the previous stage's order and counts the failure. Labels that
are not in the candidate set are dropped and counted as invalid ids;
repeated labels keep their first position and are counted as duplicates.
The result therefore only ever contains known labels, each at most once.

``extract_json_object`` finds the first JSON object in free text (a model that
writes "Sure! {...}"), for callers that want a dict, e.g. the conversation parser.

Hostile output must not cost more than its length: no backtracking regex
(the old list pattern was exponential in the number of labels, a ``\\{.*?\\}``
search quadratic in the number of braces) and no recursion on nesting depth.
Both parsers are single left-to-right scans, input longer than
``MAX_LLM_OUTPUT_CHARS`` is refused before any scan (a parse failure, never an
exception), and JSON nested deeper than ``MAX_JSON_DEPTH`` is refused before
``json.loads`` sees it, so it cannot raise ``RecursionError``.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field

# Longest LLM answer parsed. Legitimate answers are a few hundred characters at most
# (listwise: 26 labels; constraints JSON: a handful of keys; both under ~100 new tokens),
# so this is > 10x any real answer while bounding the worst-case work per answer.
MAX_LLM_OUTPUT_CHARS = 8192
# Deepest {}/[] nesting accepted; every answer format we read has depth <= 2.
MAX_JSON_DEPTH = 16

_LETTERS = frozenset(string.ascii_letters)
_PUNCT_SEPARATORS = frozenset(",>;")
# Characters that matter to the brace scanner; one regex character class (no backtracking).
_JSON_SPECIAL = re.compile(r'[{}\[\]"\\]')


@dataclass
class ParseResult:
    order: list[int] = field(default_factory=list)  # positions into the label list, best first
    ok: bool = False
    invalid_ids: int = 0
    duplicates: int = 0
    extra_fields: int = 0
    error: str = ""
    truncated: bool = False  # the answer exceeded MAX_LLM_OUTPUT_CHARS and was not read


def _finish(tokens: list, labels: list[str], extra_fields: int = 0) -> ParseResult:
    pos = {lab.upper(): i for i, lab in enumerate(labels)}
    res = ParseResult(extra_fields=extra_fields)
    seen: set[int] = set()
    for t in tokens:
        i = pos.get(t.strip().upper()) if isinstance(t, str) else None
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


# --------------------------------------------------------------------------- JSON


def _object_end(text: str, start: int, max_depth: int) -> tuple[int, int]:
    """Match the ``{`` at ``text[start]`` with its ``}`` in one pass, without recursion.

    Tracks ``{}``/``[]`` nesting with an explicit stack and skips string contents
    (``"..."`` with backslash escapes). Returns ``(end, resume)``: ``end`` is the
    index after the matching brace, ``-1`` if there is none (text ends first, or a
    closer does not match its opener); ``resume`` is where a search for a later
    object may continue (so successive calls never re-read a character), or
    ``-1`` when nothing later can be an object (text ended, or nesting exceeded
    ``max_depth``: hostile or broken, not worth a second look).
    """
    stack: list[str] = []
    in_string = False
    escaped_until = -1
    for m in _JSON_SPECIAL.finditer(text, start):
        i = m.start()
        if i < escaped_until:  # the character after a backslash inside a string
            continue
        c = text[i]
        if in_string:
            if c == "\\":
                escaped_until = i + 2
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "{[":
            stack.append("}" if c == "{" else "]")
            if len(stack) > max_depth:
                return -1, -1
        elif c in "}]":
            if stack.pop() != c:
                return -1, i + 1
            if not stack:
                return i + 1, i + 1
        # a backslash outside a string is invalid JSON; json.loads reports it
    return -1, -1


def _loads_object(span: str) -> dict | None:
    """``json.loads`` of a depth-checked span; ``None`` unless it is a strict-JSON object."""

    def _no_constants(name: str):
        raise ValueError(f"{name} is not JSON")

    try:  # ValueError covers JSONDecodeError and integers longer than Python's digit limit
        obj = json.loads(span, parse_constant=_no_constants)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def extract_json_object(text: str | None, max_chars: int = MAX_LLM_OUTPUT_CHARS,
                        max_depth: int = MAX_JSON_DEPTH) -> dict | None:
    """The first balanced top-level JSON object in ``text`` that parses, or ``None``.

    Linear in ``len(text)``: one scan finds each candidate ``{...}`` (brackets inside
    strings ignored) and ``json.loads`` reads each candidate once; a candidate that
    is not valid JSON (``{genre}``) is skipped and the search goes on after it.
    ``None`` (never an exception) when ``text`` is empty or longer than
    ``max_chars``, when no object closes, or when nesting exceeds ``max_depth``.
    ``NaN``/``Infinity`` are rejected (not JSON). Callers must still check the keys
    and value types they use: this returns whatever the object holds.
    """
    text = "" if text is None else str(text)
    if len(text) > max_chars:
        return None
    pos = text.find("{")
    while pos >= 0:
        end, resume = _object_end(text, pos, max_depth)
        if end > 0 and (obj := _loads_object(text[pos:end])) is not None:
            return obj
        if resume < 0:
            return None
        pos = text.find("{", resume)
    return None


# --------------------------------------------------------------------------- label lists


def _skip_spaces(s: str, i: int) -> int:
    while i < len(s) and s[i].isspace():
        i += 1
    return i


def _item_at(s: str, i: int) -> tuple[str | None, int]:
    """Read ``"?label"?`` (a label is 1-2 ASCII letters) at ``i`` -> (label, next index)."""
    if i < len(s) and s[i] == '"':
        i += 1
    j = i
    while j < len(s) and s[j] in _LETTERS and j - i < 3:  # 3: a run longer than 2 is rejected
        j += 1
    if not 1 <= j - i <= 2:
        return None, i
    label = s[i:j]
    if j < len(s) and s[j] == '"':
        j += 1
    return label, j


def _starts_item(s: str, i: int) -> bool:
    return i < len(s) and (s[i] == '"' or s[i] in _LETTERS)


def _list_tokens(s: str) -> list[str] | None:
    """Tokenise a bare label list in one pass; ``None`` if ``s`` is not one.

    Grammar (``s`` already stripped; ``ws`` is any whitespace)::

        answer := "["? ws* item (sep item)* ws* ","? ws* "]"? "."?
        item   := '"'? letter letter? '"'?
        sep    := ws* ("," | ">" | ";") ws*  |  ws+

    Every character is looked at a bounded number of times, so this is linear.
    """
    i = 1 if s.startswith("[") else 0
    i = _skip_spaces(s, i)
    tokens: list[str] = []
    while True:
        label, i = _item_at(s, i)
        if label is None:
            return None
        tokens.append(label)
        j = _skip_spaces(s, i)
        if j < len(s) and s[j] in _PUNCT_SEPARATORS:
            k = _skip_spaces(s, j + 1)
            if _starts_item(s, k):
                i = k
                continue
            if s[j] != ",":  # only a comma may trail the last label
                return None
            i = k
            break
        if j > i and _starts_item(s, j):  # whitespace alone separates labels
            i = j
            continue
        i = j
        break
    if i < len(s) and s[i] == "]":
        i += 1
    if i < len(s) and s[i] == ".":
        i += 1
    return tokens if i == len(s) else None


def _unfence(s: str) -> str:
    """Strip a ```` ```lang ... ``` ```` fence (no regex: a run of spaces is read once)."""
    i = 3
    while i < len(s) and s[i] in _LETTERS:
        i += 1
    body = s[i:]
    if body.endswith("```"):
        body = body[:-3]
    return body.strip()


def parse_ranking(text: str | None, labels: list[str], max_chars: int = MAX_LLM_OUTPUT_CHARS) -> ParseResult:
    """Parse a listwise answer into positions of ``labels`` (see module docstring).

    Linear in ``len(text)``; never raises on any string. An answer longer than
    ``max_chars`` is not read: a parse failure with ``truncated=True``.
    """
    if text is None:
        return ParseResult(error="empty answer")
    s = str(text)
    if len(s) > max_chars:
        return ParseResult(error=f"answer longer than {max_chars} characters", truncated=True)
    s = s.strip()
    if not s:
        return ParseResult(error="empty answer")
    if s.startswith("```"):  # a fenced block is accepted only if it holds one of the forms
        s = _unfence(s)
    if s.startswith("{"):
        end, _ = _object_end(s, 0, MAX_JSON_DEPTH)
        obj = _loads_object(s) if end == len(s) else None
        if obj is None:
            return ParseResult(error="answer is not one valid JSON object")
        if not isinstance(obj.get("ranking"), list):
            return ParseResult(error="JSON without a 'ranking' list")
        if not all(isinstance(x, str) for x in obj["ranking"]):
            return ParseResult(error="'ranking' must be a list of labels")
        return _finish(obj["ranking"], labels, extra_fields=len(obj) - 1)
    tokens = _list_tokens(s)
    if tokens is None:
        return ParseResult(error="answer is not a list of labels")
    return _finish(tokens, labels)


def apply_order(parse: ParseResult, k: int) -> list[int]:
    """Full permutation of range(k): parsed positions first, the rest in previous order."""
    head = [i for i in parse.order if 0 <= i < k]
    taken = set(head)
    return head + [i for i in range(k) if i not in taken]
