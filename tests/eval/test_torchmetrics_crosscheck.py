"""Cross-check the ranking metrics against torchmetrics' retrieval metrics on random data."""

import pytest
import torch
from torchmetrics.retrieval import (
    RetrievalHitRate,
    RetrievalMAP,
    RetrievalMRR,
    RetrievalNormalizedDCG,
    RetrievalPrecision,
    RetrievalRecall,
)

from recsys.eval import metrics as M
from recsys.eval.evaluator import topk_deterministic


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_torchmetrics(seed):
    g = torch.Generator().manual_seed(seed)
    u, n, k = 40, 30, 10
    preds = torch.rand(u, n, generator=g)  # continuous: no ties, so both sides rank identically
    target = torch.rand(u, n, generator=g) < 0.15
    target[torch.arange(u), torch.randint(0, n, (u,), generator=g)] = True  # every user has a relevant item
    top = topk_deterministic(preds, n)  # full ranking
    hits = target.gather(1, top)
    n_rel = target.sum(1)
    idx = torch.arange(u)[:, None].expand(u, n).reshape(-1)

    def tm(metric):
        return metric(preds.reshape(-1), target.reshape(-1), indexes=idx).item()

    ours = lambda fn, kk: fn(hits, n_rel, kk).mean().item()  # noqa: E731
    assert ours(M.ndcg, k) == pytest.approx(tm(RetrievalNormalizedDCG(top_k=k)), abs=1e-5)
    assert ours(M.recall, k) == pytest.approx(tm(RetrievalRecall(top_k=k)), abs=1e-6)
    assert ours(M.precision, k) == pytest.approx(tm(RetrievalPrecision(top_k=k)), abs=1e-6)
    assert ours(M.hit_rate, k) == pytest.approx(tm(RetrievalHitRate(top_k=k)), abs=1e-6)
    # torchmetrics 1.0.3 has no cut-off for MRR and normalises AP by the relevant items
    # *retrieved*; over the full list (k = N) both coincide with our definitions.
    assert ours(M.mrr, n) == pytest.approx(tm(RetrievalMRR()), abs=1e-6)
    assert ours(M.average_precision, n) == pytest.approx(tm(RetrievalMAP()), abs=1e-5)
    assert ours(M.ndcg, n) == pytest.approx(tm(RetrievalNormalizedDCG()), abs=1e-5)
