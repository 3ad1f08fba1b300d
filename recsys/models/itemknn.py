"""Item-based k-nearest-neighbour collaborative filtering.

Sarwar et al. 2001, "Item-based collaborative filtering recommendation
algorithms" (WWW); top-k neighbourhoods as in Deshpande & Karypis 2004,
"Item-based top-N recommendation algorithms" (TOIS). Similarity is cosine
on binary implicit feedback with shrinkage (as in RecBole's ItemKNN):

    sim(i, j) = |U_i & U_j| / (sqrt(|U_i|) * sqrt(|U_j|) + shrink)

Each item keeps only its ``k`` most similar neighbours (a sparse N x N
matrix S); a user's score for item j is sum over history items i of S[i, j].
Everything stays sparse (scipy CSR), so memory is O(N * k), not O(N^2).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from recsys.data.history import History
from recsys.data.schema import Dataset, DatasetMeta, Split


class ItemKNN:
    """Args:
    meta: dataset metadata (N items, U users).
    k: neighbours kept per item.
    shrink: added to the cosine denominator; damps similarities of rare items.
    block: items processed per step when building S (bounds memory at block x N).
    """

    def __init__(self, meta: DatasetMeta, k: int = 100, shrink: float = 10.0, block: int = 2048) -> None:
        if k <= 0 or shrink < 0 or block <= 0:
            raise ValueError(f"need k > 0, shrink >= 0, block > 0; got k={k}, shrink={shrink}, block={block}")
        self.n_items, self.n_users = int(meta.n_items), int(meta.n_users)
        self.k, self.shrink, self.block = int(k), float(shrink), int(block)
        self.sim = sp.csr_matrix((self.n_items, self.n_items), dtype=np.float32)  # (N, N), k per row

    def fit(self, dataset: Dataset, split: Split) -> "ItemKNN":
        train = split.train.drop_duplicates(["user_idx", "item_idx"])
        x = sp.csr_matrix(
            (np.ones(len(train), dtype=np.float32), (train["user_idx"].to_numpy(), train["item_idx"].to_numpy())),
            shape=(self.n_users, self.n_items),
        )  # (U, N) binary
        xt = x.T.tocsr()  # (N, U)
        norms = np.sqrt(np.asarray(x.sum(0)).ravel())  # (N,) sqrt(|U_i|)
        rows, cols, vals = [], [], []
        # disable=None: a bar on a terminal only (it fits inside every pipeline build; logs stay clean)
        for start in tqdm(range(0, self.n_items, self.block), desc="itemknn", leave=False, disable=None):
            stop = min(start + self.block, self.n_items)
            co = (xt[start:stop] @ x).toarray()  # (b, N) co-occurrence counts
            sim = co / (norms[start:stop, None] * norms[None, :] + self.shrink + 1e-12)
            sim[np.arange(stop - start), np.arange(start, stop)] = 0.0  # an item is not its own neighbour
            kk = min(self.k, self.n_items - 1)
            if kk <= 0:
                continue
            top = np.argpartition(-sim, kk - 1, axis=1)[:, :kk]  # (b, k) unordered top-k
            v = np.take_along_axis(sim, top, 1)
            keep = v > 0
            rows.append(np.repeat(np.arange(start, stop), kk)[keep.ravel()])
            cols.append(top.ravel()[keep.ravel()])
            vals.append(v.ravel()[keep.ravel()])
        if rows:
            self.sim = sp.csr_matrix(
                (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
                shape=(self.n_items, self.n_items),
            )
        return self

    def score(self, history: History) -> torch.Tensor:
        """(B, N): sum of the neighbourhood similarities of the user's history items."""
        b = len(history)
        lengths = history.lengths.numpy()
        h = sp.csr_matrix(
            (np.ones(int(lengths.sum()), dtype=np.float32), history.items.numpy(), history.offsets.numpy()),
            shape=(b, self.n_items),
        )
        h.sum_duplicates()
        h.data[:] = 1.0  # a re-watched item counts once
        return torch.from_numpy(np.asarray((h @ self.sim).todense(), dtype=np.float32))

    def save(self, dir: str | Path) -> Path:
        d = Path(dir)
        d.mkdir(parents=True, exist_ok=True)
        sp.save_npz(d / "sim.npz", self.sim)
        cfg = {"n_items": self.n_items, "n_users": self.n_users, "k": self.k, "shrink": self.shrink, "block": self.block}
        (d / "config.json").write_text(json.dumps(cfg))
        return d

    @classmethod
    def load(cls, dir: str | Path) -> "ItemKNN":
        d = Path(dir)
        if not (d / "sim.npz").exists():
            raise FileNotFoundError(f"{d / 'sim.npz'}: not a saved ItemKNN model")
        cfg = json.loads((d / "config.json").read_text())
        meta = DatasetMeta(name="", n_users=cfg["n_users"], n_items=cfg["n_items"], n_interactions=0)
        model = cls(meta, k=cfg["k"], shrink=cfg["shrink"], block=cfg["block"])
        model.sim = sp.load_npz(d / "sim.npz").tocsr()
        return model
