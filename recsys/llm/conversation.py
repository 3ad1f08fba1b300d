"""Conversational constraints: a message becomes ``Constraints`` (+ reference titles) or one question.

Choice (measured, see experiments/conversation.md): with a 135M model the LLM
is a poor reader of English requests, so the primary extractor is rule-based
over the catalogue's own vocabulary (``recsys.llm.conversation_rules``) and its
result is validated by the ``Constraints`` schema. The LLM reads what the
rules cannot: messages the rules find nothing in, and messages that are not
English (checked first, by their function words). Its output is constrained
while decoding to a JSON schema derived from ``Constraints`` (genres as an
enum of the catalogue's genres; ``llm_schema``) where the backend can enforce
it (llguidance in the transformers backend, structured outputs in vLLM,
``response_format`` for OpenAI-compatible servers), and parsed and validated
strictly either way; if that fails too, the user gets a clarifying question.
A stronger model (``llm=vllm``) can be made primary with ``llm_first=True``.

Multi-turn state is kept per session id in a ``sessions`` object (``get`` /
``put`` / ``drop``): :class:`MemorySessions` in this process by default (the most
recent ``max_sessions``); the server passes ``recsys.serve.sessions.StoreSessions``,
which keeps them in the feedback store, so any worker can take any turn. Each
turn refines the previous constraints. Genres named in a follow-up
replace the earlier ones ("actually a musical instead"), unless it says "also"
/ "too"; years and counts named again replace the old ones ("only from the
90s"); exclusions accumulate, and a later include lifts an earlier exclusion
(and vice versa); "start over" clears everything. Contradictions inside one
message (include and exclude the same genre, year_min > year_max) produce a
clarifying question.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Protocol

from pydantic import ValidationError

from recsys.core.candidates import Constraints
from recsys.llm.conversation_refs import (correct_genre_typos, correct_title_typos, drop_answer, drop_part,
                                          find_age, find_positions, unknown_words)
from recsys.llm.conversation_rules import CUES, DECADE_WORDS, NUMWORDS, RuleExtractor, translate
from recsys.llm.parsing import extract_json_object

MAX_WORDS = 20  # quoted words kept per session and list
_RESET = re.compile(r"\b(start over|start again|reset|forget (that|everything|it)|new search|from scratch)\b", re.I)
_EN = {"the", "a", "an", "and", "or", "with", "without", "from", "something", "movie", "movies", "film", "films",
       "want", "like", "me", "some", "i", "no", "not", "more", "please", "show", "give", "any", "about"}
_FOREIGN = {"je", "une", "un", "des", "les", "le", "la", "pas", "sans", "avec", "veux", "voudrais", "comme", "ça",
            "années", "ich", "einen", "eine", "nicht", "ohne", "mit", "und", "möchte", "bitte", "keine", "kein",
            "jahre", "filme", "wie", "der", "die", "das", "quiero", "una", "películas", "sin", "con", "del", "de", "du",
            "et", "quelque", "chose", "j'ai", "pour", "moi", "est", "ist", "ein", "für", "mir", "etwas", "gern", "el",
            "los", "algo", "para", "similaire", "ähnlich", "ähnliches", "noch", "mehr", "plus", "encore", "aus", "den"}
SYSTEM_PARSE = (
    "You turn a movie request, in any language, into JSON search constraints. Genres must come from this "
    "list, in English: {genres}. like_titles are movie titles the user names as examples. Use null for years "
    "and max_results that the user does not give."
)
# few-shot turns: English, French and German; the schema forces the shape, these teach the mapping
EXAMPLES = [
    ("Je voudrais une comédie des années 90, pas d'horreur",
     {"include_categories": ["Comedy"], "exclude_categories": ["Horror"], "year_min": 1990, "year_max": 1999,
      "max_results": None, "like_titles": []}),
    ("Ich möchte drei Science-Fiction-Filme vor 1980",
     {"include_categories": ["Sci-Fi"], "exclude_categories": [], "year_min": None, "year_max": 1979,
      "max_results": 3, "like_titles": []}),
    ("I adored Casablanca, more of that please",
     {"include_categories": [], "exclude_categories": [], "year_min": None, "year_max": None,
      "max_results": None, "like_titles": ["Casablanca"]}),
]


@dataclass
class Turn:
    """Result of one message: constraints (+ reference items) to search with, or a question to ask."""

    session_id: str
    constraints: Constraints | None
    question: str | None
    source: str  # "rules", "llm", "llm+rules", "state" or "none"
    like_items: list[int] = field(default_factory=list)  # item_idx the user named as examples (never returned)
    notes: list[str] = field(default_factory=list)  # what was read differently or not used ("read 'comdey' as Comedy")
    age: int | None = None  # the age the user gave in this session (request field or "I am 30")


@dataclass
class SessionState:
    """A conversation between turns: the constraints, the reference items, the last list shown
    (item_idx, in order: what "the second one" means), the part an empty list's question offered to
    drop (a ``recsys.pipeline.filters`` part key) and the age the user gave."""

    constraints: Constraints
    like: list[int] = field(default_factory=list)
    shown: list[int] = field(default_factory=list)
    pending: str | None = None
    age: int | None = None


class Sessions(Protocol):
    """Where a conversation's state lives between turns: a ``SessionState`` per session id."""

    def get(self, session_id: str) -> SessionState | None: ...
    def put(self, session_id: str, state: SessionState) -> None: ...
    def drop(self, session_id: str) -> None: ...


