"""Criteo display-ads format: reader, encoder and a generator of rows in that format.

One row per line, tab-separated (Kaggle Display Advertising Challenge and
Criteo 1TB click logs)::

    label  I1 .. I13  C1 .. C26
    0/1    integers   32-bit hex strings ("68fd1e64"); any field but the label may be empty

Encoding follows the DLRM reference (Naumov et al. 2019): integer features
become ``log(1 + max(x, 0))`` (missing -> 0); each categorical column gets
either a vocabulary of the values seen at least ``min_frequency`` times in the
fitting rows (id 0 = rare/unknown/missing), or, with ``hash_size``, the hex
value modulo ``hash_size`` (no fitting needed, the Criteo 1TB recipe).

Shapes: N rows, 13 dense, 26 sparse (one id per row and feature).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recsys.data.schema import DataError

N_DENSE = 13
N_SPARSE = 26
DENSE_NAMES = [f"I{i}" for i in range(1, N_DENSE + 1)]
SPARSE_NAMES = [f"C{i}" for i in range(1, N_SPARSE + 1)]


@dataclass
class CriteoRow:
    label: int
    dense: list[int | None]  # 13 ints, None = missing
    sparse: list[str]  # 26 hex strings, "" = missing


# Strict ASCII notation: Python's int() also accepts "1_000", " 7", "0x1f" (base 16/0) and
# non-ASCII digits such as Arabic-Indic "١٢", none of which is a Criteo value.
_DENSE = re.compile(r"-?[0-9]{1,18}")  # at most 18 digits: fits int64 (log1p never overflows)
_HEX = re.compile(r"[0-9a-fA-F]{1,16}")  # a 32-bit (Kaggle) or 64-bit hash


def parse_line(line: str, path: str = "<rows>", lineno: int = 0) -> CriteoRow:
    """Parse one TSV line; any malformation raises ``DataError`` naming file and line."""
    fields = line.rstrip("\r\n").split("\t")
    where = f"{path}:{lineno}"
    if len(fields) != 1 + N_DENSE + N_SPARSE:
        raise DataError(f"{where}: expected {1 + N_DENSE + N_SPARSE} tab-separated fields, got {len(fields)}")
    if fields[0] not in ("0", "1"):
        raise DataError(f"{where}: label must be 0 or 1, got {fields[0][:40]!r}")
    dense: list[int | None] = []
    for name, v in zip(DENSE_NAMES, fields[1 : 1 + N_DENSE]):
        if v == "":
            dense.append(None)
        elif _DENSE.fullmatch(v):
            dense.append(int(v))
        else:
            raise DataError(f"{where}: {name} must be an integer (ASCII digits, at most 18), got {v[:40]!r}")
    sparse = fields[1 + N_DENSE :]
    for name, v in zip(SPARSE_NAMES, sparse):
        if v and not _HEX.fullmatch(v):
            raise DataError(f"{where}: {name} must be a hex string (1-16 hex digits), got {v[:40]!r}")
    return CriteoRow(int(fields[0]), dense, sparse)


def read_rows(path: str | Path, limit: int | None = None) -> Iterator[CriteoRow]:
    """Stream parsed rows of a Criteo TSV file (errors name the file and 1-based line).

    Lines are read as bytes and decoded as ASCII one by one, so a stray non-ASCII byte is
    a ``DataError`` at its line rather than a ``UnicodeDecodeError`` from the file object.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: Criteo file not found")
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if limit is not None and lineno > limit:
                return
            try:
                line = raw.decode("ascii")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not ASCII text ({e.reason} at column {e.start + 1})") from None
            if not line.strip():
                raise DataError(f"{path}:{lineno}: empty line")
            yield parse_line(line, str(path), lineno)


def generate_rows(n: int, seed: int = 0, cardinality: int = 1000, missing_rate: float = 0.05) -> Iterator[str]:
    """Yield ``n`` TSV lines in Criteo format with a learnable click signal.

    Categorical values are Zipf-distributed over ``cardinality`` ids per column
    (so frequency thresholds matter); each id has a hidden effect, and the
    click probability is ``sigmoid(sum of the effects of C1..C4 + 0.5 * log1p(I1) - 1)``
    so a model that learns the embeddings beats a constant predictor.
    """
    rng = np.random.default_rng(seed)
    effects = np.random.default_rng(12345).normal(0.0, 1.0, size=(N_SPARSE, cardinality))
    ranks = np.arange(1, cardinality + 1)
    p = 1.0 / ranks**1.1
    p /= p.sum()
    for _ in range(n):
        ids = rng.choice(cardinality, size=N_SPARSE, p=p)
        ints = rng.poisson(3.0, size=N_DENSE) * rng.integers(1, 20, size=N_DENSE)
        logit = effects[np.arange(4), ids[:4]].sum() + 0.5 * math.log1p(ints[0]) - 1.0
        label = int(rng.random() < 1.0 / (1.0 + math.exp(-logit)))
        dense = ["" if rng.random() < missing_rate else str(v) for v in ints]
        # Distinct hex per (column, id), 8 hex digits like the real data.
        sparse = ["" if rng.random() < missing_rate else f"{(c * 7919 + int(i) * 104729 + 0x1F3A) & 0xFFFFFFFF:08x}" for c, i in enumerate(ids)]
        yield "\t".join([str(label), *dense, *sparse])


