"""The serving pipeline's candidates + a DLRM / DCN-v2 ranker, as one recommender.

``fit(dataset, split)`` (nothing of ``split.valid``/``split.test`` reaches the training lists):
  1. ``n_holdout`` cut-offs per user inside the training part (``recsys.ranking.data``);
  2. the retriever (two-tower) fitted on the inner part; the pipeline's sources rebuilt on it
     (``recsys.ranking.candidates``); training lists = their merged candidates per prefix,
     labelled by the next item, with the feature contract's rows (``recsys.ranking.features``);
  3. the serving retriever: the two-tower run the pipeline serves (``retriever_run``, loaded by the
     config's own ``two_tower`` artifact node, i.e. ``load_two_tower_run``), or, with
     ``retriever_run=null``, a two-tower fitted here on the whole training part;
     validation lists = the serving candidates of each user's training history, labelled by
     ``split.valid``; they pick the ranker's epoch by ``val/ndcg@10``;
  4. the ``LitRanker`` trained by a Lightning trainer built from the run's trainer config.

``score(history)`` runs the serving pipeline (sources, merger, ``DLRMRankStage``) for each
user, so the full-ranking ``Evaluator`` measures exactly what is served; ``input_scorer()``
is the same without the ranker (its input order). ``save(dir)`` / ``SavedRanker`` in
``recsys.ranking.artifact``.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytorch_lightning as pl
import torch

from recsys.core.inject import call_with_available, instantiate_with
from recsys.data.history import History
from recsys.data.schema import Dataset, DatasetMeta, Split
from recsys.pipeline.rank import DLRMRankStage
from recsys.ranking.candidates import candidate_pipeline, fitted_two_tower, source_names, two_tower_checkpoint
from recsys.ranking.data import NegativeRatings, build_lists, context_of, holdout_requests, stage_requests
from recsys.ranking.features import FeatureSpec, RankerFeatures
from recsys.ranking.retrievers import trainer_partial

log = logging.getLogger(__name__)


class PipelineScorer:
    """Evaluator contract over a ``Pipeline``: (B, N) scores that encode each user's final list.

    Listed items score ``K - position``; the rest of the catalogue -1e9 (below every listed item).
    ``negatives``: the users' low ratings, so each request's context is the one served for that history.
    """

    def __init__(self, pipeline, n_items: int, negatives: NegativeRatings | None = None) -> None:
        self.pipeline, self.n_items, self.negatives = pipeline, n_items, negatives

    def eval(self) -> "PipelineScorer":
        return self

    @torch.no_grad()
    def score(self, history: History) -> torch.Tensor:
        out = torch.full((len(history), self.n_items), -1e9)
        for b, u in enumerate(history.users.tolist()):
            h = history.of(b).numpy()
            neg = self.negatives.of(u, h) if self.negatives is not None else None
            items = self.pipeline(context_of(u, h, neg), self.n_items).items
            out[b, torch.from_numpy(items)] = torch.arange(len(items), 0, -1, dtype=torch.float32)
        return out


class TwoStageRanker:
    """Args:
    meta, dataset_dir: passed by ``recsys.train``.
    retriever: factory of the retriever the ranker fits (``LightningRetriever`` partial); None: every
        artifact is loaded from ``candidates`` as configured (no retriever to fit).
    ranker: factory ``(cardinalities=, num_dense_features=, din_items=, din_history=) -> LitRanker``.
    candidates: a pipeline config node (its ``artifacts``, ``sources``, ``merger``, ``per_source``).
    retriever_artifact: the artifact of ``candidates`` a fitted retriever stands in for (``two_tower``:
        injected as ``(model, flat index)`` into the sources that name it).
    retriever_run: the two-tower run directory (or stable name) that serves the validation/test
        candidates, loaded through the ``retriever_artifact`` node; None: fit one here (not servable).
    trainer: partial of ``pytorch_lightning.Trainer`` (``trainer_partial``; None = one CPU).
    features: ``FeatureSpec`` arguments except ``sources`` (taken from ``candidates``).
    n_holdout, min_history, max_train_users, max_val_users: training / validation requests.
    negative_threshold: ratings at or below it are negative feedback in a request's context, as
        serving's ``ContextBuilder`` reads them (``configs/serve.yaml``'s value).
    max_epochs, patience, lists_per_batch, seed: ranker training.
    """

    def __init__(self, meta: DatasetMeta, retriever: Callable | None, ranker: Callable, candidates: Mapping,
                 retriever_artifact: str | None = "two_tower", retriever_run: str | None = None, trainer: Callable | None = None,
                 features: Mapping | None = None, n_holdout: int = 5, min_history: int = 5,
                 max_train_users: int | None = None, max_val_users: int | None = None, max_epochs: int = 10,
                 patience: int = 3, lists_per_batch: int = 16, seed: int = 0, progress: bool = True,
                 negative_threshold: float | None = 2.0, dataset_dir: str | None = None) -> None:
        self.meta, self.dataset_dir = meta, dataset_dir
        self.retriever_factory, self.ranker_factory = retriever, ranker
        self.candidates, self.retriever_artifact, self.retriever_run = dict(candidates), retriever_artifact, retriever_run
        if retriever_run is not None and retriever_artifact not in (self.candidates.get("artifacts") or {}):
            raise ValueError(f"retriever_run needs the artifact {retriever_artifact!r} in the candidate config "
                             f"(artifacts: {sorted(self.candidates.get('artifacts') or {})})")
        self.trainer_factory = trainer or trainer_partial()
        self.spec = FeatureSpec(sources=source_names(self.candidates), **dict(features or {}))
        self.n_holdout, self.min_history = n_holdout, min_history
        self.max_train_users, self.max_val_users = max_train_users, max_val_users
        self.max_epochs, self.patience, self.lists_per_batch = max_epochs, patience, lists_per_batch
        self.seed, self.progress, self.negative_threshold = seed, progress, negative_threshold
        self.inner_retriever = self.retriever = self.ranker = self.retriever_checkpoint = None
        self.train_lists = self.val_lists = self.negatives = None
        self.data_stats: dict = {}
        self.fit_stats: dict = {}

    def use_fitted_retrievers(self, inner, full) -> "TwoStageRanker":
        """Reuse retrievers fitted on the inner and the whole training part (another ranker, same split)."""
        self.inner_retriever, self.retriever = inner, full
        return self

    def _new_retriever(self):
        if self.retriever_factory is None:  # every source comes from the candidate config
            return None
        return call_with_available(self.retriever_factory, meta=self.meta, dataset_dir=self.dataset_dir, trainer=self.trainer_factory)

    def _text_emb(self):
        from recsys.pipeline.recommender import load_text_embeddings

        return load_text_embeddings(self.dataset_dir) if self.dataset_dir is not None else None

    def _pipeline(self, dataset, visible, split, artifact=None):
        given = {} if artifact is None else {self.retriever_artifact: artifact}
        return candidate_pipeline(self.candidates, dataset, visible, split, self.dataset_dir, self._text, given)

    def _fitted(self, retriever):
        """The ``retriever_artifact`` of a retriever fitted here (None: the config's node is loaded)."""
        return None if retriever is None else fitted_two_tower(getattr(retriever, "model", retriever))

    def _load_served(self):
        """The ``retriever_artifact`` node pointed at ``retriever_run``, loaded as serving loads it
        (``load_two_tower_run``: run, checkpoint, index and dataset checked); records the checkpoint file."""
        node = {**self.candidates["artifacts"][self.retriever_artifact], "run_dir": str(self.retriever_run)}
        try:
            artifact = instantiate_with(node, dataset_dir=self.dataset_dir)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e}\nThe ranker is trained behind the two-tower run it is served with "
                                    f"(model.module.retriever_run={self.retriever_run}); "
                                    "`model.module.retriever_run=null` fits one here instead (offline experiments)") from e
        self.retriever_checkpoint = two_tower_checkpoint(self.retriever_run, node.get("checkpoint", "best"))
        return artifact

    # -- training -------------------------------------------------------------------
    def build_training_lists(self, dataset: Dataset, split: Split):
        """Training lists from the inner part of ``split.train`` (``split.valid``/``test`` unread)."""
        self._text = self._text_emb()
        inner, requests = holdout_requests(split.train, self.n_holdout, self.min_history, self.max_train_users, self.seed,
                                           self.negative_threshold)
        empty = split.train.iloc[:0]
        inner_split = Split("ranker-inner", inner, empty, empty)
        if self.inner_retriever is None and self.retriever_factory is not None:
            self.inner_retriever = self._new_retriever().fit(dataset, inner_split)
        gen = self._pipeline(dataset, inner, inner_split, self._fitted(self.inner_retriever))
        feats = RankerFeatures(self.spec, dataset, inner, self._text)
        return build_lists(gen, feats, requests, self.meta.n_items, require_positive=True, progress=self.progress,
                           desc="ranker train lists")

    def _serving_side(self, dataset: Dataset, split: Split, served=None) -> None:
        """Serving candidates (``self.generator``) and features (``self.features``) on ``split.train``;
        ``served``: the ``retriever_run``'s artifact (:meth:`_load_served`)."""
        if served is not None:
            artifact, self.retriever = served, served[0]
        else:
            if self.retriever is None and self.retriever_factory is not None:
                self.retriever = self._new_retriever().fit(dataset, split)
            artifact = self._fitted(self.retriever)
        self.generator = self._pipeline(dataset, split.train, split, artifact)
        self.features = RankerFeatures(self.spec, dataset, split.train, self._text)

    def prepare(self, dataset: Dataset, split: Split) -> "TwoStageRanker":
        """Fit the retrievers and build the training and validation lists (the costly part of ``fit``)."""
        pl.seed_everything(self.seed, workers=True)
        t0 = time.perf_counter()
        # a missing or mismatched two-tower run fails here, not after the training lists
        served = self._load_served() if self.retriever_run is not None else None
        self.train_lists = self.build_training_lists(dataset, split)
        self._serving_side(dataset, split, served)
        val_req = stage_requests(split.train, split.valid, self.max_val_users, self.seed, self.negative_threshold)
        # offline scoring (any stage's history): the low ratings of the histories it is given
        self.negatives = NegativeRatings(dataset.interactions, self.negative_threshold)
        self.val_lists = build_lists(self.generator, self.features, val_req, self.meta.n_items, require_positive=False,
                                     progress=self.progress, desc="ranker valid lists")
        self.data_stats = {"ranker/train_lists": len(self.train_lists), "ranker/train_rows": len(self.train_lists.rows),
                          "ranker/val_lists": len(self.val_lists),
                          "ranker/val_recall@n_rank": float(self.val_lists.retrieved().mean()),
                          "ranker/data_s": time.perf_counter() - t0}
        log.info("ranker data: %s", self.data_stats)
        return self

    def share_data(self, other: "TwoStageRanker") -> "TwoStageRanker":
        """Reuse ``other``'s retrievers and lists (same seed, candidates and cut-offs; this spec's
        features a subset of ``other``'s): only the ranker is trained again (DCN-v2 beside DLRM,
        another loss, a feature ablation)."""
        def lists_key(r):
            return (r.candidates, r.retriever_run, r.n_holdout, r.min_history, r.max_train_users, r.max_val_users, r.seed,
                    r.negative_threshold)

        if lists_key(self) != lists_key(other) or not self.spec.narrows(other.spec):
            raise ValueError("share_data needs the same candidates, retriever run, cut-offs and seed, and a subset of "
                             "the other's features")
        for key in ("inner_retriever", "retriever", "retriever_checkpoint", "generator", "negatives", "_text", "data_stats"):
            setattr(self, key, getattr(other, key))
        self.features = other.features.with_spec(self.spec)
        self.train_lists = other.train_lists.select(self.spec, other.spec)
        self.val_lists = other.val_lists.select(self.spec, other.spec)
        return self

    def fit(self, dataset: Dataset, split: Split) -> "TwoStageRanker":
        t0 = time.perf_counter()
        if self.train_lists is None:
            self.prepare(dataset, split)
        pl.seed_everything(self.seed, workers=True)
        self.fit_stats = dict(self.data_stats)
        self.ranker = call_with_available(self.ranker_factory, cardinalities=self.features.cardinalities(),
                                          num_dense_features=self.features.num_dense,
                                          din_items=self.meta.n_items if self.spec.din else 0, din_history=self.spec.history_len)
        self.ranker.set_dense_stats(self.train_lists.tensors.dense)
        self._train(self.train_lists, self.val_lists)
        self.fit_stats["ranker/fit_s"] = time.perf_counter() - t0
        return self

    def _train(self, train_lists, val_lists) -> None:
        from recsys.utils.artifacts import load_torch

        with tempfile.TemporaryDirectory() as tmp:
            ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp, monitor="val/ndcg@10", mode="max", save_top_k=1, save_weights_only=True)
            stop = pl.callbacks.EarlyStopping(monitor="val/ndcg@10", mode="max", patience=self.patience)
            trainer = self.trainer_factory(max_epochs=self.max_epochs, logger=False, callbacks=[ckpt, stop], default_root_dir=tmp,
                                           enable_checkpointing=True, num_sanity_val_steps=0, check_val_every_n_epoch=1,
                                           enable_progress_bar=self.progress, enable_model_summary=False)
            trainer.fit(self.ranker, train_lists.loader(self.lists_per_batch, True, self.seed), val_lists.loader(64, False))
            if ckpt.best_model_path:
                self.ranker.load_state_dict(load_torch(ckpt.best_model_path)["state_dict"])
                self.fit_stats.update({"ranker/best_val_ndcg@10": float(ckpt.best_model_score), "ranker/epochs": trainer.current_epoch})
            self.fit_stats["ranker/steps"] = int(trainer.global_step)
        self.ranker = self.ranker.cpu().eval()
        self.stage = DLRMRankStage(self.ranker, self.features)
        self.serving = self._pipeline_with_ranker()

    def _pipeline_with_ranker(self):
        from recsys.pipeline.pipeline import Pipeline

        g = self.generator
        return Pipeline(g.sources, g.merger, {"ranker": self.stage}, k=g.k, per_source=g.per_source)

    # -- serving --------------------------------------------------------------------
    def eval(self) -> "TwoStageRanker":
        return self

    def score(self, history: History) -> torch.Tensor:
        """(B, N): each user's served list (candidates re-ranked by the ranker) encoded as scores."""
        if self.ranker is None:
            raise RuntimeError("TwoStageRanker.fit must run before score")
        return PipelineScorer(self.serving, self.meta.n_items, self.negatives).score(history)

    def input_scorer(self) -> PipelineScorer:
        """The ranker's input order (the merged candidates, no ranker) as an Evaluator model."""
        return PipelineScorer(self.generator, self.meta.n_items, self.negatives)

    def save(self, directory: str | Path) -> Path:
        """Weights + JSON config + provenance (``recsys.ranking.artifact``); fitted retrievers as checkpoints."""
        from recsys.ranking.artifact import save_ranker

        d = Path(directory)
        ckpts = {}
        for name, r in (("inner", self.inner_retriever), ("serving", self.retriever)):
            if hasattr(r, "save") and getattr(r, "trainer", None) is not None:
                # <dir>/retrievers/<name>/checkpoints/two_tower.ckpt: `python -m recsys.index ckpt=...` indexes it
                ckpts[name] = r.save(d / "retrievers" / name / "checkpoints" / "two_tower.ckpt")
        if self.retriever_run is not None:  # the file load_two_tower_run read: serving checks its hash
            ckpts["serving"] = self.retriever_checkpoint
        extra = {"candidates": self.candidates, "retriever_artifact": self.retriever_artifact,
                 "negative_threshold": self.negative_threshold,
                 "retriever_run": None if self.retriever_run is None else str(self.retriever_run)}
        return save_ranker(d, self.ranker, self.spec, self.dataset_dir, ckpts, extra, self.fit_stats)
