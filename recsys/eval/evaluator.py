"""Top-K evaluation of recommenders on a split (full ranking by default).

Protocol (``protocol="full"``, the default and the one every report uses
unless it says otherwise): for each user with at least one target in
``split.part(stage)``, the model scores all N items given the user's history
(``split.history_for(stage)``: train for validation, train + valid for
test); items already in that history are masked with -inf; the top
max(ks) items are compared with the targets. Targets that are already in
the history are dropped (they are masked, so no model could rank them) and
users left without a target are skipped.

``protocol="sampled"`` (LLMRank / older papers): each user's candidates are
the targets plus ``num_negatives`` items drawn uniformly from items neither
consumed nor targets, with a generator seeded by (seed, user_idx) so the
draw does not depend on batch size; the result dict then carries
``"protocol": "sampled-<N>"``. Sampled metrics are much higher than
full-ranking ones and are not comparable with them.

Ties: items with equal scores are ranked by ascending item_idx (a stable,
documented rule; ``torch.topk`` alone gives an unspecified order), so a
constant-score model ranks the catalogue in index order. If fewer than K
items remain (tiny catalogues, sampled protocol) the tail slots are empty (-1).

Keys: ``<prefix>/<metric>@<k>`` with prefix ``val`` for the ``valid`` stage
(``val/ndcg@10``) and the stage name otherwise (``test/recall@20``), plus
``<prefix>/n_users``. Beyond-accuracy metrics are added when their inputs
exist: item categories (``dataset.items.categories``), popularity (training
counts) and item embeddings (``item_embeddings`` array/path).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from recsys.data.history import History
from recsys.data.schema import Dataset, Split
from recsys.eval import beyond
from recsys.eval.metrics import get_metric

RANKING = ("recall", "precision", "ndcg", "mrr", "hit_rate", "map")
BEYOND = ("coverage", "ild_category", "ild_embedding", "novelty", "popularity_bias", "arp")


def stage_prefix(stage: str) -> str:
    """Metric-key prefix of a split part: ``valid`` -> ``val`` (Lightning convention)."""
    return "val" if stage == "valid" else stage


def topk_deterministic(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(B, N) scores -> (B, k) item indices, best first, ties by ascending index.

    ``torch.topk`` finds the k-th largest value t per row; every item above t
    is in the list, and the items equal to t fill the remaining slots in index
    order. A stable descending sort of those k then orders them.
    """
    b, n = scores.shape
    k = min(k, n)
    thr = torch.topk(scores, k, dim=1).values[:, -1:]  # (B, 1)
    above = scores > thr
    equal = scores == thr
    need = k - above.sum(1, keepdim=True)  # (B, 1) slots left for items equal to t
    chosen = above | equal
    # Only rows with more tied items than free slots need the (B, N) cumsum; with
    # continuous scores that is rare, which keeps memory flat on large catalogues.
    tied = (equal.sum(1, keepdim=True) > need).squeeze(1).nonzero().squeeze(1)
    if tied.numel():
        eq = equal[tied]
        chosen[tied] = above[tied] | (eq & (eq.cumsum(1, dtype=torch.int32) <= need[tied]))  # exactly k per row
    idx = chosen.nonzero()[:, 1].view(b, k)  # ascending item index within a row
    order = torch.sort(scores.gather(1, idx), dim=1, descending=True, stable=True).indices
    return idx.gather(1, order)


def slice_history(h: History, start: int, end: int) -> History:
    """Users start..end-1 of a History (a view of the CSR arrays)."""
    offsets = h.offsets[start : end + 1]
    items = h.items[offsets[0] : offsets[-1]]
    return History(h.users[start:end], offsets - offsets[0], items)


def _csr_mask(h: History, n_items: int, device) -> torch.Tensor:
    """(B, N) bool: True where item i is in user b's list."""
    mask = torch.zeros(len(h), n_items, dtype=torch.bool, device=device)
    rows = torch.repeat_interleave(torch.arange(len(h)), h.lengths)
    mask[rows.to(device), h.items.to(device)] = True
    return mask


def category_matrix(dataset: Dataset) -> torch.Tensor | None:
    """(N, C) multi-hot item categories from the items table, or None without categories."""
    items = dataset.items
    if "categories" not in items.columns or not len(items):
        return None
    vocab = list(dataset.meta.vocabularies.get("categories") or sorted({c for cs in items["categories"] for c in cs}))
    if not vocab:
        return None
    pos = {c: i for i, c in enumerate(vocab)}
    mat = torch.zeros(dataset.meta.n_items, len(vocab), dtype=torch.bool)
    for idx, cats in zip(items["item_idx"].to_numpy(), items["categories"]):
        for c in cats:
            if c in pos:
                mat[int(idx), pos[c]] = True
    return mat


def item_counts(interactions: pd.DataFrame, n_items: int) -> torch.Tensor:
    """(N,) float interaction count per item."""
    return torch.as_tensor(np.bincount(interactions["item_idx"].to_numpy(), minlength=n_items)[:n_items], dtype=torch.float32)


