"""Beyond-accuracy metrics on hand-computed cases."""

import math

import pytest
import torch

from recsys.eval import beyond as B

# Catalogue of 5 items; categories: 0 {a}, 1 {a,b}, 2 {c}, 3 {}, 4 {}.
CATS = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0]], dtype=torch.bool)
POP = torch.tensor([8.0, 4.0, 2.0, 2.0, 0.0])


def test_coverage():
    topk = torch.tensor([[0, 1, 2], [0, 1, -1]])
    assert B.coverage(topk, 5, 3).item() == pytest.approx(3 / 5)
    assert B.coverage(topk, 5, 1).item() == pytest.approx(1 / 5)


def test_ild_category():
    # Pairs of [0,1,2]: J(0,1)=1/2 -> 0.5; J(0,2)=0 -> 1; J(1,2)=0 -> 1; mean 2.5/3.
    # [3,4,-1]: one valid pair of two empty sets -> identical, distance 0.
    # [0,-1,-1]: no pair -> 0.
    topk = torch.tensor([[0, 1, 2], [3, 4, -1], [0, -1, -1]])
    out = B.ild_category(topk, CATS, 3)
    assert out.tolist() == pytest.approx([2.5 / 3, 0.0, 0.0])


def test_ild_embedding():
    emb = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    # cos(0,1)=0 -> 1; cos(0,2)=-1 -> 2; cos(1,2)=0 -> 1; mean 4/3.
    out = B.ild_embedding(torch.tensor([[0, 1, 2], [0, 0, -1]]), emb, 3)
    assert out.tolist() == pytest.approx([4 / 3, 0.0], abs=1e-6)


def test_novelty():
    # Shares: 8/16, 4/16, 2/16, 2/16, unseen item counted once: 1/17 of total 17.
    topk = torch.tensor([[0, 1], [2, 4]])
    out = B.novelty(topk, POP, 2)
    assert out.tolist() == pytest.approx([(-math.log2(8 / 17) - math.log2(4 / 17)) / 2, (-math.log2(2 / 17) - math.log2(1 / 17)) / 2], rel=1e-6)


def test_popularity_percentile_and_bias():
    # Sorted counts 0,2,2,4,8: item0 -> (4 + 0.5)/5, item1 -> 3.5/5, items 2,3 -> (1 + 1)/5, item4 -> 0.5/5.
    assert B.popularity_percentile(POP).tolist() == pytest.approx([0.9, 0.7, 0.4, 0.4, 0.1])
    assert B.popularity_percentile(torch.ones(4)).tolist() == pytest.approx([0.5] * 4)
    topk = torch.tensor([[0, 4], [1, -1]])
    assert B.popularity_bias(topk, POP, 2).tolist() == pytest.approx([0.5, 0.7])
    assert B.arp(topk, POP, 2).tolist() == pytest.approx([4.0, 4.0])
