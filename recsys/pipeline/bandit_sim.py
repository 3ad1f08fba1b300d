"""Synthetic click models to compare exploration policies by cumulative regret.

Two environments, each run for a fixed horizon T with a slate of L slots per
round (the exploration stage's ``n_slots``):

- ``bernoulli``: N items with fixed click probabilities p_i ~ Beta(a, b)
  (a long tail of low CTRs, a few good items). Policies: Thompson sampling
  (Beta-Bernoulli), greedy on the posterior mean, epsilon-greedy.
- ``linear``: each round a user u and M candidates drawn from N items with
  embeddings e_i; click probability sigmoid(theta* . [u * e_i, e_i]).
  Policies: linear Thompson sampling, greedy and epsilon-greedy on the same
  Bayesian linear regression's mean.

Regret of a round = sum of the L best true probabilities - sum of the chosen
ones (an oracle that knows p). Used by ``scripts/simulate_bandits.py`` and the
tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.pipeline.exploration import BetaBernoulliTS, LinearTS

POLICIES = ("thompson", "epsilon_greedy", "greedy")


@dataclass
class SimConfig:
    env: str = "bernoulli"       # bernoulli | linear
    horizon: int = 3000          # rounds T
    slots: int = 2               # L items shown per round
    n_items: int = 100           # N
    ctr_a: float = 1.0           # bernoulli: p_i ~ Beta(ctr_a, ctr_b)
    ctr_b: float = 9.0
    prior: str = "matched"       # bernoulli: every policy's Beta prior: matched = Beta(ctr_a, ctr_b), or uniform = Beta(1, 1)
    candidates: int = 20         # linear: M candidates per round
    dim: int = 8                 # linear: embedding size D (features are 2D)
    epsilon: float = 0.1
    v: float = 0.5               # linear TS exploration scale


def _top(values: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of the k largest values, ties broken at random (greedy must not favour index 0)."""
    noise = rng.random(len(values)) * 1e-9
    return np.argsort(-(values + noise))[:k]


def run_bernoulli(policy: str, cfg: SimConfig, seed: int) -> np.ndarray:
    """(T,) cumulative regret of ``policy`` on a Beta-distributed CTR catalogue."""
    env = np.random.default_rng(seed)            # the world: same for every policy at a seed
    p = env.beta(cfg.ctr_a, cfg.ctr_b, size=cfg.n_items)
    best = np.sort(p)[::-1][: cfg.slots].sum()
    clicks = env.random((cfg.horizon, cfg.n_items))  # click if u < p: common random numbers
    rng = np.random.default_rng(seed + 10_000)     # the policy's own randomness
    # A uniform prior makes "greedy" optimistic (every unseen item looks like a 50% CTR),
    # so it explores by accident; the matched prior is what a system that knows its
    # average CTR would use, and isolates the effect of the policy.
    a, b = (cfg.ctr_a, cfg.ctr_b) if cfg.prior == "matched" else (1.0, 1.0)
    bandit = BetaBernoulliTS(cfg.n_items, a, b, seed=seed + 20_000)
    items = np.arange(cfg.n_items)
    regret = np.zeros(cfg.horizon)
    for t in range(cfg.horizon):
        if policy == "thompson":
            chosen = _top(bandit.sample(items), cfg.slots, rng)
        elif policy == "greedy" or (policy == "epsilon_greedy" and rng.random() >= cfg.epsilon):
            chosen = _top(bandit.mean(items), cfg.slots, rng)
        elif policy == "epsilon_greedy":
            chosen = rng.choice(cfg.n_items, cfg.slots, replace=False)
        else:
            raise ValueError(f"unknown policy {policy!r}; expected one of {POLICIES}")
        r = (clicks[t, chosen] < p[chosen]).astype(np.float64)
        bandit.update(chosen, r)
        regret[t] = best - p[chosen].sum()
    return np.cumsum(regret)


def run_linear(policy: str, cfg: SimConfig, seed: int) -> np.ndarray:
    """(T,) cumulative regret of ``policy`` on a logistic click model over user x item features."""
    env = np.random.default_rng(seed)
    emb = env.standard_normal((cfg.n_items, cfg.dim)) / np.sqrt(cfg.dim)
    theta = env.standard_normal(2 * cfg.dim) * 2.0
    users = env.standard_normal((cfg.horizon, cfg.dim)) / np.sqrt(cfg.dim)
    cand = np.stack([env.choice(cfg.n_items, cfg.candidates, replace=False) for _ in range(cfg.horizon)])
    clicks = env.random((cfg.horizon, cfg.candidates))
    rng = np.random.default_rng(seed + 10_000)
    bandit = LinearTS(2 * cfg.dim, reg=1.0, v=cfg.v, seed=seed + 20_000)
    regret = np.zeros(cfg.horizon)
    for t in range(cfg.horizon):
        e = emb[cand[t]]                                   # (M, D)
        x = np.concatenate([e * users[t], e], axis=1)      # (M, 2D)
        p = 1.0 / (1.0 + np.exp(-(x @ theta)))             # (M,)
        if policy == "thompson":
            chosen = _top(bandit.sample(x), cfg.slots, rng)
        elif policy == "greedy" or (policy == "epsilon_greedy" and rng.random() >= cfg.epsilon):
            chosen = _top(bandit.mean(x), cfg.slots, rng)
        elif policy == "epsilon_greedy":
            chosen = rng.choice(cfg.candidates, cfg.slots, replace=False)
        else:
            raise ValueError(f"unknown policy {policy!r}; expected one of {POLICIES}")
        r = (clicks[t, chosen] < p[chosen]).astype(np.float64)
        bandit.update(x[chosen], r)
        regret[t] = np.sort(p)[::-1][: cfg.slots].sum() - p[chosen].sum()
    return np.cumsum(regret)


def simulate(cfg: SimConfig, seeds, policies=POLICIES) -> dict[str, np.ndarray]:
    """policy -> (S, T) cumulative regret over ``seeds``."""
    run = {"bernoulli": run_bernoulli, "linear": run_linear}[cfg.env]
    return {p: np.stack([run(p, cfg, s) for s in seeds]) for p in policies}
