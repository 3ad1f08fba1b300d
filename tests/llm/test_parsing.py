"""Strict parsing of listwise answers; fuzzed outputs never yield an unknown or repeated label."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.llm.parsing import apply_order, parse_ranking

LABELS = list("ABCDE")


def test_plain_list_forms():
    for text in ["C, A, B", "C > A > B", '["C", "A", "B"]', "C A B", " c,a,b. "]:
        r = parse_ranking(text, LABELS)
        assert r.ok and r.order == [2, 0, 1], text


def test_json_with_extra_fields_is_accepted_and_counted():
    r = parse_ranking(json.dumps({"ranking": ["B", "A"], "reason": "x", "confidence": 1}), LABELS)
    assert r.ok and r.order == [1, 0] and r.extra_fields == 2


def test_wrong_and_duplicated_ids_are_dropped_and_counted():
    r = parse_ranking("B, Z, B, A, Q", LABELS)
    assert r.order == [1, 0] and r.invalid_ids == 2 and r.duplicates == 1
    assert apply_order(r, 5) == [1, 0, 2, 3, 4]


def test_failures():
    for text in ["", None, "   ", "I think the user would enjoy movie B the most.", '{"ranking": ["A", "B"', '{"order": ["A"]}',
                 '{"ranking": [1, 2]}', "Z, Y"]:
        r = parse_ranking(text, LABELS)
        assert not r.ok, text
        assert r.order == []


_fuzz_text = st.one_of(
    st.text(max_size=60),
    st.lists(st.sampled_from(list("ABCDEFGHZ") + ["AA", "a", " ", "?"]), max_size=12).map(", ".join),
    st.builds(lambda xs, extra: json.dumps({"ranking": xs, **extra}),
              st.lists(st.one_of(st.sampled_from(list("ABCDEZ")), st.integers()), max_size=8),
              st.dictionaries(st.sampled_from(["why", "score"]), st.integers(), max_size=2)),
    st.lists(st.sampled_from(list("ABCDE")), max_size=8).map(lambda xs: json.dumps({"ranking": xs})[:-3]),  # truncated
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_fuzz_text)
def test_fuzzed_outputs_only_known_labels_once(text):
    r = parse_ranking(text, LABELS)
    assert all(0 <= i < len(LABELS) for i in r.order)
    assert len(set(r.order)) == len(r.order)
    assert r.ok == bool(r.order)
    perm = apply_order(r, len(LABELS))
    assert sorted(perm) == list(range(len(LABELS)))