class MemorySessions:
    """Sessions in this process (the most recently used ``max_sessions``): one process only."""

    def __init__(self, max_sessions: int = 10000) -> None:
        self.max_sessions = int(max_sessions)
        self._state: OrderedDict[str, SessionState] = OrderedDict()

    def get(self, session_id: str) -> SessionState | None:
        got = self._state.get(session_id)
        if got is not None:
            self._state.move_to_end(session_id)
        return got

    def put(self, session_id: str, state: SessionState) -> None:
        self._state[session_id] = replace(state, like=list(state.like), shown=list(state.shown))
        self._state.move_to_end(session_id)
        while len(self._state) > self.max_sessions:
            self._state.popitem(last=False)

    def drop(self, session_id: str) -> None:
        self._state.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._state)


def llm_schema(categories: list[str]) -> dict:
    """The ``Constraints`` JSON schema narrowed for decoding: genres as an enum, every key required, no others."""
    full = Constraints.model_json_schema()["properties"]
    genre_list = {"type": "array", "items": {"enum": list(categories)}, "maxItems": 4}
    props = {
        "include_categories": genre_list, "exclude_categories": genre_list,
        "year_min": full["year_min"], "year_max": full["year_max"], "max_results": full["max_results"],
        "like_titles": {"type": "array", "items": {"type": "string", "maxLength": 60}, "maxItems": 2},
    }
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False,
            # llguidance: compact separators (fewer tokens to decode); other engines ignore x- keys
            "x-guidance": {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}}


def looks_foreign(message: str) -> bool:
    """True when the message has more French/German/Spanish function words than English ones."""
    words = re.findall(r"[\wäöüßéèêàçñ']+", message.lower())
    foreign = sum(w in _FOREIGN or bool(re.search(r"[äöüßéèêàçñ]", w)) for w in words)
    return foreign > sum(w in _EN for w in words)


