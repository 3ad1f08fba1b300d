"""Synthetic interaction data with a known ground truth, for benchmarks at scale.

Generative model (all seeded):

- Items have a Zipf popularity ``p_i ∝ 1 / rank_i^zipf_a`` (ranks randomly
  permuted over item ids), one category each, and a latent factor
  ``v_i = c_cat(i) + noise`` (D dims), so items of a category are similar.
- Users have factors ``u ~ N(0, I/D)`` and a Zipf activity
  ``∝ 1 / rank^user_a``.
- Each interaction: draw a user by activity, draw ``n_candidates`` items by
  popularity, keep the one maximising ``u·v / temperature + Gumbel noise``
  (a softmax choice among popular candidates): popularity bias and
  personal taste both shape the data, and the factors are the truth a model
  can be scored against.
- ``timestamp`` is uniform over ``span_days``; ``value`` is a 1-5 rating from
  the sigmoid of the chosen score.

``generate`` streams interactions to parquet in chunks (``pyarrow.ParquetWriter``)
so memory stays bounded by the chunk size plus the factor matrices
(1M items x 16 dims = 64 MB), not by the number of interactions.

Output directory: ``interactions.parquet`` (canonical columns), ``items.parquet``,
``users.parquet``, ``item_factors.npy`` (N, D), ``user_factors.npy`` (U, D),
``item_popularity.npy`` (N,), ``config.json``. ``item_id``/``user_id`` are the row
numbers in the factor files, so the truth survives k-core re-indexing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.canonical import build_meta, finish_items, finish_users
from recsys.data.io import check_indices, read_table
from recsys.data.schema import INTERACTION_COLUMNS, ITEM_COLUMNS, USER_COLUMNS, Dataset, DatasetMeta

_ADJ = ("Silent", "Golden", "Hidden", "Electric", "Broken", "Lucky", "Crimson", "Frozen", "Wild", "Quiet", "Bright", "Lost")
_NOUN = ("River", "Engine", "Garden", "Signal", "Harbor", "Forest", "Mirror", "Voyage", "Empire", "Circuit", "Melody", "Atlas")
_CATEGORIES = ("Action", "Comedy", "Drama", "Horror", "Children's", "Sci-Fi", "Romance", "Documentary", "Thriller", "Fantasy",
               "Music", "Sports", "Travel", "Cooking", "History", "Science", "Technology", "Art", "Nature", "Games")
_T0 = 1_600_000_000  # 2020-09-13, an arbitrary fixed epoch


def _zipf_cdf(n: int, a: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(cdf over ids, popularity p) with Zipf(a) weights assigned to a random permutation of ids."""
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** a
    p = np.empty(n)
    p[rng.permutation(n)] = w / w.sum()
    return np.cumsum(p), p


def _draw(cdf: np.ndarray, rng: np.random.Generator, size) -> np.ndarray:
    """Inverse-CDF sampling: O(log n) per draw, no (n,)-sized work per call."""
    return np.minimum(np.searchsorted(cdf, rng.random(size) * cdf[-1], side="right"), len(cdf) - 1)


