"""Retriever + DLRM ranker as one recommender: ``fit(dataset, split)`` and ``score(history)``.

``fit`` (no validation or test interaction reaches the training rows):
  1. hold out each user's last ``n_holdout`` training interactions;
  2. fit a retriever on the rest (inner) and build labelled candidate rows
     (``recsys.ranking.data.training_rows``) with features from inner only;
  3. fit the serving retriever on the whole training part; build validation
     rows (history = train, labels = ``split.valid``) to pick the best epoch
     by ranking AUC;
  4. train the ``LitRanker`` with Lightning.

``score`` keeps the retriever's order for the whole catalogue and puts the
ranker's order on top for the top ``n_candidates`` (+ popular) candidates, so
the full-ranking ``Evaluator`` measures exactly "retriever, then ranker":

    scores (B, N): candidates 2 + sigmoid(logit) in (2, 3); others -(retriever rank) <= 0.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch

from recsys.data.history import History
from recsys.data.schema import Dataset, DatasetMeta, Split
from recsys.ranking.data import holdout_last, label, retrieve, training_rows
from recsys.ranking.features import DEFAULT_DENSE, DEFAULT_SPARSE, RankingFeatures, RankingTensors
from recsys.utils.artifacts import load_torch

log = logging.getLogger(__name__)


def _loader(data: RankingTensors, batch_size: int, shuffle: bool, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        range(len(data)), batch_size=batch_size, shuffle=shuffle, generator=g,
        collate_fn=lambda idx: data.batch(torch.as_tensor(idx)),
    )


class TwoStageRanker:
    """Args:
    meta: dataset metadata (passed by ``recsys.train``).
    retriever: factory ``(meta=...) -> object with fit(dataset, split) and score(history)``.
    ranker: factory ``(cardinalities=..., num_dense_features=...) -> LitRanker``.
    sparse_features / dense_features: see ``recsys.ranking.features``.
    n_candidates / n_popular / n_random / n_holdout: see ``recsys.ranking.data``.
    max_epochs, batch_size, seed: ranker training.
    dataset_dir: prepared dataset directory, forwarded to retrievers that take it.
    """

    def __init__(
        self,
        meta: DatasetMeta,
        retriever: Callable,
        ranker: Callable,
        sparse_features=DEFAULT_SPARSE,
        dense_features=DEFAULT_DENSE,
        n_candidates: int = 50,
        n_popular: int = 10,
        n_random: int = 10,
        n_holdout: int = 3,
        max_epochs: int = 5,
        batch_size: int = 512,
        seed: int = 0,
        progress: bool = True,
        dataset_dir: str | None = None,
    ) -> None:
        if n_candidates < 1:
            raise ValueError(f"n_candidates must be >= 1, got {n_candidates}")
        self.meta = meta
        self.retriever_factory, self.ranker_factory = retriever, ranker
        self.sparse_features, self.dense_features = list(sparse_features), list(dense_features)
        self.n_candidates, self.n_popular, self.n_random, self.n_holdout = n_candidates, n_popular, n_random, n_holdout
        self.max_epochs, self.batch_size, self.seed, self.progress = max_epochs, batch_size, seed, progress
        self.dataset_dir = dataset_dir
        self.training = False
        self.inner_retriever = self.retriever = None
        self.fit_stats: dict = {}

    def use_fitted_retrievers(self, inner, full) -> "TwoStageRanker":
        """Reuse retrievers already fitted on the inner and the full training part
        (e.g. by another ranker on the same split) instead of fitting them again."""
        self.inner_retriever, self.retriever = inner, full
        return self

    def _new_retriever(self):
        from recsys.core.inject import call_with_available

        return call_with_available(self.retriever_factory, meta=self.meta, dataset_dir=self.dataset_dir)

    # -- training -------------------------------------------------------------------
    def build_training_data(self, dataset: Dataset, split: Split) -> tuple[pd.DataFrame, RankingTensors]:
        """Rows and tensors for ranker training; reads ``split.train`` only."""
        self.features = RankingFeatures(dataset, self.sparse_features, self.dense_features)
        inner, held = holdout_last(split.train, self.n_holdout)
        empty = split.train.iloc[:0]
        if self.inner_retriever is None:
            self.inner_retriever = self._new_retriever().fit(dataset, Split("ranker-inner", inner, empty, empty))
        rows, history = training_rows(
            self.inner_retriever, inner, held, self.meta.n_items, self.n_candidates, self.n_popular, self.n_random, self.seed, self.progress
        )
        return rows, self.features.transform(rows, history, self.features.fit_context(dataset, inner))

    def stage_rows(self, dataset: Dataset, split: Split, stage: str) -> tuple[pd.DataFrame, RankingTensors]:
        """Candidate rows of the serving retriever for users with a ``stage`` target, labelled by it."""
        part = split.part(stage)
        users = np.unique(part["user_idx"].to_numpy())
        history = History.from_interactions(split.history_for(stage), users)
        rows = label(self._candidates(history), part)
        return rows, self.features.transform(rows, history, self.context)

    def fit(self, dataset: Dataset, split: Split) -> "TwoStageRanker":
        pl.seed_everything(self.seed, workers=True)
        rows, train_t = self.build_training_data(dataset, split)
        if self.retriever is None:
            self.retriever = self._new_retriever().fit(dataset, split)
        self.context = self.features.fit_context(dataset, split.train)
        self.popularity = self.context.popularity
        _, val_t = self.stage_rows(dataset, split, "valid")
        self.fit_stats = {
            "ranker/train_rows": len(train_t), "ranker/train_positives": int(train_t.labels.sum()),
            "ranker/val_rows": len(val_t), "ranker/val_positives": int(val_t.labels.sum()),
        }
        log.info("ranker data: %s", self.fit_stats)
        self.ranker = self.ranker_factory(cardinalities=self.features.cardinalities(), num_dense_features=len(self.dense_features))
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp, monitor="val/auc", mode="max", save_top_k=1)
            trainer = pl.Trainer(
                max_epochs=self.max_epochs, accelerator="cpu", devices=1, logger=False, callbacks=[ckpt],
                enable_progress_bar=self.progress, enable_model_summary=False, num_sanity_val_steps=0, deterministic=True,
            )
            trainer.fit(self.ranker, _loader(train_t, self.batch_size, True, self.seed), _loader(val_t, 4096, False, 0))
            if ckpt.best_model_path:
                self.ranker.load_state_dict(load_torch(ckpt.best_model_path)["state_dict"])
                self.fit_stats["ranker/best_val_auc"] = float(ckpt.best_model_score)
        self.ranker.eval()
        return self

    # -- serving --------------------------------------------------------------------
    def _candidates(self, history: History) -> pd.DataFrame:
        return retrieve(self.retriever, history, self.n_candidates, self.popularity, self.n_popular)

    def eval(self) -> "TwoStageRanker":
        return self

    @torch.no_grad()
    def score(self, history: History) -> torch.Tensor:
        """(B, N): ranker order over the candidates, retriever order below them."""
        base = self.retriever.score(history).detach().float().cpu().clone()  # (B, N)
        rows_b = torch.repeat_interleave(torch.arange(len(history)), history.lengths)
        base[rows_b, history.items] = float("-inf")
        order = torch.argsort(base, dim=1, descending=True, stable=True)
        out = torch.empty_like(base)
        out.scatter_(1, order, -torch.arange(base.shape[1], dtype=torch.float32).expand_as(order).contiguous())
        rows = self._candidates(history)
        if len(rows):
            logits = self.ranker.predict_logits(self.features.transform(rows, history, self.context))
            pos = {u: b for b, u in enumerate(history.users.tolist())}
            b = torch.as_tensor([pos[int(u)] for u in rows["user_idx"]], dtype=torch.long)
            out[b, torch.as_tensor(rows["item_idx"].to_numpy())] = 2.0 + torch.sigmoid(logits)
        return out

    @torch.no_grad()
    def candidate_metrics(self, dataset: Dataset, split: Split, stage: str = "test") -> dict[str, float]:
        """Ranking-stage AUC on the candidates and candidate recall.

        ``rank_auc`` pools all (user, candidate) rows scored by the ranker;
        ``retriever_auc`` scores the same rows by minus the retriever's rank (raw
        retriever scores are not comparable across users, ranks are).
        """
        from recsys.data.criteo import ctr_metrics
        from recsys.eval.evaluator import stage_prefix

        rows, t = self.stage_rows(dataset, split, stage)
        logits = self.ranker.predict_logits(t)
        p = stage_prefix(stage)
        ranker = ctr_metrics(logits, t.labels)
        retr = ctr_metrics(-torch.as_tensor(rows["retriever_rank"].to_numpy(np.float32)), t.labels)
        users_with_target = split.part(stage)["user_idx"].nunique()
        return {
            f"{p}/rank_auc": ranker["auc"], f"{p}/rank_logloss": ranker["logloss"], f"{p}/retriever_auc": retr["auc"],
            f"{p}/candidate_recall": float(t.labels.sum()) / max(users_with_target, 1),
        }
