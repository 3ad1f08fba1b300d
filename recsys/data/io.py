"""Read and write prepared datasets and splits (parquet via pyarrow).

Layout (see ``recsys/data/schema.py``)::

    <dir>/interactions.parquet  items.parquet  users.parquet  meta.json
    <dir>/splits/<name>/{train,valid,test}.parquet
    <dir>/item_text_emb.npy     (optional, written by ``recsys.data.text_embed``)

Every load validates what it reads: a missing file, a missing column, a
column of the wrong kind, an empty table, a non-finite ``value``, a
``timestamp`` outside [0, ``MAX_TIMESTAMP``] or an index outside the
catalogue raises ``DataError`` naming the file (and row), so a half-written or
hand-edited dataset fails loudly at the boundary instead of deep inside a model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.schema import (
    INTERACTION_COLUMNS,
    ITEM_COLUMNS,
    MAX_TIMESTAMP,
    SPLIT_PARTS,
    USER_COLUMNS,
    DataError,
    Dataset,
    DatasetMeta,
    Split,
)

# Expected dtype kind per column ("i" integer, "f" float, "b" bool, "O" string/object, "l" list).
_KINDS = {
    "user_idx": "i", "item_idx": "i", "timestamp": "i", "value": "f",
    "item_id": "O", "user_id": "O", "title": "O", "text": "O",
    "year": "i", "categories": "l", "available": "b", "age_rating": "i",
}
# Exact dtypes written, so that a saved-then-loaded dataset is identical.
_DTYPES = {
    "user_idx": "int64", "item_idx": "int64", "timestamp": "int64", "value": "float32",
    "year": "int32", "available": "bool", "age_rating": "int16",
}

TEXT_EMB_FILE = "item_text_emb.npy"


def _kind_ok(series: pd.Series, kind: str) -> bool:
    if kind == "l":
        # list<str> column: pyarrow reads lists back as numpy arrays.
        return series.dtype == object and all(isinstance(v, (list, np.ndarray)) for v in series.head(100))
    if kind == "O":
        return pd.api.types.is_string_dtype(series.dtype) or series.dtype == object
    if kind == "i":
        return pd.api.types.is_integer_dtype(series.dtype)
    if kind == "f":
        return pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)
    if kind == "b":
        return pd.api.types.is_bool_dtype(series.dtype)
    raise AssertionError(kind)


def validate_table(df: pd.DataFrame, columns, path: str | Path, allow_empty: bool = False) -> pd.DataFrame:
    """Check required columns, their kinds and non-emptiness; raise ``DataError`` naming ``path``."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    for c in columns:
        kind = _KINDS.get(c)
        if kind and len(df) and not _kind_ok(df[c], kind):
            raise DataError(f"{path}: column {c!r} has dtype {df[c].dtype}, expected kind {kind!r}")
    if not allow_empty and len(df) == 0:
        raise DataError(f"{path}: table is empty")
    _check_ranges(df, path)
    return df


def _check_ranges(df: pd.DataFrame, path: str | Path) -> None:
    """Finite ``value`` and ``timestamp`` in [0, MAX_TIMESTAMP] (see schema.py), where present."""
    checks = []
    if "value" in df.columns:
        checks.append(("value", ~np.isfinite(df["value"].to_numpy(np.float64)), "must be finite"))
    if "timestamp" in df.columns:
        ts = df["timestamp"].to_numpy()
        checks.append(("timestamp", (ts < 0) | (ts > MAX_TIMESTAMP), f"must be in [0, {MAX_TIMESTAMP}] (seconds)"))
    for col, bad, rule in checks:
        if bad.any():
            r = int(np.argmax(bad))
            raise DataError(f"{path}: row {r}: {col} {df[col].to_numpy()[r].item()} {rule}")


def check_indices(inter: pd.DataFrame, n_users: int, n_items: int, path: str | Path) -> None:
    """``user_idx``/``item_idx`` of ``inter`` within [0, n_users) / [0, n_items), else ``DataError``."""
    for col, n, name in (("user_idx", n_users, "users"), ("item_idx", n_items, "items")):
        v = inter[col].to_numpy()
        if len(v) and (v.min() < 0 or v.max() >= n):
            raise DataError(f"{path}: {col} outside [0, {n}) of {name}")


