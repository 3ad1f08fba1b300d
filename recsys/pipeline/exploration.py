"""Thompson-sampling exploration: a few slots of each list go to uncertain items.

Thompson sampling: Thompson, "On the likelihood that one unknown probability
exceeds another in view of the evidence of two samples", Biometrika 1933;
Chapelle & Li, "An Empirical Evaluation of Thompson Sampling", NIPS 2011
(Beta-Bernoulli for display ads). Contextual linear variant: Agrawal & Goyal,
"Thompson Sampling for Contextual Bandits with Linear Payoffs", ICML 2013.

Two bandits share one interface, ``sample(x_or_items) -> (K,)`` sampled reward
and ``update(x_or_items, rewards)``:

- :class:`BetaBernoulliTS`: one Beta(alpha, beta) posterior of the click
  probability per item (N items).
- :class:`LinearTS`: Bayesian linear regression r = x.w + noise on a (K, d)
  feature matrix, prior w ~ N(0, v^2/reg I); posterior precision A, vector b.

:class:`ThompsonExploration` is the pipeline stage: it keeps the first
``k - n_slots`` items of the incoming list, and fills ``n_slots`` slots with
the candidates further down whose sampled reward is highest.
"""

from __future__ import annotations

import numpy as np

from recsys.core.candidates import Candidates, UserContext
from recsys.pipeline.catalog import ItemCatalog
from recsys.pipeline.sizing import DEFAULT_K, SizeSpec, as_size


class BetaBernoulliTS:
    """Per-item Beta posteriors of a click probability.

    alpha, beta (N,) float64; starting at the prior (``prior_alpha``, ``prior_beta``).
    """

    def __init__(self, n_items: int, prior_alpha: float = 1.0, prior_beta: float = 1.0, seed: int = 0):
        if prior_alpha <= 0 or prior_beta <= 0:
            raise ValueError("Beta prior parameters must be > 0")
        self.alpha = np.full(n_items, prior_alpha, dtype=np.float64)
        self.beta = np.full(n_items, prior_beta, dtype=np.float64)
        self.rng = np.random.default_rng(seed)

    def sample(self, items: np.ndarray) -> np.ndarray:
        """(K,) one posterior draw per item."""
        return self.rng.beta(self.alpha[items], self.beta[items])

    def mean(self, items: np.ndarray) -> np.ndarray:
        return self.alpha[items] / (self.alpha[items] + self.beta[items])

    def update(self, items: np.ndarray, rewards: np.ndarray) -> None:
        """Rewards in [0, 1] (a click is 1, an ignored impression 0)."""
        rewards = np.clip(np.asarray(rewards, dtype=np.float64), 0.0, 1.0)
        np.add.at(self.alpha, items, rewards)
        np.add.at(self.beta, items, 1.0 - rewards)


class LinearTS:
    """Bayesian linear regression with a Gaussian posterior over w (d,).

    A = reg * I + sum x x^T, b = sum r x, mean = A^-1 b; a draw is
    w ~ N(mean, v^2 A^-1) (``v`` scales exploration, as in Agrawal & Goyal).
    """

    def __init__(self, dim: int, reg: float = 1.0, v: float = 0.5, seed: int = 0):
        if reg <= 0:
            raise ValueError("reg must be > 0")
        self.A = reg * np.eye(dim)
        self.b = np.zeros(dim)
        self.v = v
        self.rng = np.random.default_rng(seed)

    def _posterior(self) -> tuple[np.ndarray, np.ndarray]:
        chol = np.linalg.cholesky(self.A)  # A = L L^T
        mean = np.linalg.solve(self.A, self.b)
        return mean, chol

    def sample(self, x: np.ndarray) -> np.ndarray:
        """x (K, d) -> (K,) rewards under one posterior draw of w."""
        mean, chol = self._posterior()
        z = self.rng.standard_normal(len(mean))
        # w = mean + v L^-T z has covariance v^2 (L L^T)^-1 = v^2 A^-1
        w = mean + self.v * np.linalg.solve(chol.T, z)
        return x @ w

    def mean(self, x: np.ndarray) -> np.ndarray:
        return x @ np.linalg.solve(self.A, self.b)

    def update(self, x: np.ndarray, rewards: np.ndarray) -> None:
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        self.A += x.T @ x
        self.b += x.T @ np.asarray(rewards, dtype=np.float64)


def user_item_features(catalog: ItemCatalog, ctx: UserContext, items: np.ndarray) -> np.ndarray:
    """(K, 2D) contextual features: [u * e_i, e_i].

    ``u`` is the mean embedding of the user's history and session (a cold
    user has u = 0, so only the item part speaks); e_i the item embedding.
    """
    if catalog.embeddings is None:
        raise ValueError("LinearTS exploration needs catalog embeddings (item_text_emb.npy or item_embeddings.npy)")
    e = catalog.embeddings[items]  # (K, D)
    seen = np.concatenate([ctx.history, ctx.session]).astype(np.int64)
    u = catalog.embeddings[seen].mean(0) if len(seen) else np.zeros(e.shape[1], np.float32)
    return np.concatenate([e * u[None, :], e], axis=1)


