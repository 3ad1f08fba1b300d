"""Thompson-sampling bandits, the exploration stage, and the regret simulation."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.pipeline.bandit_sim import SimConfig, simulate
from recsys.core.candidates import Candidates, UserContext
from recsys.pipeline.exploration import BetaBernoulliTS, LinearTS, ThompsonExploration, _spread

from pipeline_helpers import make_catalog


def test_beta_bernoulli_posterior_update_is_exact():
    b = BetaBernoulliTS(3, prior_alpha=1.0, prior_beta=2.0)
    b.update(np.array([0, 0, 2]), np.array([1.0, 0.0, 1.0]))
    assert b.alpha.tolist() == [2.0, 1.0, 2.0] and b.beta.tolist() == [3.0, 2.0, 2.0]
    np.testing.assert_allclose(b.mean(np.arange(3)), [2 / 5, 1 / 3, 2 / 4])


def test_linear_ts_posterior_mean_matches_ridge_regression():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 4))
    w = np.array([1.0, -2.0, 0.5, 0.0])
    y = x @ w + 0.01 * rng.standard_normal(200)
    lin = LinearTS(4, reg=1.0)
    lin.update(x, y)
    ridge = np.linalg.solve(x.T @ x + np.eye(4), x.T @ y)
    np.testing.assert_allclose(lin.mean(np.eye(4)), ridge, rtol=1e-10)
    # draws concentrate around the mean as evidence grows
    draws = np.stack([lin.sample(np.eye(4)) for _ in range(200)])
    assert np.abs(draws.mean(0) - ridge).max() < 0.05


def test_spread_positions():
    assert _spread([0, 1, 2, 3, 4, 5], [10, 11]) == [0, 1, 10, 2, 3, 11, 4, 5]
    assert _spread([0, 1], [9]) == [0, 9, 1]
    assert _spread([], [7, 8]) == [7, 8]


@pytest.mark.parametrize("variant", ["beta", "linear"])
def test_exploration_stage_fills_slots_from_below_the_exploit_part(variant):
    cat = make_catalog(60)
    cands = Candidates(np.arange(30), -np.arange(30, dtype=np.float32), np.array(["s"] * 30, dtype=object))
    stage = ThompsonExploration(cat, n_slots=3, k=10, variant=variant, positions="end", seed=0)
    out = stage(UserContext(user_idx=0, history=np.array([40, 41])), cands)
    assert out.items[:7].tolist() == list(range(7))
    assert all(i >= 7 for i in out.items[7:10]) and sorted(out.items.tolist()) == list(range(30))
    assert out.features["explored"].tolist() == [False] * 7 + [True] * 3 + [False] * 20
    assert out.items[10:].tolist() == sorted(out.items[10:].tolist())  # the rest keeps its order
    assert len(cands.trace["explored"]) == 3


def test_exploration_learns_from_feedback():
    """After many clicks on item 25 and none on the others, it is explored every time."""
    cat = make_catalog(60)
    stage = ThompsonExploration(cat, n_slots=1, k=5, pool=30, variant="beta", seed=0)
    ctx = UserContext(user_idx=0)
    others = [i for i in range(4, 30) if i != 25]
    stage.update(ctx, np.array([25] * 50 + others * 5), np.array([1.0] * 50 + [0.0] * 5 * len(others)))
    for _ in range(20):
        c = Candidates(np.arange(30), -np.arange(30, dtype=np.float32), np.array(["s"] * 30, dtype=object))
        assert 25 in stage(ctx, c).items[:5].tolist()


def test_thompson_sampling_has_lower_regret_than_greedy_and_epsilon_greedy():
    """Seeded small simulation (matched prior, see experiments/bandits.md)."""
    res = simulate(SimConfig(env="bernoulli", horizon=1500, n_items=50), seeds=range(4))
    final = {p: r[:, -1].mean() for p, r in res.items()}
    assert final["thompson"] < final["greedy"]
    assert final["thompson"] < final["epsilon_greedy"]
