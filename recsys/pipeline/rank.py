"""Ranking stage: re-rank the top ``n_rank`` merged candidates with a trained DLRM / DCN-v2 ranker.

The model is ``recsys.models.lit_ranker.LitRanker`` around ``recsys.models.dlrm.DLRM``
(Naumov et al. 2019; DCN-v2: Wang et al. 2021). Its inputs are computed by the ranker's
feature contract, ``recsys.ranking.features.RankerFeatures.compute(ctx, cands)``, the same
call that built its training rows, so the stage must come right after the merger (the
features read the merged order and each source's ``<s>_score`` / ``<s>_rank``).

Output: the scored candidates by descending logit (``features["rank_score"]``), then the
rest of the merged list in merged order below them (so later filters still have a pool),
cut to ``keep`` when set. The stage reports in the trace dict it is handed (the pipeline files
it under ``stages.ranker``): ``scored`` rows and ``missing_sources``; a source the ranker was
trained with but the pipeline lacks reads as "not proposed" for every item, and is a fallback.

``dlrm_stage(ranker, ...)`` builds the stage from the ``ranker`` artifact of the pipeline config
(``configs/pipeline/two_tower_dlrm.yaml``): a ranker training run's ``<run_dir>/model/``
(``python -m recsys.train experiment=ml100k/dlrm``), loaded and checked against the served
dataset and two-tower run by ``recsys.ranking.artifact.load_ranker_run``.
"""

from __future__ import annotations

import numpy as np
import torch

from recsys.core.candidates import Candidates, UserContext


class DLRMRankStage:
    """Args:
        model: a trained ``LitRanker`` (its dense/sparse inputs are ``features``' output).
        features: the ``RankerFeatures`` of the serving data (same spec as at training).
        keep: how many candidates leave the stage (None = all).
    """

    name = "ranker"

    def __init__(self, model, features, keep: int | None = None) -> None:
        hp = getattr(model, "hparams", {})
        card = features.cardinalities()
        if "cardinalities" in hp and list(dict(hp["cardinalities"]).items()) != list(card.items()):  # order = F order
            raise ValueError(f"ranker tables {dict(hp['cardinalities'])} do not match the feature contract's {card}")
        if "num_dense_features" in hp and hp["num_dense_features"] != features.num_dense:
            raise ValueError(f"ranker takes {hp['num_dense_features']} dense features, the contract gives {features.num_dense}")
        self.model, self.features, self.keep = model.eval(), features, keep

    def rows(self, ctx: UserContext, cands: Candidates):
        """The ranker's input rows for this request (what training computed for the same request)."""
        return self.features.compute(ctx, cands)

    @torch.no_grad()
    def __call__(self, ctx: UserContext, cands: Candidates) -> Candidates:
        if len(cands) == 0:
            return cands
        rows = self.rows(ctx, cands)
        logits = self.model(*rows.tensors().batch()).float().numpy()  # (K',)
        n = len(rows)
        order = np.argsort(-logits, kind="stable")
        out = cands.take(np.concatenate([order, np.arange(n, len(cands))]))
        tail = len(cands) - n
        scores = np.concatenate([logits[order], logits.min() - 1.0 - np.arange(tail, dtype=np.float32)])
        rank_score = np.concatenate([logits[order], np.full(tail, np.nan, np.float32)])
        out = out.with_scores(scores.astype(np.float32))
        out.features["rank_score"] = rank_score.astype(np.float32)
        missing = [s for s in self.features.spec.sources if f"{s}_rank" not in cands.features]
        out.trace.update(scored=n, missing_sources=missing)
        if missing:
            out.trace["fallbacks"] = [f"ranker: no {', '.join(missing)} source in this pipeline; read as not proposed"]
        return out.head(self.keep) if self.keep is not None else out


def dlrm_stage(ranker, dataset, interactions, text_emb=None, keep: int | None = None) -> DLRMRankStage:
    """The rank stage of a saved ranker (the ``ranker`` artifact: ``recsys.ranking.artifact.load_ranker_run``,
    which checked it against the served dataset and two-tower), on the serving data.

    ``ranker``, ``dataset``, ``interactions`` (the visible past) and ``text_emb`` are injected by
    the pipeline factory (``recsys.pipeline.recommender``).
    """
    from recsys.ranking.features import RankerFeatures

    if ranker is None:
        raise ValueError("the DLRM rank stage needs the ranker artifact (configs/pipeline/two_tower_dlrm.yaml)")
    return DLRMRankStage(ranker.model, RankerFeatures(ranker.spec, dataset, interactions, text_emb), keep=keep)