class ThompsonExploration:
    """Pipeline stage: ``n_slots`` of the first ``k`` go to Thompson-sampled items.

    Output order: the first ``k - n_slots`` incoming items, the explored items
    placed among them, then the candidates that were not picked (so a later
    stage still has a pool; the pipeline cuts the list to its ``k``).

    Sizes (``recsys.pipeline.sizing``) are fixed ints or relative to the request's k,
    which the pipeline passes at call time, so the slots always fall within the
    list the user gets (``k=5`` has its explored item at position 5, not 10).

    Args:
        catalog: item attributes (embeddings for the linear variant).
        n_slots: how many slots explore (0 switches it off without removing it), at most the list length.
        k: the final list length the slots are counted in (default: the request's k).
        pool: how many candidates below the exploit part may be explored.
        variant: ``beta`` (per item) or ``linear`` (contextual).
        positions: ``end`` puts explored items last; ``spread`` interleaves them
            evenly so they get a fair chance to be seen.
    """

    name = "exploration"

    def __init__(self, catalog: ItemCatalog, n_slots: SizeSpec = 2, k: SizeSpec | None = None, pool: SizeSpec = 50,
                 variant: str = "beta", positions: str = "spread", prior_alpha: float = 1.0,
                 prior_beta: float = 1.0, reg: float = 1.0, v: float = 0.5, seed: int = 0):
        self.n_slots, self.k, self.pool = as_size(n_slots), as_size({} if k is None else k), as_size(pool)
        if isinstance(n_slots, int) and isinstance(k, int) and not 0 <= n_slots <= k:
            raise ValueError(f"n_slots must be in [0, k={k}], got {n_slots}")
        if variant not in ("beta", "linear"):
            raise ValueError(f"variant must be 'beta' or 'linear', got {variant!r}")
        if positions not in ("end", "spread"):
            raise ValueError(f"positions must be 'end' or 'spread', got {positions!r}")
        self.catalog = catalog
        self.variant, self.positions = variant, positions
        if variant == "beta":
            self.bandit = BetaBernoulliTS(len(catalog), prior_alpha, prior_beta, seed)
        else:
            dim = 2 * catalog.embeddings.shape[1] if catalog.embeddings is not None else 0
            self.bandit = LinearTS(dim, reg, v, seed)

    def _arms(self, ctx: UserContext, items: np.ndarray):
        return items if self.variant == "beta" else user_item_features(self.catalog, ctx, items)

    def __call__(self, ctx: UserContext, cands: Candidates, k: int = DEFAULT_K) -> Candidates:
        list_k = self.k(k)
        n_slots = min(self.n_slots(k), list_k)
        n_exploit = list_k - n_slots
        rest = np.arange(n_exploit, min(len(cands), n_exploit + self.pool(k)))
        flag = np.zeros(len(cands), dtype=bool)
        if n_slots == 0 or len(rest) == 0:
            cands.features["explored"] = flag
            return cands
        drawn = self.bandit.sample(self._arms(ctx, cands.items[rest]))  # (|rest|,)
        picked = rest[np.argsort(-drawn, kind="stable")[:n_slots]]
        exploit = list(range(min(n_exploit, len(cands))))
        order = exploit + list(picked) if self.positions == "end" else _spread(exploit, list(picked))
        flag[picked] = True
        # the unpicked rest follows, so later stages (LLM re-rank) still have a pool
        order = order + [j for j in range(n_exploit, len(cands)) if not flag[j]]
        out = cands.take(np.asarray(order, dtype=np.int64))
        out.features["explored"] = flag[order]
        cands.trace["explored"] = [int(i) for i in cands.items[picked]]
        return out

    def update(self, ctx: UserContext, items: np.ndarray, rewards: np.ndarray) -> None:
        """Feed back observed rewards (clicks 1, ignored impressions 0) for shown items."""
        items = np.asarray(items, dtype=np.int64)
        self.bandit.update(self._arms(ctx, items), np.asarray(rewards, dtype=np.float64))


def _spread(exploit: list[int], explore: list[int]) -> list[int]:
    """Interleave ``explore`` evenly into ``exploit``: slot j goes after position (j+1)*n/(m+1)."""
    n, m = len(exploit), len(explore)
    out, e = [], 0
    for pos, x in enumerate(exploit):
        out.append(x)
        while e < m and (e + 1) * (n + 1) // (m + 1) <= pos + 1:
            out.append(explore[e])
            e += 1
    return out + explore[e:]
