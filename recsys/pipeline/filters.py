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

from recsys.core.candidates import Candidates, Constraints, UserContext
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
    unknown users instead. Because that rule is one the user did not ask for,
    a request whose genres (constraints or onboarding) it hides is told so in
    ``trace["warnings"]`` (ML-100K rates every Horror film 18).
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

    @staticmethod
    def age_known(ctx: UserContext) -> bool:
        return ctx.demographics.get("age") is not None

    def __call__(self, ctx: UserContext, cands: Candidates) -> Candidates:
        age = self.user_age(ctx)
        if age >= self.adult_age:
            return _apply(self.name, cands, np.ones(len(cands), dtype=bool))
        keep = self.catalog.age_rating[cands.items] <= age
        if not keep.all():
            note = age_note(self.catalog, ctx, self)
            if note:
                cands.trace.setdefault("warnings", []).append(note)
        return _apply(self.name, cands, keep)

    def constraint_rule(self) -> "ConstraintFilter":
        if getattr(self, "_rule", None) is None:
            self._rule = ConstraintFilter(self.catalog)  # its (N, C) genre matrix is built once
        return self._rule


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def year_words(lo: int | None, hi: int | None) -> str:
    """A year bound in words: "the year 2005", "1995 and later", "up to 1990", "the years 1970-1980"."""
    if lo is not None and lo == hi:
        return f"the year {lo}"
    if hi is None:
        return f"{lo} and later"
    if lo is None:
        return f"up to {hi}"
    return f"the years {lo}-{hi}"


def age_hidden(catalog: ItemCatalog, ctx: UserContext, age: AgeFilter) -> tuple[int, int]:
    """(films the age rule hides, films matching the request): over the whole available catalogue,
    every constraint applied (exclusions included) and the user's negative items left out; the genres
    asked for are the constraints' or, without any, the onboarding ones. The one count of the age note."""
    c = ctx.constraints
    if not (c.include_categories or c.require_categories):
        c = c.model_copy(update={"include_categories": list(ctx.onboarding_categories)})
    items = np.flatnonzero(catalog.available.astype(bool))
    items = items[~np.isin(items, np.asarray(ctx.negative_items, np.int64))]
    match = items[age.constraint_rule().mask(c, items)]
    return int((catalog.age_rating[match] > age.user_age(ctx)).sum()), int(len(match))


