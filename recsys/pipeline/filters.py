"""Business-rule filters: stages that only remove candidates, never reorder them.

Each filter is a plain object ``__call__(ctx, cands) -> Candidates`` that
keeps the surviving rows in their current order and adds the number it removed
to ``cands.trace["removed"][<name>]`` (so a response can say why a list is
short). They read item attributes from an :class:`ItemCatalog`, which the
pipeline builder injects (``instantiate(cfg, catalog=...)``).

A filter is a hard rule: whatever the order of stages after it, no item it
removed comes back (later stages only reorder or take a subset), which the
property test in ``tests/pipeline/test_filters_property.py`` checks on the
final lists.
"""

from __future__ import annotations

import numpy as np

from recsys.core.candidates import Candidates, UserContext
from recsys.pipeline.catalog import ItemCatalog


def _apply(name: str, cands: Candidates, keep: np.ndarray) -> Candidates:
    """Keep rows where ``keep`` is True and count the others under ``name``."""
    removed = int(len(keep) - keep.sum())
    counts = cands.trace.setdefault("removed", {})
    counts[name] = counts.get(name, 0) + removed
    return cands if removed == 0 else cands.take(keep)


class AvailabilityFilter:
    """Drop items the catalogue marks unavailable (out of stock, withdrawn)."""

    name = "unavailable"

    def __init__(self, catalog: ItemCatalog):
        self.catalog = catalog

    def __call__(self, ctx: UserContext, cands: Candidates) -> Candidates:
        return _apply(self.name, cands, self.catalog.available[cands.items])


class AgeFilter:
    """Drop items whose ``age_rating`` exceeds the user's age.

    Adults (``age >= adult_age``) see everything. The user's age is
    ``ctx.demographics["age"]``; when it is missing (cold start, a user who did
    not say), ``unknown_age`` is assumed: the default 0 shows only items rated
    for everyone, the conservative choice; set it to ``adult_age`` to trust
    unknown users instead.
    """

    name = "age_restricted"

    def __init__(self, catalog: ItemCatalog, adult_age: int = 18, unknown_age: int = 0):
        self.catalog, self.adult_age, self.unknown_age = catalog, adult_age, unknown_age

    def user_age(self, ctx: UserContext) -> int:
        age = ctx.demographics.get("age")
        try:
            return int(age) if age is not None and int(age) >= 0 else self.unknown_age
        except (TypeError, ValueError):
            return self.unknown_age

    def __call__(self, ctx: UserContext, cands: Candidates) -> Candidates:
        age = self.user_age(ctx)
        if age >= self.adult_age:
            return _apply(self.name, cands, np.ones(len(cands), dtype=bool))
        return _apply(self.name, cands, self.catalog.age_rating[cands.items] <= age)


class ConsumedFilter:
    """Drop items already in the user's long-term history or current session."""

    name = "consumed"

    def __init__(self, include_session: bool = True):
        self.include_session = include_session

    def __call__(self, ctx: UserContext, cands: Candidates) -> Candidates:
        seen = ctx.history
        if self.include_session and len(ctx.session):
            seen = np.concatenate([seen, ctx.session])
        return _apply(self.name, cands, ~np.isin(cands.items, seen))


class NegativeFeedbackFilter:
    """Drop items the user gave negative feedback on (low rating, "not interested")."""

    name = "negative_feedback"

    def __call__(self, ctx: UserContext, cands: Candidates) -> Candidates:
        return _apply(self.name, cands, ~np.isin(cands.items, ctx.negative_items))


class ConstraintFilter:
    """Apply the caller's :class:`Constraints` (categories, years, words, excluded items).

    Category names unknown to the catalogue match nothing: an unknown
    ``include_categories`` entry therefore filters everything out (the caller
    asked for something that does not exist), an unknown exclusion removes
    nothing. Words match case-insensitively as substrings of title + text.
    An item of unknown year (-1) fails any year bound.
    """

    name = "constraints"

    def __init__(self, catalog: ItemCatalog):
        self.catalog = catalog

    def mask(self, ctx: UserContext, items: np.ndarray) -> np.ndarray:
        """(K,) bool: which items satisfy every constraint."""
        c, cat = ctx.constraints, self.catalog
        keep = np.ones(len(items), dtype=bool)
        if c.exclude_items:
            keep &= ~np.isin(items, np.asarray(c.exclude_items, dtype=np.int64))
        if c.include_categories:
            ids = [i for i in (cat.category_id(n) for n in c.include_categories) if i is not None]
            keep &= cat.has_any_category(items, ids)
        if c.exclude_categories:
            ids = [i for i in (cat.category_id(n) for n in c.exclude_categories) if i is not None]
            keep &= ~cat.has_any_category(items, ids)
        year = cat.year[items]
        if c.year_min is not None:
            keep &= (year >= c.year_min)
        if c.year_max is not None:
            keep &= (year >= 0) & (year <= c.year_max)
        if c.must_have_words or c.exclude_words:
            must = [w.lower() for w in c.must_have_words]
            never = [w.lower() for w in c.exclude_words]
            for j in np.flatnonzero(keep):
                text = cat.text_of(int(items[j]))
                keep[j] = all(w in text for w in must) and not any(w in text for w in never)
        return keep

    def __call__(self, ctx: UserContext, cands: Candidates) -> Candidates:
        if ctx.constraints.is_empty():
            return _apply(self.name, cands, np.ones(len(cands), dtype=bool))
        return _apply(self.name, cands, self.mask(ctx, cands.items))


def violations(catalog: ItemCatalog, ctx: UserContext, items: np.ndarray, adult_age: int = 18,
               unknown_age: int = 0) -> list[str]:
    """Every rule a final list breaks, as readable strings (empty list = clean).

    An independent, item-by-item restatement of the filters above, used by
    tests and by the serving layer's self-check.
    """
    out = []
    age = AgeFilter(catalog, adult_age, unknown_age).user_age(ctx)
    seen = set(ctx.history.tolist()) | set(ctx.session.tolist())
    negative = set(ctx.negative_items.tolist())
    c = ctx.constraints
    inc = {n.lower() for n in c.include_categories}
    exc = {n.lower() for n in c.exclude_categories}
    for i in map(int, items):
        cats = {n.lower() for n in catalog.category_names(i)}
        text = catalog.text_of(i)
        year = int(catalog.year[i])
        checks = {
            "unavailable": not catalog.available[i],
            "age": age < adult_age and catalog.age_rating[i] > age,
            "consumed": i in seen,
            "negative": i in negative,
            "excluded item": i in set(c.exclude_items),
            "include_categories": bool(inc) and not (cats & inc),
            "exclude_categories": bool(cats & exc),
            "year_min": c.year_min is not None and year < c.year_min,
            "year_max": c.year_max is not None and not (0 <= year <= c.year_max),
            "must_have_words": any(w.lower() not in text for w in c.must_have_words),
            "exclude_words": any(w.lower() in text for w in c.exclude_words),
        }
        out += [f"item {i}: {rule}" for rule, bad in checks.items() if bad]
    if len(set(map(int, items))) != len(items):
        out.append("duplicate items")
    return out
