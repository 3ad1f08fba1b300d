"""Most-popular recommender: every user gets the items with the most training interactions.

The non-personalised reference every recommender paper reports (e.g. Rendle
et al. 2009, "BPR", Sec. 6; Ji et al. 2020, "A Re-visit of the Popularity
Baseline in Recommender Systems"). Plain object, no training loop:
``fit(dataset, split)`` counts, ``score(history)`` broadcasts the counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from recsys.data.history import History
from recsys.data.schema import Dataset, DatasetMeta, Split


class Popularity:
    """Scores item i by its number of training interactions (optionally only the last ``window`` seconds).

    Args:
        meta: dataset metadata (catalogue size N).
        window: if set, count only interactions within ``window`` time units of
            the latest training timestamp ("trending"); None counts all.
    """

    def __init__(self, meta: DatasetMeta, window: int | None = None) -> None:
        if window is not None and window <= 0:
            raise ValueError(f"window must be positive or None, got {window}")
        self.n_items = int(meta.n_items)
        self.window = window
        self.counts = torch.zeros(self.n_items)  # (N,)

    def fit(self, dataset: Dataset, split: Split) -> "Popularity":
        train = split.train
        if self.window is not None and len(train):
            train = train[train["timestamp"] >= train["timestamp"].max() - self.window]
        counts = np.bincount(train["item_idx"].to_numpy(), minlength=self.n_items)
        if counts.shape[0] > self.n_items:
            raise ValueError(f"training data has item_idx {counts.shape[0] - 1} >= n_items {self.n_items}")
        self.counts = torch.as_tensor(counts, dtype=torch.float32)
        return self

    def score(self, history: History) -> torch.Tensor:
        """(B, N) the same count vector for every user (ties broken by the evaluator)."""
        return self.counts.unsqueeze(0).expand(len(history), -1)

    def save(self, dir: str | Path) -> Path:
        d = Path(dir)
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / "counts.npy", self.counts.numpy())
        (d / "config.json").write_text(json.dumps({"n_items": self.n_items, "window": self.window}))
        return d

    @classmethod
    def load(cls, dir: str | Path) -> "Popularity":
        d = Path(dir)
        if not (d / "counts.npy").exists():
            raise FileNotFoundError(f"{d / 'counts.npy'}: not a saved Popularity model")
        cfg = json.loads((d / "config.json").read_text())
        model = cls(DatasetMeta(name="", n_users=0, n_items=cfg["n_items"], n_interactions=0), window=cfg["window"])
        model.counts = torch.as_tensor(np.load(d / "counts.npy"))
        return model
