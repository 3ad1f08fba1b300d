"""A ready-to-query recommender: a prepared dataset + a pipeline config.

Built by :func:`recsys.pipeline.build.build_recommender` (the one factory that the
server, ``python -m recsys.recommend`` and offline evaluation share). Loads
``<dataset_dir>`` (the canonical tables, ``item_text_emb.npy`` when present),
builds the :class:`ItemCatalog` and :class:`ContextBuilder`, then the pipeline
from its config, handing data-derived objects to the artifacts, sources and
stages that ask for them by constructor name (see :func:`build_pipeline`):

    catalog, items_table, interactions, n_items, item_categories, item_popularity, text_emb,
    emb (item embeddings for item-to-item neighbours), dataset, split, meta, dataset_dir
    (+ whatever the caller adds: the LLM ``backend`` and ``accounting``, trained models)

``history`` selects what counts as the users' past: ``all`` interactions
(serving), or ``valid``/``test`` (offline evaluation: train, or train+valid,
so the held-out item is never visible to any stage).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from recsys.core.candidates import Candidates, Constraints
from recsys.pipeline.catalog import ItemCatalog
from recsys.pipeline.context import ContextBuilder
from recsys.pipeline.filters import check_categories
from recsys.pipeline.pipeline import Pipeline, build_pipeline
from recsys.pipeline.similar import build_similar

log = logging.getLogger(__name__)


class Recommender:
    """Args:
        dataset_dir: a prepared dataset directory (``python -m recsys.data.prepare``).
        pipeline: a ``configs/pipeline/*.yaml`` node (DictConfig or dict).
        split: the split name under ``splits/`` (needed when ``history`` is valid/test).
        history: ``all``, ``valid`` or ``test`` (see the module docstring).
        negative_threshold: ratings at or below it count as negative feedback.
        objects: extra objects for the pipeline's constructors (a trained model, an index).
    """

    def __init__(self, dataset_dir: str | Path, pipeline, split: str | None = "loo", history: str = "all",
                 negative_threshold: float | None = 2.0, objects: dict | None = None):
        from recsys.data.io import load_dataset, load_split

        self.dataset_dir = Path(dataset_dir)
        self.dataset = load_dataset(self.dataset_dir)
        self.split = load_split(self.dataset_dir, split) if split else None
        if history == "all":
            inter = self.dataset.interactions
        elif history in ("valid", "test"):
            if self.split is None:
                raise ValueError(f"history={history!r} needs a split")
            inter = self.split.history_for(history)
        else:
            raise ValueError(f"history must be all, valid or test, got {history!r}")
        self.interactions = inter
        self.text_emb = load_text_embeddings(self.dataset_dir)
        if self.text_emb is None:
            log.warning("%s not found: MMR falls back to category overlap, content source is unavailable",
                        self.dataset_dir / "item_text_emb.npy")
        self.objects = {**pipeline_objects(self.dataset, inter, self.split, self.dataset_dir, self.text_emb), **(objects or {})}
        self.catalog = self.objects["catalog"]
        self.contexts = ContextBuilder(inter, self.dataset.users, negative_threshold)
        self.item_ids = self.objects["items_table"]["item_id"].astype(str).tolist()
        self._item_by_id = {iid: j for j, iid in enumerate(self.item_ids)}
        self.pipeline: Pipeline = build_pipeline(pipeline, **self.objects)
        self.info = {"dataset_dir": str(self.dataset_dir), "history": history, "split": split,
                     "artifacts": _artifact_paths(pipeline)}
        self.similar_items = build_similar(pipeline.get("similar"), self.catalog, self.pipeline.sources)

    # ---- ids -----------------------------------------------------------------------
    def item_idx(self, item_id: str) -> int | None:
        return self._item_by_id.get(str(item_id))

    # ---- requests ------------------------------------------------------------------
    def recommend(self, user_idx: int | None, k: int | None = None, session=(), constraints: Constraints | None = None,
                  query: str | None = None, onboarding_categories=(), demographics: dict | None = None,
                  user_id: str | None = None) -> tuple[Candidates, object]:
        """-> (final candidates, the UserContext used). Unknown users take the cold-start path
        (with their live feedback, found by the external ``user_id``). A genre the catalogue does not
        have raises ``recsys.pipeline.filters.UnknownCategoryError`` (naming the valid genres)."""
        check_categories(self.catalog, constraints, onboarding_categories)
        ctx = self.contexts.build(user_idx, session, constraints, query, onboarding_categories, demographics, user_id)
        return self.pipeline(ctx, k), ctx

    def similar(self, item: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Items similar to ``item`` -> (items, scores): ``recsys.pipeline.similar`` (behaviour, then content)."""
        return self.similar_items(item, k)

    def observe(self, user_idx: int | None, items, rewards, positive=None, user_id: str | None = None) -> None:
        """Feedback for shown items: the bandit learns (reward 0/1) and the user's context updates.

        ``positive`` (per item, optional) marks consumption (True), dislike (False) or a
        plain impression (None: nothing changes in the profile).
        """
        items = np.asarray(items, np.int64)
        ctx = self.contexts.build(user_idx)
        for stage in self.pipeline.stages.values():
            if hasattr(stage, "update"):
                stage.update(ctx, items, np.asarray(rewards, np.float64))
        key = self.contexts.user_id(user_idx) if self.contexts.knows(user_idx) else user_id
        if key is not None and positive is not None:
            for i, p in zip(items.tolist(), positive):
                if p is not None:
                    self.contexts.add_feedback(key, i, positive=bool(p))


def load_text_embeddings(dataset_dir: str | Path) -> np.ndarray | None:
    """``<dataset_dir>/item_text_emb.npy`` as float32, or None when the dataset was prepared without it."""
    path = Path(dataset_dir) / "item_text_emb.npy"
    return np.load(path).astype(np.float32) if path.exists() else None


def pipeline_objects(dataset, interactions, split, dataset_dir, text_emb: np.ndarray | None) -> dict:
    """The data-derived objects sources and stages receive by constructor name, for ``interactions``
    as the visible past (also used by the ranker to rebuild the sources on its training prefixes)."""
    n = dataset.meta.n_items
    popularity = np.bincount(interactions["item_idx"].to_numpy(np.int64), minlength=n).astype(np.float32)
    items = dataset.items.sort_values("item_idx")
    catalog = ItemCatalog.from_items(dataset.items, embeddings=text_emb, popularity=popularity)
    return dict(catalog=catalog, items_table=items, interactions=interactions, n_items=n,
                item_categories=[list(c) for c in items["categories"]], item_popularity=popularity,
                text_emb=text_emb, emb=text_emb,
                dataset=dataset, split=split, meta=dataset.meta,
                dataset_dir=Path(dataset_dir) if dataset_dir is not None else None)


def itemknn_source(dataset, split, k: int = 100, shrink: float = 10.0, n_neighbours: int = 50,
                   n_seeds: int = 20, recency_decay: float = 0.9, name: str = "item2item"):
    """Fit ItemKNN (Sarwar et al. 2001) on the split's training part and wrap it as an item-to-item source.

    Fitting ML-100K takes ~1 s, so a server does it at start-up instead of shipping a file.
    """
    from recsys.models.itemknn import ItemKNN
    from recsys.retrieval.sources import ItemToItemSource

    if split is None:
        raise ValueError("itemknn_source needs a split (the training interactions)")
    model = ItemKNN(dataset.meta, k=k, shrink=shrink).fit(dataset, split)
    return ItemToItemSource.from_similarity(model.sim, n_neighbours=n_neighbours, n_seeds=n_seeds,
                                            recency_decay=recency_decay, name=name)


def _artifact_paths(pipeline) -> dict[str, str]:
    """``artifacts.<name>`` -> the run directory (and checkpoint) it was loaded from, for logs and the CLI."""
    out = {}
    for name, node in ((pipeline or {}).get("artifacts") or {}).items():
        if node is not None:
            where = node.get("run_dir", node.get("path", "?"))
            out[name] = f"{where} ({node['checkpoint']})" if node.get("checkpoint") else str(where)
    return out


def load_two_tower(run_dir: str, index_kind: str = "ivf_flat", checkpoint: str = "best", nprobe: int | None = None,
                   dataset_dir=None):
    """A trained two-tower and its FAISS index from a run directory (``recsys.train`` + ``recsys.index``).

    -> (LitTwoTower in eval mode, ItemIndex), checked to belong together and to ``dataset_dir``
    (injected: the prepared dataset being served) by
    :func:`recsys.retrieval.artifacts.load_two_tower_run`, whose errors name the rebuild command.
    ``checkpoint``: ``best`` (default), ``last`` or ``epoch_NNN``.
    """
    from recsys.retrieval.artifacts import load_two_tower_run

    model, index = load_two_tower_run(run_dir, index_kind, checkpoint=checkpoint, dataset_dir=dataset_dir)
    if nprobe is not None:
        index.set_search_params(nprobe=nprobe)
    return model, index


def two_tower_source(two_tower, name: str = "two_tower", negatives_in_history: bool = False):
    """The two-tower ANN source over the ``two_tower`` artifact ((model, index): :func:`load_two_tower`);
    ``negatives_in_history``: see ``recsys.retrieval.sources.TwoTowerSource``."""
    from recsys.retrieval.sources import TwoTowerSource

    if two_tower is None:
        raise ValueError("the two_tower source needs the two_tower artifact (configs/pipeline/two_tower.yaml)")
    model, index = two_tower
    return TwoTowerSource(model, index, name=name, negatives_in_history=negatives_in_history)
