"""Turn a reader's raw tables into the canonical ``Dataset`` (see ``schema.py``).

Readers only parse; everything derived (item text, age rating, buckets,
contiguous indices, vocabularies) is computed here once, so every dataset
gets the same columns by the same rules.

Raw inputs (all ids as strings):

    interactions  user_id item_id timestamp value
    items         item_id title year categories(list[str])
    users         user_id [age gender occupation zip]   (only user_id is required)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.data.schema import DataError, Dataset, DatasetMeta
from recsys.data.splits import chronological

# Age buckets of MovieLens-1M's users.dat (codes 1, 18, 25, 35, 45, 50, 56), applied to
# raw ages of ML-100K too so both datasets share one vocabulary.
AGE_EDGES = (18, 25, 35, 45, 50, 56)
AGE_BUCKETS = ("<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
UNKNOWN = "unknown"
USER_FEATURES = ("age_bucket", "gender", "occupation")


def age_rating(categories: list[str]) -> int:
    """Minimum viewer age for an item. MovieLens has no certificate, so we derive one.

    Rule (documented, deliberately simple): 18 if the item is Horror, else 0 if it is
    Children's or Animation, else 13. Horror wins over Children's, so a children's
    horror film is still restricted. Filters downstream compare it with a user's age.
    """
    if "Horror" in categories:
        return 18
    if "Children's" in categories or "Children" in categories or "Animation" in categories:
        return 0
    return 13


def item_text(title: str, year: int, categories: list[str]) -> str:
    """The sentence embedded for content retrieval, e.g. "Toy Story (1995). Genres: Animation, Comedy."."""
    head = f"{title} ({year})" if year >= 0 else title
    genres = ", ".join(categories) if categories else "unknown"
    return f"{head}. Genres: {genres}."


def year_bucket(year: int) -> str:
    """Decade label ("1990s"), or "unknown" for year -1."""
    return f"{(year // 10) * 10}s" if year >= 0 else UNKNOWN


def age_bucket(age: int) -> str:
    """MovieLens-1M age group of a raw age (``-1`` -> "unknown")."""
    if age < 0:
        return UNKNOWN
    return AGE_BUCKETS[int(np.searchsorted(AGE_EDGES, age, side="right"))]


def finish_items(items: pd.DataFrame) -> pd.DataFrame:
    """Add ``text``, ``available`` (all True), ``age_rating`` and ``year_bucket`` to raw items."""
    items = items.copy()
    items["year"] = items["year"].astype("int32")
    items["text"] = [item_text(t, int(y), list(c)) for t, y, c in zip(items["title"], items["year"], items["categories"])]
    # MovieLens has no availability signal: every item is available until a feed says otherwise.
    items["available"] = True
    items["age_rating"] = np.array([age_rating(list(c)) for c in items["categories"]], dtype=np.int16)
    items["year_bucket"] = [year_bucket(int(y)) for y in items["year"]]
    return items


def finish_users(users: pd.DataFrame) -> pd.DataFrame:
    """Fill missing demographics with "unknown"/-1 and add ``age_bucket``."""
    users = users.copy()
    if "age" not in users:
        users["age"] = -1
    users["age"] = users["age"].astype("int16")
    for col in ("gender", "occupation", "zip"):
        if col not in users:
            users[col] = UNKNOWN
        users[col] = users[col].astype(str)
    users["age_bucket"] = [age_bucket(int(a)) for a in users["age"]]
    return users


def build_dataset(interactions: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame, name: str, source: str) -> Dataset:
    """Index raw tables contiguously (sorted by original id) and compute the metadata.

    An interaction whose item is missing from the item table is bad input
    (``DataError``); users missing from ``users`` get an "unknown" demographic
    row, since some datasets (ML-20M) have no user file at all.
    """
    interactions = interactions.copy()
    interactions["user_id"] = interactions["user_id"].astype(str)
    interactions["item_id"] = interactions["item_id"].astype(str)
    items = finish_items(items.assign(item_id=items["item_id"].astype(str)))
    known_users = users.assign(user_id=users["user_id"].astype(str))
    missing = np.setdiff1d(interactions["user_id"].unique(), known_users["user_id"].to_numpy())
    if len(missing):
        known_users = pd.concat([known_users, pd.DataFrame({"user_id": missing})], ignore_index=True)
    users = finish_users(known_users)
    unknown_items = ~interactions["item_id"].isin(items["item_id"])
    if unknown_items.any():
        examples = interactions.loc[unknown_items, "item_id"].unique()[:5].tolist()
        raise DataError(f"{source}: {int(unknown_items.sum())} interactions refer to items missing from the item table, e.g. {examples}")
    user_ids = _id_order(interactions["user_id"])
    item_ids = _id_order(interactions["item_id"])
    items = items.drop_duplicates("item_id").set_index("item_id").loc[item_ids].reset_index()
    items.insert(0, "item_idx", np.arange(len(items), dtype=np.int64))
    users = users.drop_duplicates("user_id").set_index("user_id").loc[user_ids].reset_index()
    users.insert(0, "user_idx", np.arange(len(users), dtype=np.int64))
    inter = pd.DataFrame({
        "user_idx": pd.Index(user_ids).get_indexer(interactions["user_id"]).astype(np.int64),
        "item_idx": pd.Index(item_ids).get_indexer(interactions["item_id"]).astype(np.int64),
        "timestamp": interactions["timestamp"].to_numpy().astype(np.int64),
        "value": interactions["value"].to_numpy().astype(np.float32),
    })
    meta = DatasetMeta(name=name, n_users=0, n_items=0, n_interactions=0, source=source)
    return reindex(Dataset(interactions=inter, items=items, users=users, meta=meta))


def _id_order(ids: pd.Series) -> np.ndarray:
    """Numeric ids sort numerically ("2" < "10"), others lexicographically: a stable, readable order."""
    s = pd.Series(ids.unique())
    num = pd.to_numeric(s, errors="coerce")
    if num.notna().all():
        return s.to_numpy()[np.argsort(num.to_numpy(), kind="stable")]
    return np.sort(s.to_numpy())


def reindex(ds: Dataset) -> Dataset:
    """Keep only users/items that occur in ``interactions`` and renumber them 0..n-1 in their old order.

    ``items``/``users`` must be indexed by position (row k has ``*_idx == k``), as
    every canonical table is. Vectorised (``np.unique`` + ``searchsorted``) so it
    stays fast on tens of millions of rows. Interactions come out by (user, time),
    same-second rows in their input order.
    """
    inter, items, users = ds.interactions, ds.items, ds.users
    u, i = inter["user_idx"].to_numpy(np.int64), inter["item_idx"].to_numpy(np.int64)
    used_u, used_i = np.unique(u), np.unique(i)
    out_inter = pd.DataFrame({
        "user_idx": np.searchsorted(used_u, u).astype(np.int64),
        "item_idx": np.searchsorted(used_i, i).astype(np.int64),
        "timestamp": inter["timestamp"].to_numpy().astype(np.int64),
        "value": inter["value"].to_numpy().astype(np.float32),
    })
    out_items = items.iloc[used_i].reset_index(drop=True)
    out_items["item_idx"] = np.arange(len(out_items), dtype=np.int64)
    out_users = users.iloc[used_u].reset_index(drop=True)
    out_users["user_idx"] = np.arange(len(out_users), dtype=np.int64)
    # By (user, time), same-second rows kept in the reader's (file) order: the split breaks
    # ties by that order (splits.chronological), so nothing here may reorder them.
    out_inter = chronological(out_inter).reset_index(drop=True)
    return Dataset(out_inter, out_items, out_users, build_meta(out_inter, out_items, out_users, ds.meta))


def build_meta(inter: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame, old: DatasetMeta) -> DatasetMeta:
    """Cardinalities and vocabularies of the final tables (sorted values; index = feature id)."""
    vocab = {"categories": sorted({c for cats in items["categories"] for c in cats})}
    vocab["year_bucket"] = sorted(set(items["year_bucket"]), key=lambda s: (s == UNKNOWN, s))
    vocab["age_bucket"] = [b for b in AGE_BUCKETS + (UNKNOWN,) if b in set(users["age_bucket"])]
    for col in ("gender", "occupation"):
        vocab[col] = sorted(set(users[col]))
    return DatasetMeta(
        name=old.name,
        n_users=len(users),
        n_items=len(items),
        n_interactions=len(inter),
        vocabularies=vocab,
        user_features=list(USER_FEATURES),
        source=old.source,
        implicit_threshold=old.implicit_threshold,
        extra=dict(old.extra),
    )