class ConversationParser:
    """Per-session conversational front end.

    Args:
        categories: genre vocabulary (``meta.vocabularies["categories"]``).
        backend: optional ``LLMBackend`` for what the rules cannot read.
        llm_first: ask the LLM first and fall back to the rules (for strong models).
        titles: ``{lower-cased core title: item_idx}`` for references ("like Fargo").
        max_sessions: sessions kept by the default in-process ``MemorySessions``.
        sessions: where sessions live (``Sessions``; the server's ``StoreSessions`` shares them).
    """

    def __init__(self, categories: list[str], backend=None, llm_first: bool = False, max_new_tokens: int = 96,
                 accounting=None, titles: dict[str, int] | None = None, max_sessions: int = 10000,
                 sessions: Sessions | None = None) -> None:
        if not categories:
            raise ValueError("ConversationParser needs the genre vocabulary (meta.vocabularies['categories'])")
        self.categories = list(categories)
        self.titles = dict(titles or {})
        self.rules = RuleExtractor(self.categories, self.titles)
        self.backend, self.llm_first, self.max_new_tokens = backend, bool(llm_first), int(max_new_tokens)
        self.accounting = accounting
        self.schema = llm_schema(self.categories)
        self.sessions: Sessions = sessions if sessions is not None else MemorySessions(max_sessions)
        self._title_words = {w for t in self.titles for w in re.findall(r"[a-z]+", t)}  # real words, not typos

    # -- LLM fallback ----------------------------------------------------------
    def prompt(self, message: str) -> list[dict]:
        msgs = [{"role": "system", "content": SYSTEM_PARSE.format(genres=", ".join(self.categories))}]
        for text, answer in EXAMPLES:
            msgs += [{"role": "user", "content": text}, {"role": "assistant", "content": json.dumps(answer)}]
        return msgs + [{"role": "user", "content": message[:500]}]

    def llm_extract(self, message: str) -> dict:
        """LLM JSON (schema-constrained) -> validated fields; {} when there is no backend or it is unusable."""
        if self.backend is None:
            return {}
        prompt = self.prompt(message)
        before = self.backend.stats.snapshot()
        text = self.backend.generate([prompt], max_new_tokens=self.max_new_tokens, json_schema=self.schema)[0]
        fields = parse_constraints_json(text, self.categories, self.titles, message=message)
        if self.accounting is not None:
            after = self.backend.stats.snapshot()
            self.accounting.record_batch(
                "conversation", 1, after["prompt_tokens"] - before["prompt_tokens"],
                after["generated_tokens"] - before["generated_tokens"],
                1000.0 * (after["latency_s"] - before["latency_s"]), parse_failures=int(not fields),
                samples=[(prompt, text)])
        return fields

    def read(self, message: str, use_llm: bool = True) -> tuple[dict, str, str]:
        """-> (fields, source, the text nothing read). A non-English message goes to the LLM first, and
        the rules read its glossary translation too: a field the rules found wins, the LLM's fill the rest.
        ``use_llm=False``: the rules only (what is left of a message whose references were read already)."""
        if looks_foreign(message):
            llm = self.llm_extract(message)
            rules = self.rules.extract(translate(message))
            rules.pop("rest", None)  # glossary words are not the user's: no unknown-word notes
            fields = {**llm, **rules}
            source = "+".join(n for n, f in (("llm", llm), ("rules", rules)) if _meaningful(f)) or "none"
            return fields, source, ""
        rules = self.rules.extract(message)
        rest = rules.pop("rest", message)
        if _meaningful(rules) and not self.llm_first or not use_llm:
            return (rules, "rules", rest) if _meaningful(rules) else ({}, "none", rest)
        llm = self.llm_extract(message)
        if _meaningful(llm):
            return llm, "llm", ""
        return (rules, "rules", rest) if _meaningful(rules) else ({}, "none", rest)

    def _known_words(self, items: list[int]) -> set[str]:
        """Words nothing should call unknown: genre words, number and decade words, the named titles' words."""
        words = {w for k in self.rules.lookup for w in k.split()} | set(NUMWORDS) | set(DECADE_WORDS)
        names = {i: t for t, i in self.titles.items()}
        return words | {w for i in items for w in re.findall(r"[a-z][a-z'-]+", names.get(i, ""))}

    def _ask(self, session_id: str, unknown: list[str], notes: list[str]) -> Turn:
        said = ("I did not recognise " + ", ".join(f"'{w}'" for w in unknown) + " as a genre, decade or title. "
                if unknown else "I did not catch what you are looking for. ")
        return Turn(session_id, None, said + f"Which genre ({', '.join(sorted(self.categories))}) or decade would "
                    "you like, or a movie you enjoyed?", "none", notes=notes)

    # -- one turn --------------------------------------------------------------
    def turn(self, session_id: str, message: str, age: int | None = None) -> Turn:
        """One message -> a Turn; ``age`` is the request's age field (a stated "I am 30" also counts)."""
        if message is None or not str(message).strip():
            return Turn(session_id, None, "What would you like to watch? A genre, a decade or a mood helps.", "none")
        if _RESET.search(message):
            self.sessions.drop(session_id)
            message = _RESET.sub(" ", message)
        prev = self.sessions.get(session_id) or SessionState(Constraints())
        said_age, message = find_age(message)
        age = age if age is not None else said_age if said_age is not None else prev.age
        notes = [f"read your age as {said_age}"] if said_age is not None else []
        dropped = drop_answer(message)
        verb = re.search(r"\b(?:drop|remove|lose|forget|ignore|skip)\b", message, re.I)
        if dropped is not None and not prev.constraints.is_empty() and (dropped != "pending" or prev.pending or verb):
            what = prev.pending if dropped == "pending" else dropped
            if what is None:
                return Turn(session_id, None, "Which part should I drop: the years, the genres or the words?", "state")
            c, said = drop_part(prev.constraints, what)
            state = replace(prev, constraints=c, pending=None, age=age)
            self.sessions.put(session_id, state)
            return Turn(session_id, c, None, "state", list(prev.like), [said], age)
        refs, message = find_positions(message)
        picked: dict[bool, list[int]] = {True: [], False: []}
        for pos, negative in refs:
            if not prev.shown:
                return Turn(session_id, None, "Which film do you mean? This conversation has not shown a list yet: "
                            "name the title instead.", "none", age=age)
            if not (pos == -1 or 1 <= pos <= len(prev.shown)):
                return Turn(session_id, None, f"The last list had {len(prev.shown)} films: which one do you mean?",
                            "state", age=age)
            picked[negative].append(prev.shown[-1 if pos == -1 else pos - 1])
        foreign = looks_foreign(message)
        if not foreign:
            message, typo = correct_genre_typos(message, self.rules.lookup, self._title_words)
            message, typo_t = correct_title_typos(message, self.titles, lambda i: self._title(i), CUES)
            notes += typo + typo_t
        # "more like the second one": the reference is read; the LLM is not asked about the rest of it
        fields, source, rest = self.read(message, use_llm=not refs)
        like = list(dict.fromkeys([*fields.pop("like_titles", []), *picked[False]]))
        excluded = list(dict.fromkeys([*fields.pop("exclude_items", []), *picked[True]]))
        if excluded:
            fields["exclude_items"] = excluded
        unknown = unknown_words(re.sub(r"[\"“][^\"“”]*[\"”]", " ", rest), self._known_words(like + excluded))
        if refs and source == "none":
            source = "state"
        if not _meaningful(fields) and not refs and not like:
            if not prev.constraints.is_empty() or prev.like or said_age is not None:
                if unknown:
                    notes.append("I did not use " + ", ".join(f"'{w}'" for w in unknown) + ": not a genre, decade "
                                 "or title I know")
                self.sessions.put(session_id, replace(prev, age=age))
                return Turn(session_id, prev.constraints, None, "state", list(prev.like), notes, age)
            return self._ask(session_id, unknown, notes)
        if unknown:
            notes.append("I did not use " + ", ".join(f"'{w}'" for w in unknown) + ": not a genre, decade or title I know")
        mode = fields.pop("mode", "replace")
        try:
            new = Constraints(**fields)  # contradictions inside one message raise here
        except ValidationError as e:
            return Turn(session_id, None, _question_for(e), source, notes=notes)
        merged = merge(prev.constraints, new, mode)
        like = [i for i in (like or prev.like) if i not in set(merged.exclude_items)]
        self.sessions.put(session_id, replace(prev, constraints=merged, like=like, pending=None, age=age))
        return Turn(session_id, merged, None, source, like, notes, age)

    def shown(self, session_id: str, items: list[int], pending: str | None = None) -> None:
        """Record the list a turn showed (what "the second one" refers to next) and the part its question
        offered to drop (``recsys.pipeline.filters`` part key; None when it asked nothing)."""
        prev = self.sessions.get(session_id)
        if prev is not None:
            self.sessions.put(session_id, replace(prev, shown=[int(i) for i in items][:100], pending=pending))

    def _title(self, item: int) -> str:
        names = {i: t for t, i in self.titles.items()}
        return names.get(item, str(item)).title()


