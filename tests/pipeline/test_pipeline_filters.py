"""Filters: hand-made cases per rule, and a property test over whole pipelines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys.core.candidates import Candidates, Constraints, UserContext
from recsys.pipeline.catalog import ItemCatalog
from recsys.pipeline.diversity import CategoryCap, MMRDiversifier
from recsys.pipeline.exploration import ThompsonExploration
from recsys.pipeline.filters import (AgeFilter, AvailabilityFilter, ConstraintFilter, ConsumedFilter,
                                     NegativeFeedbackFilter, violations)
from recsys.pipeline.pipeline import Pipeline
from recsys.retrieval.merge import CandidateMerger

from pipeline_helpers import CATEGORIES, WORDS, ListSource, make_catalog


def tiny_catalog() -> ItemCatalog:
    items = pd.DataFrame(dict(
        item_idx=[0, 1, 2, 3, 4],
        title=["Toy Story", "Scream", "Alien", "Heat", "Babe"],
        year=[1995, 1996, 1979, -1, 1995],
        categories=[["Children's", "Comedy"], ["Horror"], ["Sci-Fi", "Horror"], ["Action"], ["Children's"]],
        text=["toys come alive", "a killer calls", "in space no one can hear you scream", "a heist", "a pig"],
        available=[True, True, False, True, True],
        age_rating=[0, 18, 17, 13, 0],
    ))
    return ItemCatalog.from_items(items)


def all_five() -> Candidates:
    return Candidates(np.arange(5), np.linspace(1, 0, 5), np.full(5, "t", dtype=object))


def test_each_filter_removes_exactly_its_items_and_counts_them():
    cat = tiny_catalog()
    cands = all_five()
    out = AvailabilityFilter(cat)(UserContext(), cands)
    assert out.items.tolist() == [0, 1, 3, 4] and cands.trace["removed"]["unavailable"] == 1

    teen = UserContext(user_idx=1, demographics={"age": 14})
    assert AgeFilter(cat)(teen, all_five()).items.tolist() == [0, 3, 4]
    adult = UserContext(user_idx=1, demographics={"age": 30})
    assert AgeFilter(cat)(adult, all_five()).items.tolist() == [0, 1, 2, 3, 4]
    # unknown age: conservative default shows only all-ages items; configurable
    assert AgeFilter(cat)(UserContext(), all_five()).items.tolist() == [0, 4]
    assert AgeFilter(cat, unknown_age=18)(UserContext(), all_five()).items.tolist() == [0, 1, 2, 3, 4]

    ctx = UserContext(user_idx=0, history=np.array([1, 2]), session=np.array([4]))
    c = all_five()
    assert ConsumedFilter()(ctx, c).items.tolist() == [0, 3] and c.trace["removed"]["consumed"] == 3
    assert ConsumedFilter(include_session=False)(ctx, all_five()).items.tolist() == [0, 3, 4]

    neg = UserContext(user_idx=0, negative_items=np.array([0, 3]))
    assert NegativeFeedbackFilter()(neg, all_five()).items.tolist() == [1, 2, 4]


@pytest.mark.parametrize("constraints, expected", [
    (Constraints(), [0, 1, 2, 3, 4]),
    (Constraints(include_categories=["horror"]), [1, 2]),
    (Constraints(include_categories=["Western"]), []),          # unknown category: nothing matches
    (Constraints(exclude_categories=["Children's", "Western"]), [1, 2, 3]),
    (Constraints(year_min=1990), [0, 1, 4]),
    (Constraints(year_max=1990), [2]),                           # unknown year fails a bound
    (Constraints(must_have_words=["SPACE"]), [2]),
    (Constraints(exclude_words=["a "]), [0, 2]),
    (Constraints(exclude_items=[0, 4]), [1, 2, 3]),
    (Constraints(include_categories=["Horror"], year_min=1990, exclude_items=[2]), [1]),
])
def test_constraint_filter_cases(constraints, expected):
    cands = all_five()
    out = ConstraintFilter(tiny_catalog())(UserContext(constraints=constraints), cands)
    assert out.items.tolist() == expected
    assert cands.trace["removed"]["constraints"] == 5 - len(expected)


def test_filters_keep_order_and_features():
    cat = tiny_catalog()
    cands = Candidates(np.array([4, 3, 0]), np.array([3.0, 2.0, 1.0]), np.array(["a", "b", "c"], dtype=object),
                       {"f": np.array([10.0, 20.0, 30.0])})
    out = ConstraintFilter(cat)(UserContext(constraints=Constraints(exclude_items=[3])), cands)
    assert out.items.tolist() == [4, 0] and out.features["f"].tolist() == [10.0, 30.0]
    assert out.sources.tolist() == ["a", "c"]


def build(catalog, n_slots: int, k: int, lambda_: float, cap: int):
    rng = np.random.default_rng(1)
    n = len(catalog)
    sources = {"a": ListSource("a", rng.permutation(n)[:40], rng.random(40)),
               "b": ListSource("b", rng.permutation(n)[:40], rng.random(40))}
    stages = {
        "available": AvailabilityFilter(catalog), "age": AgeFilter(catalog), "consumed": ConsumedFilter(),
        "negative": NegativeFeedbackFilter(), "constraints": ConstraintFilter(catalog),
        "mmr": MMRDiversifier(catalog, lambda_=lambda_, k=3 * k),
        "cap": CategoryCap(catalog, max_per_category=cap, k=2 * k, strict=False),
        "exploration": ThompsonExploration(catalog, n_slots=n_slots, k=k, seed=3),
    }
    return Pipeline(sources, CandidateMerger(), stages, k=k)


CATALOG = make_catalog(60, seed=7)
ids = st.lists(st.integers(0, 59), max_size=15)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    age=st.one_of(st.none(), st.integers(0, 90)),
    history=ids, session=ids, negative=ids, excluded=ids,
    include=st.lists(st.sampled_from(CATEGORIES + ["Western"]), max_size=2, unique=True),
    exclude=st.lists(st.sampled_from(CATEGORIES), max_size=2, unique=True),
    year_min=st.one_of(st.none(), st.integers(1960, 2010)),
    must=st.lists(st.sampled_from(WORDS), max_size=1), never=st.lists(st.sampled_from(WORDS), max_size=2),
    k=st.integers(1, 12), n_slots=st.integers(0, 3), lambda_=st.floats(0, 1), cap=st.integers(1, 4),
)
def test_no_final_list_ever_violates_a_filter(age, history, session, negative, excluded, include, exclude,
                                              year_min, must, never, k, n_slots, lambda_, cap):
    include = [c for c in include if c not in exclude]
    constraints = Constraints(include_categories=include, exclude_categories=exclude, year_min=year_min,
                              must_have_words=must, exclude_words=never, exclude_items=excluded)
    ctx = UserContext(user_idx=0, history=np.array(history, dtype=np.int64), session=np.array(session, dtype=np.int64),
                      negative_items=np.array(negative, dtype=np.int64), constraints=constraints,
                      demographics={} if age is None else {"age": age})
    out = build(CATALOG, min(n_slots, k), k, lambda_, cap)(ctx)
    assert len(out) <= k
    assert violations(CATALOG, ctx, out.items) == []
    assert set(out.trace["removed"]) >= {"unavailable", "age_restricted", "consumed", "negative_feedback", "constraints"}


def test_violations_detects_a_bad_list():
    """The checker itself can fail: an unfiltered list breaks rules."""
    cat = tiny_catalog()
    ctx = UserContext(user_idx=0, history=np.array([0]), demographics={"age": 10})
    bad = violations(cat, ctx, np.array([0, 1, 2, 2]))
    assert "item 0: consumed" in bad and "item 1: age" in bad and "item 2: unavailable" in bad
    assert "duplicate items" in bad
