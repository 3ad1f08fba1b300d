"""Conversational constraints: a message becomes ``Constraints`` or one clarifying question.

Choice (measured, see experiments/ml100k/llm_rerank.md): with a 135M model,
free-form JSON from the LLM is unreliable (it invents fields and genres), so
the primary extractor is rule-based over the catalogue's own vocabulary
(genres, decades, years, negations, counts, quoted words), and the result is
validated by the ``Constraints`` pydantic schema. The LLM is the fallback for
messages the rules cannot read: it writes JSON, which is parsed strictly,
filtered to known genres and validated by the same schema; if that fails too,
the user gets a clarifying question instead of items. A stronger model
(``llm=vllm``) can be made primary with ``llm_first=True``.

Multi-turn state is kept per session id: each turn refines the previous
constraints (a later "no comedy" removes an earlier "comedy"); "start over"
clears them. Contradictions inside one message (include and exclude the same
genre, year_min > year_max) produce a clarifying question.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from pydantic import ValidationError

from recsys.core.candidates import Constraints

# mood words -> genres (the ML vocabulary); only used when the genre is in the catalogue's vocabulary
MOODS = {
    "light": ["Comedy"], "funny": ["Comedy"], "fun": ["Comedy"], "comedies": ["Comedy"], "comedy": ["Comedy"],
    "scary": ["Horror"], "horror": ["Horror"], "romantic": ["Romance"], "romance": ["Romance"],
    "kids": ["Children's"], "children": ["Children's"], "family": ["Children's"], "animated": ["Animation"],
    "cartoon": ["Animation"], "thrilling": ["Thriller"], "suspense": ["Thriller"], "sci-fi": ["Sci-Fi"],
    "scifi": ["Sci-Fi"], "science fiction": ["Sci-Fi"], "space": ["Sci-Fi"], "war": ["War"],
    "western": ["Western"], "westerns": ["Western"], "musical": ["Musical"], "documentary": ["Documentary"],
    "crime": ["Crime"], "mystery": ["Mystery"], "action": ["Action"], "adventure": ["Adventure"],
    "drama": ["Drama"], "dramas": ["Drama"], "noir": ["Film-Noir"], "fantasy": ["Fantasy"],
}
_NEG = r"(?:no|not|without|avoid|except|nothing|never|hate|don't want|dont want|skip|exclude|but not)"
_NUMWORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
_RESET = re.compile(r"\b(start over|reset|forget (that|everything)|new search)\b", re.I)

SYSTEM_PARSE = (
    "Extract movie search constraints from the user's message as JSON with keys include_categories, "
    "exclude_categories, year_min, year_max, must_have_words, exclude_words. Only use genres from this list: {genres}. "
    "Answer with JSON only."
)


@dataclass
class Turn:
    """Result of one message: constraints to search with, or a question to ask."""

    session_id: str
    constraints: Constraints | None
    question: str | None
    source: str  # "rules", "llm", "state" or "none"


class RuleExtractor:
    """Deterministic message -> constraint fields over a genre vocabulary."""

    def __init__(self, categories: list[str]) -> None:
        self.categories = list(categories)
        self.lookup: dict[str, list[str]] = {}
        known = {c.lower(): c for c in self.categories}
        for c in self.categories:
            self.lookup[c.lower()] = [c]
        for word, cats in MOODS.items():
            cs = [known[c.lower()] for c in cats if c.lower() in known]
            if cs:
                self.lookup.setdefault(word, cs)

    def extract(self, message: str) -> dict:
        out: dict = {"include_categories": [], "exclude_categories": [], "must_have_words": [], "exclude_words": []}
        # quoted words first, then blank them out so a quoted "war" is a word, not the genre
        for m in re.finditer(r"(" + _NEG + r"\s+)?[\"“]([^\"“”]{2,40})[\"”]", message, re.I):
            out["exclude_words" if m.group(1) else "must_have_words"].append(m.group(2).strip().lower())
        message = re.sub(r"[\"“][^\"“”]{2,40}[\"”]", " ", message)
        text = " " + message.lower().replace("’", "'") + " "
        for word in sorted(self.lookup, key=len, reverse=True):  # longest first: "science fiction" before "fiction"
            for m in re.finditer(r"(?<![\w-])" + re.escape(word) + r"(?![\w-])", text):
                before = text[max(0, m.start() - 30) : m.start()]
                # negation scope: a negator within the last few words, not cut by "but"/"and want"
                clause = re.split(r"\bbut\b(?!\s+not)|\band\b|[,;.]", before)[-1]
                neg = re.search(r"\b" + _NEG + r"\b[\w\s'-]*$", clause) is not None
                key = "exclude_categories" if neg else "include_categories"
                for c in self.lookup[word]:
                    if c not in out[key]:
                        out[key].append(c)
                text = text[: m.start()] + " " * (m.end() - m.start()) + text[m.end():]  # consume
        for m in re.finditer(r"\b(?:(19|20)(\d)0|(\d)0)'?s\b", text):  # 1990s / 90s / 90's
            decade = int((m.group(1) or "19") + (m.group(2) or m.group(3)) + "0") if m.group(1) else 1900 + int(m.group(3)) * 10
            if decade < 1920:
                decade += 100
            out["year_min"], out["year_max"] = decade, decade + 9
        if m := re.search(r"\bbetween (\d{4}) and (\d{4})\b", text):
            out["year_min"], out["year_max"] = int(m.group(1)), int(m.group(2))
        if m := re.search(r"\b(?:after|since|newer than|from) (\d{4})\b", text):
            out["year_min"] = int(m.group(1)) + (1 if "after" in m.group(0) or "newer" in m.group(0) else 0)
        if m := re.search(r"\b(?:before|older than|until|up to) (\d{4})\b", text):
            out["year_max"] = int(m.group(1)) - (0 if "until" in m.group(0) or "up to" in m.group(0) else 1)
        if m := re.search(r"\b(?:in|from) (\d{4})\b(?!s)", text):
            if "year_min" not in out and "year_max" not in out:
                out["year_min"] = out["year_max"] = int(m.group(1))
        nouns = r"(?:movies|films|titles|picks|options|recommendations|comedies|dramas|thrillers|westerns|musicals|documentaries|cartoons)"
        # on the unconsumed message: "three romantic comedies" counts although its genre words were consumed above
        if m := re.search(r"\b(\d{1,3}|" + "|".join(_NUMWORDS) + r")\s+(?:[\w'-]+\s+){0,2}?" + nouns + r"\b", message.lower()):
            n = m.group(1)
            out["max_results"] = int(n) if n.isdigit() else _NUMWORDS[n]
        return {k: v for k, v in out.items() if v not in ([], None)}


class ConversationParser:
    """Per-session conversational front end.

    Args:
        categories: genre vocabulary (``meta.vocabularies["categories"]``).
        backend: optional ``LLMBackend`` used when the rules find nothing.
        llm_first: ask the LLM first and fall back to the rules (for strong models).
    """

    def __init__(self, categories: list[str], backend=None, llm_first: bool = False,
                 max_new_tokens: int = 96, accounting=None) -> None:
        if not categories:
            raise ValueError("ConversationParser needs the genre vocabulary (meta.vocabularies['categories'])")
        self.rules = RuleExtractor(categories)
        self.categories = list(categories)
        self.backend, self.llm_first, self.max_new_tokens = backend, bool(llm_first), int(max_new_tokens)
        self.accounting = accounting
        self.sessions: dict[str, Constraints] = {}

    # -- LLM fallback ----------------------------------------------------------
    def llm_extract(self, message: str) -> dict:
        """LLM JSON -> known fields with known genres only; {} when unusable."""
        if self.backend is None:
            return {}
        prompt = [{"role": "system", "content": SYSTEM_PARSE.format(genres=", ".join(self.categories))},
                  {"role": "user", "content": message[:500]}]
        before = self.backend.stats.snapshot()
        text = self.backend.generate([prompt], max_new_tokens=self.max_new_tokens)[0]
        fields = parse_constraints_json(text, self.categories)
        if self.accounting is not None:
            after = self.backend.stats.snapshot()
            self.accounting.record_batch(
                "conversation", 1, after["prompt_tokens"] - before["prompt_tokens"],
                after["generated_tokens"] - before["generated_tokens"],
                1000.0 * (after["latency_s"] - before["latency_s"]), parse_failures=int(not fields),
                samples=[(prompt, text)])
        return fields

    # -- one turn --------------------------------------------------------------
    def turn(self, session_id: str, message: str) -> Turn:
        if message is None or not str(message).strip():
            return Turn(session_id, None, "What would you like to watch? A genre, a decade or a mood helps.", "none")
        if _RESET.search(message):
            self.sessions.pop(session_id, None)
            message = _RESET.sub(" ", message)
        first, second = (self.llm_extract, self.rules.extract) if self.llm_first else (self.rules.extract, self.llm_extract)
        fields, source = first(message), "llm" if self.llm_first else "rules"
        if not fields:
            fields, source = second(message), "rules" if self.llm_first else "llm"
        prev = self.sessions.get(session_id)
        if not fields:
            if prev is not None and not prev.is_empty():
                return Turn(session_id, prev, None, "state")
            return Turn(session_id, None, "I did not catch what you are looking for: which genre or decade would you like?", "none")
        try:
            new = Constraints(**fields)  # contradictions inside one message raise here
        except ValidationError as e:
            return Turn(session_id, None, _question_for(e), source)
        merged = merge(prev, new)
        self.sessions[session_id] = merged
        return Turn(session_id, merged, None, source)


def merge(prev: Constraints | None, new: Constraints) -> Constraints:
    """Later turn wins: its excludes drop earlier includes and vice versa; years override."""
    if prev is None:
        return new
    inc_new = {c.lower() for c in new.include_categories}
    exc_new = {c.lower() for c in new.exclude_categories}
    inc = [c for c in prev.include_categories if c.lower() not in exc_new] + [c for c in new.include_categories if c not in prev.include_categories]
    exc = [c for c in prev.exclude_categories if c.lower() not in inc_new] + [c for c in new.exclude_categories if c not in prev.exclude_categories]
    ymin = new.year_min if new.year_min is not None else prev.year_min
    ymax = new.year_max if new.year_max is not None else prev.year_max
    if ymin is not None and ymax is not None and ymin > ymax:  # a new range replaces the old one entirely
        ymin, ymax = new.year_min, new.year_max
    return Constraints(
        include_categories=inc, exclude_categories=exc, year_min=ymin, year_max=ymax,
        must_have_words=sorted(set(prev.must_have_words) | set(new.must_have_words)),
        exclude_words=sorted(set(prev.exclude_words) | set(new.exclude_words)),
        exclude_items=sorted(set(prev.exclude_items) | set(new.exclude_items)),
        max_results=new.max_results if new.max_results is not None else prev.max_results,
    )


def parse_constraints_json(text: str, categories: list[str]) -> dict:
    """Strictly read the first JSON object in ``text``; keep known keys and known genres only."""
    m = re.search(r"\{.*?\}", str(text or ""), re.S)
    if not m:
        return {}
    try:
        obj = json.loads(m.group(0))
    except json.JSONDecodeError:
        return {}
    if not isinstance(obj, dict):
        return {}
    known = {c.lower(): c for c in categories}
    out: dict = {}
    for key in ("include_categories", "exclude_categories"):
        vals = obj.get(key) or []
        vals = [vals] if isinstance(vals, str) else vals
        cs = [known[v.lower()] for v in vals if isinstance(v, str) and v.lower() in known]
        if cs:
            out[key] = list(dict.fromkeys(cs))
    for key in ("year_min", "year_max"):
        v = obj.get(key)
        if isinstance(v, int) and 1800 <= v <= 2100:
            out[key] = v
    for key in ("must_have_words", "exclude_words"):
        vals = obj.get(key) or []
        ws = [v.strip().lower() for v in (vals if isinstance(vals, list) else []) if isinstance(v, str) and 1 < len(v.strip()) <= 40]
        if ws:
            out[key] = ws
    try:
        Constraints(**out)
    except ValidationError:
        return {}
    return out


def _question_for(err: ValidationError) -> str:
    msg = str(err.errors()[0].get("msg", ""))
    if "both included and excluded" in msg:
        genres = msg.split(":", 1)[-1].strip()
        return f"You asked both for and against {genres}: should I include it or leave it out?"
    if "year_min" in msg:
        return "The year range you gave is empty: which years do you mean?"
    return "I could not use that request: could you rephrase the genres or years you want?"