def title_index(titles: list[str] | None, popularity=None) -> dict[str, int]:
    """{lower-cased core title: item_idx} for title references; a title shared by several items names
    the most watched one."""
    from recsys.llm.explain import core_title

    out: dict[str, int] = {}
    for i, t in enumerate(titles or []):
        key = core_title(t)
        if key and (key not in out or (popularity is not None and popularity[i] > popularity[out[key]])):
            out[key] = i
    return out


def _meaningful(fields: dict) -> bool:
    return any(v not in ([], None, "") for k, v in fields.items() if k != "mode")


def merge(prev: Constraints | None, new: Constraints, mode: str = "replace") -> Constraints:
    """A follow-up turn over the previous state (see the module docstring for the rules)."""
    if prev is None:
        return new
    low = lambda xs: {c.lower() for c in xs}  # noqa: E731
    new_genres = [*new.include_categories, *new.require_categories]
    if new_genres and mode != "add":  # named genres replace the earlier ones
        inc, req = list(new.include_categories), list(new.require_categories)
    else:
        inc = list(dict.fromkeys([*prev.include_categories, *new.include_categories]))
        req = list(dict.fromkeys([*prev.require_categories, *new.require_categories]))
        if mode == "add" and new_genres and inc and not req:  # "also funny": AND with what was asked
            inc, req = [], list(dict.fromkeys([*prev.include_categories, *new_genres]))
    exc_new = low(new.exclude_categories)
    inc = [c for c in inc if c.lower() not in exc_new]
    req = [c for c in req if c.lower() not in exc_new]
    exc = [c for c in prev.exclude_categories if c.lower() not in low(new_genres)] + \
          [c for c in new.exclude_categories if c.lower() not in low(prev.exclude_categories)]
    years_named = new.year_min is not None or new.year_max is not None
    return Constraints(
        include_categories=inc, require_categories=[c for c in req if c not in inc], exclude_categories=exc,
        year_min=new.year_min if years_named else prev.year_min, year_max=new.year_max if years_named else prev.year_max,
        # bounded like a request's lists (RequestConstraints): a session's state stays small
        must_have_words=sorted(set(prev.must_have_words) | set(new.must_have_words))[:MAX_WORDS],
        exclude_words=sorted(set(prev.exclude_words) | set(new.exclude_words))[:MAX_WORDS],
        exclude_items=sorted(set(prev.exclude_items) | set(new.exclude_items)),
        max_results=new.max_results if new.max_results is not None else prev.max_results,
    )