def age_note(catalog: ItemCatalog, ctx: UserContext, age: AgeFilter) -> str | None:
    """The sentence (a warning of /recommend, a note of /conversation) when the age rule, which the user did
    not ask for, hides films of the genres they asked for because their age is unknown; None otherwise."""
    asked = [*ctx.constraints.include_categories, *ctx.constraints.require_categories, *ctx.onboarding_categories]
    if not asked or age.age_known(ctx) or age.user_age(ctx) >= age.adult_age:
        return None
    hidden, n = age_hidden(catalog, ctx, age)
    if not hidden:
        return None
    return (f"{hidden} of the {plural(n, 'film')} matching your request are rated above age {age.user_age(ctx)} and "
            "hidden because your age is unknown; send your age (the request's age field, or say 'I am 30' in the "
            "conversation) to see them")


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

    ``include_categories`` keeps items with at least one of them (OR),
    ``require_categories`` items with every one of them (AND: "romantic comedy").
    A request naming a genre the catalogue does not have is refused before the
    pipeline runs (``check_categories``, called by ``Recommender.recommend``; the
    server answers 422 with the valid genres); here, for a caller that skips it,
    an unknown name matches nothing (an unknown exclusion removes nothing). Words match
    case-insensitively as substrings of title + text. An item of unknown year
    (-1) fails any year bound.

    ``mask`` is vectorised over any item set (a (N, C) category matrix built once),
    so the same rule selects from the whole catalogue (``recsys.pipeline.constrained``).
    """

    name = "constraints"

    def __init__(self, catalog: ItemCatalog):
        self.catalog = catalog
        self._onehot: np.ndarray | None = None
        self._texts: np.ndarray | None = None

    def onehot(self) -> np.ndarray:
        """(N, C) bool: item has category c."""
        if self._onehot is None:
            cat = self.catalog
            rows = np.repeat(np.arange(len(cat)), np.diff(cat.cat_offsets))
            m = np.zeros((len(cat), len(cat.categories)), dtype=bool)
            m[rows, cat.cat_ids] = True
            self._onehot = m
        return self._onehot

    def _ids(self, names) -> tuple[list[int], list[str]]:
        ids = [self.catalog.category_id(n) for n in names]
        return [i for i in ids if i is not None], [n for n, i in zip(names, ids) if i is None]

    def parts(self, c: Constraints, items: np.ndarray) -> list[tuple[str, str, np.ndarray]]:
        """(key, description, (K,) bool) per constraint, in a fixed order: what each one alone keeps. The key
        names the part ("years", "require_categories:War", ...: ``recsys.llm.conversation.drop_part``)."""
        cat, out = self.catalog, []
        if c.exclude_items:
            out.append(("exclude_items", "the excluded films", ~np.isin(items, np.asarray(c.exclude_items, dtype=np.int64))))
        onehot = self.onehot()[items]  # (K, C)
        if c.include_categories:
            ids, unknown = self._ids(c.include_categories)
            out.append(("include_categories", " or ".join(c.include_categories), onehot[:, ids].any(1) if ids else np.zeros(len(items), bool)))
        for name in c.require_categories:
            ids, _ = self._ids([name])
            out.append((f"require_categories:{name}", name, onehot[:, ids[0]] if ids else np.zeros(len(items), bool)))
        if c.exclude_categories:
            ids, _ = self._ids(c.exclude_categories)
            out.append(("exclude_categories", "not " + " or ".join(c.exclude_categories), ~onehot[:, ids].any(1) if ids else np.ones(len(items), bool)))
        year = cat.year[items]
        if c.year_min is not None or c.year_max is not None:
            lo = c.year_min if c.year_min is not None else 0
            hi = c.year_max if c.year_max is not None else 10 ** 6
            out.append(("years", year_words(c.year_min, c.year_max), (year >= max(lo, 0)) & (year <= hi)))
        if c.must_have_words or c.exclude_words:
            texts = self.texts()[items]
            for w in c.must_have_words:
                out.append((f"must_have_words:{w}", f'the word "{w}"', np.char.find(texts, w.lower()) >= 0))
            for w in c.exclude_words:
                out.append((f"exclude_words:{w}", f'no "{w}"', np.char.find(texts, w.lower()) < 0))
        return out

    def texts(self) -> np.ndarray:
        if self._texts is None:
            self._texts = np.array([self.catalog.text_of(i) for i in range(len(self.catalog))], dtype=str)
        return self._texts

    def mask(self, ctx: UserContext | Constraints, items: np.ndarray) -> np.ndarray:
        """(K,) bool: which items satisfy every constraint."""
        c = ctx.constraints if isinstance(ctx, UserContext) else ctx
        items = np.asarray(items, np.int64)
        keep = np.ones(len(items), dtype=bool)
        for _, _, m in self.parts(c, items):
            keep &= m
        return keep

    def __call__(self, ctx: UserContext, cands: Candidates) -> Candidates:
        if ctx.constraints.is_empty():
            return _apply(self.name, cands, np.ones(len(cands), dtype=bool))
        return _apply(self.name, cands, self.mask(ctx, cands.items))


class UnknownCategoryError(ValueError):
    """A request names genres the catalogue does not have.

    ``fields``: where, as request locations (``constraints.include_categories[1]``,
    ``onboarding_categories[0]``; the names themselves are not repeated: the
    message never echoes the input); ``valid``: the catalogue's vocabulary.
    """

    def __init__(self, fields: list[str], valid: list[str]):
        self.fields, self.valid = list(fields), list(valid)
        shown = ", ".join(self.fields[:8]) + (f" (+{len(self.fields) - 8} more)" if len(self.fields) > 8 else "")
        super().__init__(f"unknown genre at {shown}; valid genres: {', '.join(self.valid)}")


CATEGORY_FIELDS = ("include_categories", "require_categories", "exclude_categories")


def check_categories(catalog: ItemCatalog, constraints: Constraints | None = None, onboarding_categories=()) -> None:
    """Raise :class:`UnknownCategoryError` when a genre of the request is not in ``catalog.categories``
    (case-insensitive). The one check of a request's genres (``Recommender.recommend`` calls it)."""
    where = [f"constraints.{key}[{j}]" for key in CATEGORY_FIELDS
             for j, name in enumerate(getattr(constraints, key) if constraints is not None else [])
             if catalog.category_id(str(name)) is None]
    where += [f"onboarding_categories[{j}]" for j, name in enumerate(onboarding_categories)
              if catalog.category_id(str(name)) is None]
    if where:
        raise UnknownCategoryError(where, catalog.categories)