class _Accumulator:
    """Sums per-user metric values over batches; coverage as a union of lists."""

    def __init__(self, ks, metrics, beyond_names, n_items, resources, device):
        self.ks, self.metrics, self.n_items, self.res = ks, metrics, n_items, resources
        self.beyond = [m for m in beyond_names if m == "coverage" or resources.get(beyond.BEYOND_NEEDS[m]) is not None]
        self.sums: dict[str, float] = {}
        self.seen = {k: torch.zeros(n_items, dtype=torch.bool, device=device) for k in ks}
        self.n_users = 0

    def _add(self, key: str, values: torch.Tensor) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + float(values.double().sum())

    def add(self, topk: torch.Tensor, hits: torch.Tensor, n_rel: torch.Tensor) -> None:
        """topk (B, K) item ids (-1 empty), hits (B, K) bool, n_rel (B,) for kept users."""
        self.n_users += len(n_rel)
        for k in self.ks:
            for name in self.metrics:
                self._add(f"{name}@{k}", get_metric(name).fn(hits, n_rel, k))
            for name in self.beyond:
                if name == "coverage":
                    self.seen[k] |= beyond.recommended_items(topk, self.n_items, k)
                else:
                    res = self.res[beyond.BEYOND_NEEDS[name]]
                    self._add(f"{name}@{k}", beyond.BEYOND_FNS[name](topk, res, k))

    def result(self, prefix: str) -> dict[str, float]:
        n = max(self.n_users, 1)
        out = {f"{prefix}/{key}": v / n for key, v in self.sums.items()}
        if "coverage" in self.beyond:
            for k in self.ks:
                out[f"{prefix}/coverage@{k}"] = float(self.seen[k].float().mean())
        out[f"{prefix}/n_users"] = float(self.n_users)
        return out