def _write_items(path: Path, n_items: int, n_cat: int, rng: np.random.Generator, chunk: int) -> np.ndarray:
    """Stream the item table; return each item's category id (N,)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cats = rng.integers(0, n_cat, n_items)
    years = rng.integers(1950, 2024, n_items)
    adj, noun = rng.integers(0, len(_ADJ), n_items), rng.integers(0, len(_NOUN), n_items)
    writer = None
    try:
        for s in range(0, n_items, chunk):
            e = min(s + chunk, n_items)
            raw = pd.DataFrame({
                "item_id": [str(i) for i in range(s, e)],
                "title": [f"The {_ADJ[a]} {_NOUN[b]} {i}" for a, b, i in zip(adj[s:e], noun[s:e], range(s, e))],
                "year": years[s:e], "categories": [[_CATEGORIES[c]] for c in cats[s:e]],
            })
            df = finish_items(raw)
            df.insert(0, "item_idx", np.arange(s, e, dtype=np.int64))
            table = pa.Table.from_pandas(df, preserve_index=False)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    return cats


def generate(
    out_dir: str | Path,
    n_users: int = 1000,
    n_items: int = 500,
    n_interactions: int = 20_000,
    dim: int = 16,
    n_categories: int = 10,
    zipf_a: float = 1.0,
    user_a: float = 0.5,
    n_candidates: int = 8,
    temperature: float = 0.3,
    span_days: int = 365,
    seed: int = 0,
    chunk_size: int = 250_000,
    progress: bool = False,
) -> Path:
    """Write a synthetic dataset into ``out_dir`` (see module docstring) and return it."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    if not 1 <= n_categories <= len(_CATEGORIES):
        raise ValueError(f"n_categories must be in [1, {len(_CATEGORIES)}], got {n_categories}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cats = _write_items(out / "items.parquet", n_items, n_categories, rng, chunk_size)
    centers = rng.normal(0, 1, (n_categories, dim)).astype(np.float32)
    item_f = ((centers[cats] + 0.5 * rng.normal(0, 1, (n_items, dim))) / np.sqrt(dim)).astype(np.float32)  # (N, D)
    user_f = rng.normal(0, 1, (n_users, dim)).astype(np.float32)  # (U, D)
    item_cdf, item_p = _zipf_cdf(n_items, zipf_a, rng)
    user_cdf, _ = _zipf_cdf(n_users, user_a, rng)
    np.save(out / "item_factors.npy", item_f)
    np.save(out / "user_factors.npy", user_f)
    np.save(out / "item_popularity.npy", item_p.astype(np.float32))

    schema = pa.schema([("user_idx", pa.int64()), ("item_idx", pa.int64()), ("timestamp", pa.int64()), ("value", pa.float32())])
    with pq.ParquetWriter(out / "interactions.parquet", schema) as writer:
        for s in tqdm(range(0, n_interactions, chunk_size), desc="synthetic interactions", disable=not progress):
            b = min(chunk_size, n_interactions - s)
            users = _draw(user_cdf, rng, b)  # (B,)
            cand = _draw(item_cdf, rng, (b, n_candidates))  # (B, C) popularity-biased candidates
            score = np.einsum("bd,bcd->bc", user_f[users], item_f[cand])  # (B, C) true affinity
            gumbel = -np.log(-np.log(rng.random((b, n_candidates)) + 1e-12) + 1e-12)
            pick = np.argmax(score / temperature + gumbel, axis=1)  # softmax choice among candidates
            chosen = score[np.arange(b), pick]
            rating = np.clip(np.rint(1 + 4 / (1 + np.exp(-chosen))), 1, 5).astype(np.float32)
            ts = _T0 + rng.integers(0, span_days * 86400, b)
            writer.write_table(pa.table({"user_idx": users.astype(np.int64), "item_idx": cand[np.arange(b), pick].astype(np.int64),
                                         "timestamp": ts.astype(np.int64), "value": rating}, schema=schema))

    ages = rng.integers(13, 70, n_users)
    users_df = finish_users(pd.DataFrame({
        "user_id": [str(u) for u in range(n_users)], "age": ages,
        "gender": rng.choice(np.array(["F", "M"]), n_users), "occupation": rng.choice(np.array(["student", "engineer", "artist", "other"]), n_users),
    }))
    users_df.insert(0, "user_idx", np.arange(n_users, dtype=np.int64))
    pq.write_table(pa.Table.from_pandas(users_df, preserve_index=False), out / "users.parquet")
    config = dict(n_users=n_users, n_items=n_items, n_interactions=n_interactions, dim=dim, n_categories=n_categories,
                  zipf_a=zipf_a, user_a=user_a, n_candidates=n_candidates, temperature=temperature, span_days=span_days, seed=seed)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def read_synthetic(cache_dir: str | Path = "data/raw", **params) -> Dataset:
    """Generate (once per parameter set, cached under ``cache_dir/synthetic-<hash>``) and load as a ``Dataset``.

    ``params`` are ``generate``'s arguments. The raw directory (with the true
    factors) is recorded in ``meta.source``.
    """
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    raw = Path(cache_dir) / f"synthetic-{key}"
    if not (raw / "config.json").exists():  # config.json is written last: its presence means complete
        generate(raw, **params, progress=True)
    # The cache may be stale or hand-edited: read it through the validating reader.
    inter = read_table(raw / "interactions.parquet", INTERACTION_COLUMNS)
    items = read_table(raw / "items.parquet", ITEM_COLUMNS)
    users = read_table(raw / "users.parquet", USER_COLUMNS)
    check_indices(inter, len(users), len(items), raw / "interactions.parquet")
    meta = DatasetMeta(name="synthetic", n_users=0, n_items=0, n_interactions=0, source=f"synthetic:{raw}",
                       extra={"generator": json.loads((raw / "config.json").read_text())})
    return Dataset(inter, items, users, build_meta(inter, items, users, meta))
