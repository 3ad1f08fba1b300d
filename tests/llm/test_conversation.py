"""Message -> Constraints (rules first, validated), clarifying questions, per-session state."""

import pytest

from llm_fakes import ScriptedBackend
from recsys.llm.conversation import ConversationParser, parse_constraints_json
from recsys.core.candidates import Constraints

GENRES = ["Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
          "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]


@pytest.mark.parametrize("message,expected", [
    ("something light from the 90s, no horror",
     Constraints(include_categories=["Comedy"], exclude_categories=["Horror"], year_min=1990, year_max=1999)),
    ("top 5 sci-fi movies before 1980", Constraints(include_categories=["Sci-Fi"], year_max=1979, max_results=5)),
    ("a western from the 1960s but not a musical",
     Constraints(include_categories=["Western"], exclude_categories=["Musical"], year_min=1960, year_max=1969)),
    ("films between 1985 and 1990 without thriller", Constraints(exclude_categories=["Thriller"], year_min=1985, year_max=1990)),
    ('something about "space" but avoid "zombie"', Constraints(must_have_words=["space"], exclude_words=["zombie"])),
    ("three romantic comedies", Constraints(require_categories=["Romance", "Comedy"], max_results=3)),
])
def test_rules(message, expected):
    t = ConversationParser(GENRES).turn("s", message)
    assert t.question is None and t.source == "rules"
    got = t.constraints
    assert sorted(got.include_categories) == sorted(expected.include_categories)
    assert sorted(got.require_categories) == sorted(expected.require_categories)
    blank = {"include_categories": [], "require_categories": []}
    assert got.model_copy(update=blank) == expected.model_copy(update=blank)


def test_contradiction_and_vagueness_ask_one_question():
    p = ConversationParser(GENRES)
    t = p.turn("s", "a comedy, but no comedy")
    assert t.constraints is None and "comedy" in t.question.lower()
    t = p.turn("s", "between 1999 and 1990")  # bounds in either order read as the range
    assert (t.constraints.year_min, t.constraints.year_max) == (1990, 1999)
    t = p.turn("s2", "hmm, surprise me")
    assert t.constraints is None and t.question.endswith("?") and t.source == "none"


def test_multi_turn_state_per_session():
    p = ConversationParser(GENRES)
    p.turn("a", "comedy from the 80s")
    p.turn("b", "horror")
    t = p.turn("a", "actually no comedy, something with action")
    assert t.constraints.include_categories == ["Action"]
    assert t.constraints.exclude_categories == ["Comedy"] and t.constraints.year_min == 1980
    assert p.turn("b", "ok").constraints.include_categories == ["Horror"]  # unchanged state is kept
    t = p.turn("a", "start over: a drama")
    assert t.constraints == Constraints(include_categories=["Drama"])


def test_llm_fallback_json_is_validated_strictly():
    good = ('{"include_categories": ["Drama"], "exclude_categories": [], "year_min": 1970, "year_max": null, '
            '"max_results": null, "like_titles": []}')
    be = ScriptedBackend(texts=[good])
    t = ConversationParser(GENRES, backend=be).turn("s", "I want to cry tonight")
    assert t.source == "llm" and t.constraints == Constraints(include_categories=["Drama"], year_min=1970)
    # an unknown key or genre rejects the whole answer: a schema-constrained decoder cannot write it
    for bad in ('{"include_categories": ["Drama", "Cyberpunk"]}', '{"include_categories": ["Drama"], "mood": "sad"}'):
        t = ConversationParser(GENRES, backend=ScriptedBackend(texts=[bad])).turn("s", "I want to cry tonight")
        assert t.constraints is None and t.question


@pytest.mark.parametrize("text", ["", "no json here", "{broken", '{"include_categories": ["Horror"], "exclude_categories": ["horror"]}',
                                  '{"year_min": 2000, "year_max": 1990}', "[1, 2]"])
def test_bad_llm_json_gives_nothing(text):
    assert parse_constraints_json(text, GENRES) == {}


def test_llm_json_is_read_by_the_linear_time_parser():
    """Prose around the object, a brace before it, hostile nesting and length: read or refused, fast, no raise."""
    import time

    good = '{"include_categories": ["Drama"], "year_min": 1970}'
    assert parse_constraints_json(f"Sure! {{genre}} here: {good} Enjoy.", GENRES) == {
        "include_categories": ["Drama"], "year_min": 1970}
    hostile = ["[" * 100_000, "{" * 100_000, '{"a": ' * 50_000 + "1" + "}" * 50_000, "{}" * 200_000,
               good + " " * 10_000]  # the last is over the parser's length cap: refused, not truncated
    for text in hostile:
        t0 = time.perf_counter()
        assert parse_constraints_json(text, GENRES) == {}
        assert time.perf_counter() - t0 < 1.0


def test_llm_reference_titles_must_be_in_the_message():
    """SmolLM2 copied its few-shot example ("Casablanca") for "more like the second one": a title the
    message does not contain is not a reference."""
    text = ('{"include_categories": [], "exclude_categories": [], "year_min": null, "year_max": null, '
            '"max_results": null, "like_titles": ["Casablanca"]}')
    titles = {"casablanca": 482, "fargo": 99}
    assert "like_titles" not in parse_constraints_json(text, GENRES, titles, message="more like the second one")
    assert parse_constraints_json(text, GENRES, titles, message="I adored Casablanca")["like_titles"] == [482]
    p = ConversationParser(GENRES, backend=ScriptedBackend(texts=[text]), titles=titles)
    t = p.turn("s", "something to cry to, like my favourite")
    assert 482 not in t.like_items


def test_positions_need_a_list_and_refer_to_the_last_one():
    p = ConversationParser(GENRES)
    t = p.turn("s", "more like the second one")
    assert t.constraints is None and "not shown a list" in t.question
    p.turn("s", "a comedy")
    p.shown("s", [7, 8, 9])
    t = p.turn("s", "more like the second one")
    assert t.like_items == [8] and t.constraints.include_categories == ["Comedy"]
    t = p.turn("s", "not the last one")
    assert t.constraints.exclude_items == [9]
    assert "3 films" in p.turn("s", "more like number 5").question
    for message in ("comedies from the last 10 years", "a drama for the first time in ages"):  # not references
        assert p.turn("s", message).question is None, message


def test_typos_and_unknown_words_are_named_not_dropped():
    p = ConversationParser(GENRES)
    t = p.turn("s", "I want a romantic comdey from the 80s")
    assert sorted(t.constraints.require_categories) == ["Comedy", "Romance"] and "read 'comdey' as Comedy" in t.notes
    t = p.turn("t", "k-drama from the 2000s")
    assert t.constraints.year_min == 2000 and any("'k-drama'" in n for n in t.notes)
    assert "'telenovela'" in p.turn("u", "genre: telenovela").question
    q = p.turn("v", "hello there").question  # the genres of the question are sorted
    listed = q[q.index("(") + 1: q.index(")")].split(", ")
    assert listed == sorted(GENRES)
    t = p.turn("w", "I like crime and prime time")  # 'prime' is a word, not a typo of 'crime'
    assert t.constraints.include_categories == ["Crime"] and not any("prime" in n and "read" in n for n in t.notes)


def test_age_is_read_and_kept_for_the_session():
    p = ConversationParser(GENRES)
    t = p.turn("s", "I am 30 years old, a horror film please")
    assert t.age == 30 and t.constraints.include_categories == ["Horror"] and t.constraints.max_results is None
    assert p.turn("s", "only from the 90s").age == 30
    assert p.turn("x", "a comedy", age=12).age == 12


def test_a_position_reference_is_not_sent_to_the_llm():
    """With llm=smollm2, "more like the second one" came back as like Casablanca (the few-shot example)."""
    text = ('{"include_categories": ["Drama"], "exclude_categories": [], "year_min": null, "year_max": null, '
            '"max_results": null, "like_titles": ["Casablanca"]}')
    be = ScriptedBackend(texts=[text] * 3)
    p = ConversationParser(GENRES, backend=be, titles={"casablanca": 482})
    p.turn("s", "a western")
    p.shown("s", [5, 6, 7])
    t = p.turn("s", "more like the second one")
    assert t.like_items == [6] and t.constraints.include_categories == ["Western"] and t.source == "state"