def parse_constraints_json(text: str, categories: list[str], titles: dict[str, int] | None = None,
                           message: str | None = None) -> dict:
    """Strictly read the LLM's JSON: the schema's keys only, genres from the vocabulary, years in range.

    Any unknown key, unknown genre or wrongly typed value rejects the whole answer ({}), as a
    schema-constrained decoder cannot produce them; ``like_titles`` that match no catalogue
    title are dropped (the model may misspell one), the rest become item_idx.
    """
    obj = extract_json_object(text)  # linear time, bounded length and depth, never raises
    allowed = {"include_categories", "exclude_categories", "year_min", "year_max", "max_results", "like_titles"}
    if obj is None or set(obj) - allowed:
        return {}
    known = {c.lower(): c for c in categories}
    out: dict = {}
    for key in ("include_categories", "exclude_categories"):
        vals = obj.get(key) or []
        if not isinstance(vals, list) or not all(isinstance(v, str) and v.lower() in known for v in vals):
            return {}
        if vals:
            out[key] = list(dict.fromkeys(known[v.lower()] for v in vals))
    for key in ("year_min", "year_max", "max_results"):
        v = obj.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
            return {}
        if v is not None:
            out[key] = v
    names = obj.get("like_titles") or []
    if not isinstance(names, list) or not all(isinstance(t, str) for t in names):
        return {}
    from recsys.llm.explain import core_title

    said = " ".join(re.findall(r"\w+", (message or "").lower()))
    like = [titles[core_title(t)] for t in names if titles and core_title(t) in titles
            and (message is None or " ".join(re.findall(r"\w+", core_title(t))) in said)]
    if like:
        out["like_titles"] = list(dict.fromkeys(like))
    if len(out.get("include_categories", [])) > 1:  # several genres named at once are a compound genre
        out["require_categories"] = out.pop("include_categories")
    try:
        Constraints(**{k: v for k, v in out.items() if k != "like_titles"})
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