def why_empty(catalog: ItemCatalog, ctx: UserContext, age: AgeFilter | None = None) -> tuple[str, str] | None:
    """(part key, words) of the constraint that leaves no item of the whole catalogue; None when some remain.

    Constraints are applied one by one in ``ConstraintFilter.parts`` order, then the
    rules the user did not ask for (availability, the age rule, already seen); the
    first one after which nothing is left is the one named.
    """
    items = np.arange(len(catalog))
    keep = np.ones(len(items), dtype=bool)
    parts = ConstraintFilter(catalog).parts(ctx.constraints, items)
    parts.append(("available", "available", catalog.available.astype(bool)))
    if age is not None and age.user_age(ctx) < age.adult_age:
        parts.append(("age", f"the age rule (unknown age counts as {age.user_age(ctx)})" if not age.age_known(ctx)
                      else f"the age rule (age {age.user_age(ctx)})", catalog.age_rating <= age.user_age(ctx)))
    seen = np.concatenate([ctx.history, ctx.session, ctx.negative_items]).astype(np.int64)
    parts.append(("seen", "not already seen", ~np.isin(items, seen)))
    for i, (key, desc, m) in enumerate(parts):
        if keep.any() and not (keep & m).any():
            before = " and ".join(d for _, d, _ in parts[:i])
            where = f"the {plural(int(keep.sum()), 'film')} matching {before}" if before else \
                f"the catalogue's {plural(int(keep.sum()), 'film')}"
            return key, f"{desc} (none of {where})"
        keep &= m
    return None


def shortfall(catalog: ItemCatalog, stages, ctx: UserContext, n_returned: int,
              k: int | None = None) -> tuple[str | None, list[str], str | None]:
    """What a conversation reply says about a list: (a question when it is empty, notes, the part key the
    question offers to drop, for the answer "drop it").

    ``stages`` are the pipeline's stages (the ``AgeFilter`` among them is the rule the user did not
    ask for). Empty list: the question names the constraint that emptied it (``why_empty``). The
    notes say how many requested items the age rule hides for a user of unknown age (``age_note``, the
    same sentence as the /recommend warning), and, when a constrained list is shorter than the ``k``
    asked for, how many catalogue items match at all.
    """
    age = next((s for s in stages if isinstance(s, AgeFilter)), None)
    notes = []
    if k is not None and 0 < n_returned < k and not ctx.constraints.is_empty():
        items = np.flatnonzero(catalog.available.astype(bool))
        n_match = int(ConstraintFilter(catalog).mask(ctx.constraints, items).sum())
        notes.append(f"{n_returned} of the {k} asked for: {plural(n_match, 'film')} of the catalogue match the request")
    note = age_note(catalog, ctx, age) if age is not None else None
    if note:
        notes.append(note)
    if n_returned > 0:
        return None, notes, None
    found = why_empty(catalog, ctx, age)
    if found is None:
        return "Nothing came back for that request: could you loosen it a little?", notes, None
    key, reason = found
    if key == "age":
        return (f"Nothing matches {reason}. Tell me your age ('I am 30') to see films rated above it, or change "
                "the request.", notes, None)
    if key in ("available", "seen"):
        return f"Nothing matches {reason}. Could you change the request?", notes, None
    return f"Nothing matches {reason}. Should I drop that part of the request (say 'drop it') or change it?", notes, key


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
    req = {n.lower() for n in c.require_categories}
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
            "require_categories": not req <= cats,
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