def _cast(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for c, t in _DTYPES.items():
        if c in df.columns:
            df[c] = df[c].astype(t)
    if "categories" in df.columns:
        df["categories"] = [list(v) for v in df["categories"]]
    return df


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    """Write one table as parquet (no pandas index)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # Write to a temporary name and rename: a crash never leaves a truncated table behind.
    tmp = Path(str(path) + ".tmp")
    pq.write_table(pa.Table.from_pandas(_cast(df), preserve_index=False), tmp)
    tmp.replace(path)


def read_table(path: str | Path, columns, allow_empty: bool = False) -> pd.DataFrame:
    """Read one parquet table and validate it (``DataError`` naming ``path`` on any problem)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found; run `python -m recsys.data.prepare` first")
    try:
        df = pq.read_table(path).to_pandas()
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path}: cannot read parquet ({type(e).__name__}: {e})") from e
    df = validate_table(df, columns, path, allow_empty=allow_empty)
    if "categories" in df.columns:
        df["categories"] = [list(v) for v in df["categories"]]
    return df


def save_dataset(ds: Dataset, dir: str | Path, write_meta: bool = True) -> Path:
    """Write the three tables and ``meta.json`` into ``dir`` (created if needed).

    ``write_meta=False`` lets a caller write ``meta.json`` last, as a completion marker.
    """
    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    write_table(ds.interactions[list(INTERACTION_COLUMNS)], d / "interactions.parquet")
    extra_item_cols = [c for c in ds.items.columns if c not in ITEM_COLUMNS]
    write_table(ds.items[list(ITEM_COLUMNS) + extra_item_cols], d / "items.parquet")
    write_table(ds.users, d / "users.parquet")
    if write_meta:
        ds.meta.save(d / "meta.json")
    return d


def load_dataset(dir: str | Path) -> Dataset:
    """Read a prepared dataset directory, validating every table against ``meta.json``."""
    d = Path(dir)
    meta = DatasetMeta.load(d / "meta.json")
    inter = read_table(d / "interactions.parquet", INTERACTION_COLUMNS)
    items = read_table(d / "items.parquet", ITEM_COLUMNS)
    users = read_table(d / "users.parquet", USER_COLUMNS)
    if len(items) != meta.n_items or len(users) != meta.n_users:
        raise DataError(
            f"{d / 'meta.json'}: says {meta.n_users} users / {meta.n_items} items but the tables hold "
            f"{len(users)} / {len(items)}; re-run prepare"
        )
    check_indices(inter, meta.n_users, meta.n_items, d / "interactions.parquet")
    return Dataset(interactions=inter, items=items, users=users, meta=meta)


def save_split(split: Split, dir: str | Path) -> Path:
    """Write ``split`` into ``<dir>/splits/<split.name>/``."""
    out = Path(dir) / "splits" / split.name
    for part in SPLIT_PARTS:
        write_table(split.part(part)[list(INTERACTION_COLUMNS)], out / f"{part}.parquet")
    return out


def load_split(dir: str | Path, name: str) -> Split:
    """Read ``<dir>/splits/<name>/``; train must be non-empty, valid/test may be empty (e.g. tiny data)."""
    base = Path(dir) / "splits" / name
    if not base.is_dir():
        raise DataError(f"{base}: split {name!r} not found; prepare the dataset with split={name}")
    parts = {p: read_table(base / f"{p}.parquet", INTERACTION_COLUMNS, allow_empty=(p != "train")) for p in SPLIT_PARTS}
    return Split(name=name, **parts)


def load_text_embeddings(dir: str | Path) -> np.ndarray:
    """(N, 384) float32 item text embeddings written by prepare (``text_embeddings: true``)."""
    path = Path(dir) / TEXT_EMB_FILE
    if not path.exists():
        raise DataError(f"{path}: item text embeddings not found; prepare with text_embeddings=true")
    return np.load(path)
