"""Per-user metrics of leave-one-out lists and the paired test of one order against another.

A stage's gain is claimed over its own input on the same users: the per-user NDCG@k of the
two orders are paired, and the Wilcoxon signed-rank test (zero differences dropped, as scipy's
default ``zero_method="wilcox"``) says whether the shift is more than noise.
"""

from __future__ import annotations

import numpy as np


def per_user_ndcg(lists: np.ndarray, targets: np.ndarray, k: int = 10) -> np.ndarray:
    """(U,) NDCG@k of one held-out item per user: 1/log2(rank + 2) if it is in the top k, else 0.

    lists (U, K) item_idx best first (-1 pads); targets (U,) item_idx.
    """
    lists, targets = np.asarray(lists), np.asarray(targets)
    hit = lists[:, :k] == targets[:, None]
    pos = np.where(hit.any(1), hit.argmax(1), -1)
    return np.where(pos >= 0, 1.0 / np.log2(np.maximum(pos, 0) + 2.0), 0.0)


def paired_test(new: np.ndarray, base: np.ndarray) -> dict:
    """Wilcoxon signed-rank of per-user ``new`` against ``base`` (same users, same order).

    -> ``delta`` (mean difference), ``rel_gain`` (``delta`` over the input's mean; None when the input
    scores 0 for every user: there is nothing to be relative to), ``wilcoxon_p`` (1.0 when every user ties:
    nothing moved, so no evidence of a change), ``users_better`` / ``users_worse``, ``n_users``.
    """
    from scipy import stats

    new, base = np.asarray(new, np.float64), np.asarray(base, np.float64)
    if new.shape != base.shape:
        raise ValueError(f"paired values must align per user: {new.shape} vs {base.shape}")
    d = new - base
    p = float(stats.wilcoxon(new, base).pvalue) if np.any(d != 0) else 1.0
    rel = float(d.mean() / base.mean()) if base.mean() > 0 else None
    return {"delta": float(d.mean()), "rel_gain": rel, "wilcoxon_p": p,
            "users_better": int((d > 0).sum()), "users_worse": int((d < 0).sum()), "n_users": int(len(d))}


def gain_text(rel_gain: float | None, digits: int = 1) -> str:
    """A relative gain as reports print it: ``+9.1%``, or ``n/a (input 0)`` where the input scored 0."""
    return "n/a (input 0)" if rel_gain is None else f"{100 * rel_gain:+.{digits}f}%"
