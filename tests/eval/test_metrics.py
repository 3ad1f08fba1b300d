"""Ranking metrics on hand-computed hit matrices."""

import math

import pytest
import torch

from recsys.eval import metrics as M

# Three users, lists of 4: ranks 1 and 3 hit (2 relevant); nothing (1 relevant); rank 2 hits (3 relevant).
HITS = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.bool)
N_REL = torch.tensor([2, 1, 3])
L3 = math.log2(3)


def close(a, b):
    assert torch.allclose(a, torch.tensor(b, dtype=torch.float32), atol=1e-6), (a, b)


def test_at_4():
    close(M.recall(HITS, N_REL, 4), [1.0, 0.0, 1 / 3])
    close(M.precision(HITS, N_REL, 4), [0.5, 0.0, 0.25])
    close(M.hit_rate(HITS, N_REL, 4), [1.0, 0.0, 1.0])
    close(M.mrr(HITS, N_REL, 4), [1.0, 0.0, 0.5])
    # DCG 1 + 1/log2(4); IDCG over min(2,4)=2 ranks: 1 + 1/log2(3).
    # User 2: DCG 1/log2(3); IDCG over 3 ranks: 1 + 1/log2(3) + 1/2.
    close(M.ndcg(HITS, N_REL, 4), [1.5 / (1 + 1 / L3), 0.0, (1 / L3) / (1.5 + 1 / L3)])
    # MAP: (P@1 + P@3) / min(2,4) ; (P@2) / min(3,4).
    close(M.average_precision(HITS, N_REL, 4), [(1 + 2 / 3) / 2, 0.0, 0.5 / 3])


def test_at_2_cuts_the_list():
    close(M.recall(HITS, N_REL, 2), [0.5, 0.0, 1 / 3])
    close(M.precision(HITS, N_REL, 2), [0.5, 0.0, 0.5])
    close(M.ndcg(HITS, N_REL, 2), [1 / (1 + 1 / L3), 0.0, (1 / L3) / (1 + 1 / L3)])
    close(M.average_precision(HITS, N_REL, 2), [0.5, 0.0, 0.25])  # normalised by min(R, 2)


def test_k_longer_than_list_pads_with_misses():
    close(M.precision(HITS, N_REL, 6), [2 / 6, 0.0, 1 / 6])
    close(M.recall(HITS, N_REL, 6), [1.0, 0.0, 1 / 3])
    close(M.ndcg(HITS, N_REL, 6), M.ndcg(HITS, N_REL, 4).tolist()[:2] + [(1 / L3) / (1.5 + 1 / L3)])


def test_perfect_list_is_one():
    hits = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    for fn in (M.recall, M.ndcg, M.average_precision, M.mrr, M.hit_rate):
        close(fn(hits, torch.tensor([2]), 3), [1.0])


def test_leave_one_out_identities():
    g = torch.Generator().manual_seed(0)
    pos = torch.randint(0, 12, (50,), generator=g)  # rank of the single target; >= 10 means missed
    hits = torch.zeros(50, 10, dtype=torch.bool)
    hits[pos < 10, pos[pos < 10]] = True
    n = torch.ones(50, dtype=torch.long)
    assert torch.equal(M.recall(hits, n, 10), M.hit_rate(hits, n, 10))
    assert torch.allclose(M.average_precision(hits, n, 10), M.mrr(hits, n, 10))
    expected = torch.where(pos < 10, 1 / torch.log2(pos.float() + 2), torch.zeros(50))
    assert torch.allclose(M.ndcg(hits, n, 10), expected)


def test_registry_declares_needs_and_direction():
    assert set(M.METRICS) == {"recall", "precision", "ndcg", "mrr", "hit_rate", "map"}
    assert all(m.higher_is_better for m in M.METRICS.values())
    assert "n_rel" in M.METRICS["ndcg"].needs and "n_rel" not in M.METRICS["mrr"].needs
    with pytest.raises(ValueError, match="unknown ranking metric"):
        M.get_metric("auc")
    with pytest.raises(ValueError, match="positive"):
        M.recall(HITS, N_REL, 0)
