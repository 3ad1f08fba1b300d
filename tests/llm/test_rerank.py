"""LLMReranker bookkeeping with a scripted backend: exact orders, permutations, fallbacks, invalid ids."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_fakes import ScriptedBackend, candidate_titles_in_prompt, tiny_items
from recsys.llm.accounting import LLMAccounting
from recsys.llm.rerank import LLMReranker
from recsys.core.candidates import Candidates, UserContext

ITEMS = tiny_items(30)


def cands(ids, scores=None):
    ids = np.asarray(ids)
    scores = np.linspace(1.0, 0.0, len(ids)) if scores is None else scores
    return Candidates(ids, scores, np.array(["src"] * len(ids)), {"f": np.arange(len(ids), dtype=np.float32)})


def prefers_high_numbers(prompt, labels):
    """Log-prob proportional to the item number: the LLM wants the highest item first."""
    nums = candidate_titles_in_prompt(prompt)
    row = np.full(len(labels), -50.0)
    row[: len(nums)] = np.asarray(nums, dtype=float)
    return row


def test_blend_one_follows_llm_and_blend_zero_keeps_order():
    be = ScriptedBackend(score_fn=prefers_high_numbers)
    c = cands([3, 7, 5, 1])
    out = LLMReranker(be, ITEMS, top_n=4, blend=1.0)(UserContext(history=np.array([0])), c)
    assert out.items.tolist() == [7, 5, 3, 1]
    assert out.features["f"].tolist() == [1.0, 2.0, 0.0, 3.0]  # features move with their items
    assert out.features["prev_score"].tolist() == pytest.approx([c.scores[1], c.scores[2], c.scores[0], c.scores[3]])
    same = LLMReranker(be, ITEMS, top_n=4, blend=0.0)(UserContext(), c)
    assert same.items.tolist() == [3, 7, 5, 1]


def test_only_top_n_reranked_tail_keeps_order_and_scores_descend():
    be = ScriptedBackend(score_fn=prefers_high_numbers)
    out = LLMReranker(be, ITEMS, top_n=3, blend=1.0)(UserContext(), cands([1, 2, 9, 4, 0]))
    assert out.items.tolist() == [9, 2, 1, 4, 0]
    assert np.all(np.diff(out.scores) < 0)


def test_permutations_map_scores_back_to_items():
    be = ScriptedBackend(score_fn=prefers_high_numbers)
    rr = LLMReranker(be, ITEMS, top_n=5, blend=1.0, n_permutations=4, seed=3)
    out = rr(UserContext(), cands([4, 8, 2, 6, 0]))
    assert out.items.tolist() == [8, 6, 4, 2, 0]  # position-independent preference survives shuffles
    assert be.calls == [("score", 4)]


def test_position_bias_is_averaged_out():
    # a model that only likes position A: with one order it promotes whatever is first
    be = ScriptedBackend(score_fn=lambda p, labels: np.array([5.0] + [0.0] * (len(labels) - 1)))
    c = cands([4, 8, 2, 6, 0])
    one = LLMReranker(be, ITEMS, top_n=5, blend=1.0)(UserContext(), c)
    assert one.items[0] == 4
    many = LLMReranker(be, ITEMS, top_n=5, blend=1.0, n_permutations=40, seed=0)(UserContext(), c)
    spread = np.ptp(many.features["llm_score"])
    assert spread < np.ptp(one.features["llm_score"]) / 2


def test_batch_is_one_backend_call_and_equals_single():
    be = ScriptedBackend(score_fn=prefers_high_numbers)
    rr = LLMReranker(be, ITEMS, top_n=4, blend=0.5, n_permutations=2)
    lists = [cands([1, 2, 3, 4]), cands([9, 8, 7]), cands([5])]
    ctxs = [UserContext(history=np.array([i])) for i in range(3)]
    batch = rr.rerank_batch(ctxs, lists)
    assert be.calls == [("score", 4)]  # 2 lists x 2 permutations; the 1-item list needs no LLM
    for ctx, c, b in zip(ctxs, lists, batch):
        assert rr(ctx, c).items.tolist() == b.items.tolist()
    assert batch[2].items.tolist() == [5] and batch[2].trace["llm_rerank"]["fallback"] is False


def test_unscorable_labels_fall_back_and_are_counted():
    be = ScriptedBackend(score_fn=lambda p, labels: np.full(len(labels), -np.inf))
    acc = LLMAccounting()
    out = LLMReranker(be, ITEMS, top_n=4, accounting=acc)(UserContext(), cands([3, 1, 2]))
    assert out.items.tolist() == [3, 1, 2]
    assert out.trace["llm_rerank"]["fallback"] and out.trace["llm_rerank"]["parse_failures"] == 1
    assert acc.summary()["llm/rerank/parse_failures"] == 1


@pytest.mark.parametrize("text,expected,fallback,invalid", [
    ("C, A, B, D", [12, 10, 11, 13], False, 0),
    ('{"ranking": ["D", "D", "Q"], "why": "fun"}', [13, 10, 11, 12], False, 1),
    ("The best movie is clearly the first one.", [10, 11, 12, 13], True, 0),
    ("", [10, 11, 12, 13], True, 0),
    ('{"ranking": ["B", "A"', [10, 11, 12, 13], True, 0),
])
def test_listwise_parse(text, expected, fallback, invalid):
    be = ScriptedBackend(texts=[text])
    out = LLMReranker(be, ITEMS, top_n=4, blend=1.0, mode="listwise")(UserContext(), cands([10, 11, 12, 13]))
    assert out.items.tolist() == expected
    assert out.trace["llm_rerank"]["fallback"] is fallback
    assert out.trace["llm_rerank"]["invalid_ids"] == invalid


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.one_of(st.text(max_size=40), st.lists(st.sampled_from(list("ABCDEFXYZ")), max_size=10).map(", ".join)),
       st.floats(0.0, 1.0))
def test_fuzzed_listwise_output_never_invents_ids(text, blend):
    be = ScriptedBackend(texts=[text])
    ids = [21, 5, 17, 2, 9, 11]
    out = LLMReranker(be, ITEMS, top_n=6, blend=blend, mode="listwise")(UserContext(), cands(ids))
    assert sorted(out.items.tolist()) == sorted(ids)
    info = out.trace["llm_rerank"]
    assert info["fallback"] == (info["parse_failures"] == 1)
    if info["fallback"]:
        assert out.items.tolist() == ids


def test_bad_arguments():
    be = ScriptedBackend()
    with pytest.raises(ValueError, match="top_n"):
        LLMReranker(be, ITEMS, top_n=40)
    with pytest.raises(ValueError, match="blend"):
        LLMReranker(be, ITEMS, blend=2)
    with pytest.raises(ValueError, match="mode"):
        LLMReranker(be, ITEMS, mode="pointwise")