class Evaluator:
    """Full-ranking (or, on request, sampled) top-K evaluation; see the module docstring.

    Args:
        ks: cut-offs K; lists of max(ks) items are built once and cut.
        metrics: ranking metrics (``recsys.eval.metrics.METRICS``).
        beyond_metrics: coverage, ILD, novelty, popularity; each is skipped when
            its input is missing (no categories, no embeddings).
        protocol: ``full`` (default) or ``sampled`` with ``num_negatives`` negatives.
        batch_size: users scored per ``model.score`` call (memory is B x N floats).
        seed: the sampled protocol's negative draw.
        device: where masks/top-K run; None = cuda when available, else cpu.
        item_embeddings: (N, D) array or ``.npy`` path for embedding ILD.
        progress: tqdm bar over batches.
    """

    def __init__(
        self,
        ks: Sequence[int] = (10, 20, 50),
        metrics: Sequence[str] = RANKING,
        beyond_metrics: Sequence[str] = BEYOND,
        protocol: str = "full",
        num_negatives: int = 99,
        batch_size: int = 256,
        seed: int = 0,
        device: str | None = None,
        item_embeddings: str | Path | np.ndarray | torch.Tensor | None = None,
        progress: bool = True,
    ) -> None:
        if protocol not in ("full", "sampled"):
            raise ValueError(f"protocol must be 'full' or 'sampled', got {protocol!r}")
        if not ks or any(int(k) <= 0 for k in ks):
            raise ValueError(f"ks must be positive integers, got {ks!r}")
        for m in metrics:
            get_metric(m)  # fail early on a typo
        unknown = [m for m in beyond_metrics if m not in BEYOND]
        if unknown:
            raise ValueError(f"unknown beyond-accuracy metric(s) {unknown}; known: {list(BEYOND)}")
        if batch_size <= 0 or num_negatives <= 0:
            raise ValueError("batch_size and num_negatives must be positive")
        self.ks = tuple(sorted(int(k) for k in ks))
        self.metrics, self.beyond_metrics = tuple(metrics), tuple(beyond_metrics)
        self.protocol, self.num_negatives = protocol, int(num_negatives)
        self.batch_size, self.seed, self.progress = int(batch_size), int(seed), progress
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.item_embeddings = self._load_embeddings(item_embeddings)

    @staticmethod
    def _load_embeddings(emb) -> torch.Tensor | None:
        if emb is None:
            return None
        if isinstance(emb, (str, Path)):
            path = Path(emb)
            if not path.exists():
                raise FileNotFoundError(f"{path}: item embedding file not found")
            emb = np.load(path)
        return torch.as_tensor(np.asarray(emb) if not isinstance(emb, torch.Tensor) else emb, dtype=torch.float32)

    def _resources(self, dataset: Dataset | None, split: Split | None, n_items: int) -> dict:
        res = {"categories": None, "popularity": None, "embeddings": None}
        if dataset is not None:
            res["categories"] = category_matrix(dataset)
        if split is not None:
            res["popularity"] = item_counts(split.train, n_items)
        if self.item_embeddings is not None:
            if self.item_embeddings.shape[0] != n_items:
                raise ValueError(f"item_embeddings has {self.item_embeddings.shape[0]} rows, catalogue has {n_items} items")
            res["embeddings"] = self.item_embeddings
        return {k: (v.to(self.device) if v is not None else None) for k, v in res.items()}

    def _accumulator(self, n_items: int, dataset=None, split=None) -> _Accumulator:
        res = self._resources(dataset, split, n_items)
        return _Accumulator(self.ks, self.metrics, self.beyond_metrics, n_items, res, self.device)

    def _sample_candidates(self, users: torch.Tensor, consumed: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B, N) bool: targets plus up to num_negatives uniform non-consumed non-target items per user."""
        cand = targets.clone()
        forbidden = (consumed | targets).cpu().numpy()
        n = forbidden.shape[1]
        for b, u in enumerate(users.tolist()):
            allowed = np.flatnonzero(~forbidden[b])
            rng = np.random.default_rng([self.seed, int(u)])
            take = rng.choice(allowed, size=min(self.num_negatives, allowed.size), replace=False)
            cand[b, torch.as_tensor(take, device=cand.device)] = True
        return cand

    @torch.no_grad()
    def evaluate(self, model, dataset: Dataset, split: Split, stage: str = "test") -> dict:
        """Score every user with a target in ``split.part(stage)``; return ``{"<prefix>/<metric>@<k>": value}``."""
        n_items = dataset.meta.n_items
        part = split.part(stage)
        users = np.unique(part["user_idx"].to_numpy())
        if users.size == 0:
            raise ValueError(f"split {split.name!r} part {stage!r} has no interactions to evaluate")
        history = History.from_interactions(split.history_for(stage), users)
        targets = History.from_interactions(part, users)
        acc = self._accumulator(n_items, dataset, split)
        was_training = getattr(model, "training", False)
        if hasattr(model, "eval"):
            model.eval()
        kmax = max(self.ks)
        try:
            starts = range(0, len(users), self.batch_size)
            for s in tqdm(starts, desc=f"eval {stage}", disable=not self.progress, leave=False):
                e = min(s + self.batch_size, len(users))
                hb = slice_history(history, s, e)
                scores = model.score(hb)
                if tuple(scores.shape) != (e - s, n_items):
                    raise ValueError(f"{type(model).__name__}.score returned shape {tuple(scores.shape)}, expected {(e - s, n_items)}")
                scores = scores.detach().to(self.device, torch.float32).clone()
                if torch.isnan(scores).any():
                    raise ValueError(f"{type(model).__name__}.score returned NaN scores")
                consumed = _csr_mask(hb, n_items, self.device)
                tmask = _csr_mask(slice_history(targets, s, e), n_items, self.device) & ~consumed
                scores[consumed] = float("-inf")
                if self.protocol == "sampled":
                    cand = self._sample_candidates(hb.users, consumed, tmask)
                    scores[~cand] = float("-inf")
                topk = topk_deterministic(scores, kmax)
                topk = torch.where(torch.isinf(scores.gather(1, topk)), torch.full_like(topk, -1), topk)
                hits = tmask.gather(1, topk.clamp(min=0)) & (topk >= 0)
                n_rel = tmask.sum(1)
                keep = n_rel > 0
                acc.add(topk[keep], hits[keep], n_rel[keep])
        finally:
            if was_training and hasattr(model, "train"):
                model.train()
        out = acc.result(stage_prefix(stage))
        if self.protocol == "sampled":
            out["protocol"] = f"sampled-{self.num_negatives}"
        return out

    def evaluate_topk(
        self,
        topk_items,
        users,
        targets,
        stage: str = "test",
        dataset: Dataset | None = None,
        split: Split | None = None,
    ) -> dict:
        """Metrics of precomputed lists (pipeline, LLM re-ranker).

        topk_items (U, K) int item_idx best first (-1 = empty slot); users (U,)
        user_idx; targets either an interaction table with ``user_idx``/
        ``item_idx`` (e.g. ``split.test``) or a sequence of U item-index
        lists. ``dataset``/``split`` enable the beyond-accuracy metrics.
        """
        topk = torch.as_tensor(np.asarray(topk_items), dtype=torch.long, device=self.device)
        users = np.asarray(users, dtype=np.int64)
        if topk.dim() != 2 or topk.shape[0] != len(users):
            raise ValueError(f"topk_items must be (U, K) with U = len(users) = {len(users)}, got {tuple(topk.shape)}")
        n_items = dataset.meta.n_items if dataset is not None else int(topk.max().item()) + 1
        if isinstance(targets, pd.DataFrame):
            tgt = History.from_interactions(targets, users)
        else:
            if len(targets) != len(users):
                raise ValueError(f"{len(targets)} target lists for {len(users)} users")
            tgt = History.from_lists(users, [list(t) for t in targets])
        n_items = max(n_items, int(tgt.items.max()) + 1 if tgt.items.numel() else 0)
        tmask = _csr_mask(tgt, n_items, self.device)
        hits = tmask.gather(1, topk.clamp(min=0)) & (topk >= 0)
        n_rel = tmask.sum(1)
        keep = n_rel > 0
        acc = self._accumulator(n_items, dataset, split)
        acc.add(topk[keep], hits[keep], n_rel[keep])
        return acc.result(stage_prefix(stage))