def write_rows(path: str | Path, lines: Iterable[str]) -> Path:
    path = Path(path)
    path.write_text("".join(line + "\n" for line in lines))
    return path


class CriteoEncoder:
    """Turns rows into tensors: dense log-transform, categorical vocabularies or hashing.

    ``hash_size``: id = int(hex, 16) % hash_size + 1 (0 = missing); no fit needed.
    Otherwise ``fit`` keeps values seen >= ``min_frequency`` times; rare, unseen
    and missing values share id 0.
    """

    def __init__(self, min_frequency: int = 1, hash_size: int | None = None) -> None:
        if hash_size is not None and hash_size < 1:
            raise ValueError(f"hash_size must be positive, got {hash_size}")
        self.min_frequency = min_frequency
        self.hash_size = hash_size
        self.vocabs: list[dict[str, int]] | None = None

    def fit(self, rows: Iterable[CriteoRow]) -> "CriteoEncoder":
        if self.hash_size is not None:
            return self
        counts = [Counter() for _ in range(N_SPARSE)]
        for row in rows:
            for c, v in enumerate(row.sparse):
                if v:
                    counts[c][v] += 1
        self.vocabs = [
            {v: i + 1 for i, v in enumerate(sorted(k for k, n in cnt.items() if n >= self.min_frequency))} for cnt in counts
        ]
        return self

    def cardinalities(self) -> dict[str, int]:
        """Table sizes per sparse feature (including id 0)."""
        if self.hash_size is not None:
            return {name: self.hash_size + 1 for name in SPARSE_NAMES}
        if self.vocabs is None:
            raise RuntimeError("CriteoEncoder.fit must run before cardinalities() without hash_size")
        return {name: len(v) + 1 for name, v in zip(SPARSE_NAMES, self.vocabs)}

    def _id(self, c: int, v: str) -> int:
        if not v:
            return 0
        if self.hash_size is not None:
            return int(v, 16) % self.hash_size + 1
        return self.vocabs[c].get(v, 0)

    def transform(self, rows: Iterable[CriteoRow]) -> dict[str, torch.Tensor]:
        """-> ``dense`` (N, 13) float32, ``sparse`` (N, 26) int64, ``labels`` (N,) float32."""
        if self.hash_size is None and self.vocabs is None:
            raise RuntimeError("CriteoEncoder.fit must run before transform() without hash_size")
        labels, dense, sparse = [], [], []
        for row in rows:
            labels.append(row.label)
            dense.append([math.log1p(max(x, 0)) if x is not None else 0.0 for x in row.dense])
            sparse.append([self._id(c, v) for c, v in enumerate(row.sparse)])
        return {
            "dense": torch.tensor(dense, dtype=torch.float32).reshape(-1, N_DENSE),
            "sparse": torch.tensor(sparse, dtype=torch.int64).reshape(-1, N_SPARSE),
            "labels": torch.tensor(labels, dtype=torch.float32),
        }


def to_kjt(sparse_ids: torch.Tensor, feature_names: list[str] | None = None):
    """(B, F) one id per row and feature -> KeyedJaggedTensor with F keys, each B bags of length 1."""
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    b, f = sparse_ids.shape
    names = feature_names or SPARSE_NAMES[:f]
    return KeyedJaggedTensor.from_lengths_sync(
        keys=names, values=sparse_ids.t().reshape(-1), lengths=torch.ones(b * f, dtype=torch.int32)
    )


def ctr_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """AUC and log loss (mean binary cross-entropy, natural log) of click predictions."""
    from torchmetrics.functional.classification import binary_auroc

    logits, labels = logits.detach().float().reshape(-1), labels.float().reshape(-1)
    if logits.shape != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ")
    logloss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels).item()
    auc = float(binary_auroc(torch.sigmoid(logits), labels.long())) if 0 < labels.sum() < labels.numel() else float("nan")
    return {"auc": auc, "logloss": logloss}
