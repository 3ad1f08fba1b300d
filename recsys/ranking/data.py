"""Ranker training data from retrieval candidates, without leakage from validation or test.

The ranker must learn to reorder what the retriever returns, so its training
rows are retriever candidates (hard negatives) labelled by interactions the
retriever did not see. Those labels come from inside the training part only:

    split.train, per user by time:  [ ... inner history ... | last n_holdout ]
                                      retriever + features    labels (positives)

``split.valid`` and ``split.test`` are never read here (a test changes them and
checks the training rows stay identical). Each user contributes the
retriever's top ``n_candidates`` and the ``n_popular`` most popular items
(deduplicated, the source recorded), plus ``n_random`` uniform random
negatives (easy negatives keep the ranker calibrated on items the retriever
would never show).

Rows: user_idx, item_idx, source, retriever_score, retriever_rank, label.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from recsys.data.history import History
from recsys.data.splits import chronological
from recsys.ranking.features import SOURCES


def holdout_last(train: pd.DataFrame, n_holdout: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split each user's training interactions into (inner, last ``n_holdout``).

    Users with at most ``n_holdout`` interactions keep them all in inner (no labels).
    """
    if n_holdout < 1:
        raise ValueError(f"n_holdout must be >= 1, got {n_holdout}")
    df = chronological(train)
    n = df.groupby("user_idx")["item_idx"].transform("size").to_numpy()
    rev = df.groupby("user_idx").cumcount(ascending=False).to_numpy()
    held = (n > n_holdout) & (rev < n_holdout)
    return df[~held].reset_index(drop=True), df[held].reset_index(drop=True)


def retrieve(
    retriever,
    history: History,
    n_candidates: int,
    popularity: np.ndarray | None = None,
    n_popular: int = 0,
    batch_size: int = 256,
    progress: bool = False,
) -> pd.DataFrame:
    """Candidate rows for every user of ``history``: retriever top-n plus the n_popular most popular.

    Items in the user's history are never candidates. ``retriever_rank`` is the
    item's rank (0 = best) in the retriever's full order, also for items that
    entered only through popularity.
    """
    n_items = None
    frames = []
    pop_order = np.argsort(-popularity, kind="stable") if popularity is not None and n_popular > 0 else None
    for s in tqdm(range(0, len(history), batch_size), desc="retrieve", disable=not progress, leave=False):
        e = min(s + batch_size, len(history))
        hb = History(history.users[s:e], history.offsets[s : e + 1] - history.offsets[s], history.items[history.offsets[s] : history.offsets[e]])
        scores = retriever.score(hb).detach().float().cpu()  # (b, N)
        n_items = scores.shape[1]
        rows_b = torch.repeat_interleave(torch.arange(e - s), hb.lengths)
        scores[rows_b, hb.items] = float("-inf")  # consumed items are not candidates
        order = torch.argsort(scores, dim=1, descending=True, stable=True)  # (b, N)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(n_items).expand_as(order).contiguous())
        k = min(n_candidates, n_items)
        for b in range(e - s):
            consumed = set(hb.of(b).tolist())
            top = [i for i in order[b, :k].tolist() if i not in consumed]
            src = dict.fromkeys(top, "retriever")
            if pop_order is not None:
                taken = 0
                for i in pop_order.tolist():
                    if taken == n_popular:
                        break
                    if i in consumed:
                        continue
                    src[i] = "both" if i in src else "popularity"
                    taken += 1
            items = np.fromiter(src, dtype=np.int64, count=len(src))
            frames.append(pd.DataFrame({
                "user_idx": int(hb.users[b]), "item_idx": items, "source": list(src.values()),
                "retriever_score": scores[b, items].numpy().astype(np.float64),
                "retriever_rank": rank[b, items].numpy().astype(np.int64),
            }))
    if not frames:
        return pd.DataFrame({c: [] for c in ("user_idx", "item_idx", "source", "retriever_score", "retriever_rank")})
    out = pd.concat(frames, ignore_index=True)
    # -inf cannot occur for non-consumed items, but a retriever may return NaN: refuse it here.
    if not np.isfinite(out["retriever_score"]).all():
        raise ValueError(f"{type(retriever).__name__}.score returned non-finite scores for candidate items")
    return out


def label(rows: pd.DataFrame, positives: pd.DataFrame) -> pd.DataFrame:
    """Add ``label`` = 1 where (user, item) is in ``positives``."""
    pos = positives[["user_idx", "item_idx"]].drop_duplicates().assign(label=1.0)
    out = rows.merge(pos, on=["user_idx", "item_idx"], how="left")
    out["label"] = out["label"].fillna(0.0).astype(np.float32)
    return out


def random_negatives(history: History, exclude: pd.DataFrame, n_items: int, n_random: int, seed: int) -> pd.DataFrame:
    """``n_random`` uniform items per user, outside its history and ``exclude``, labelled 0."""
    rng = np.random.default_rng(seed)
    excl = exclude.groupby("user_idx")["item_idx"].apply(set).to_dict()
    users, items = [], []
    for b, u in enumerate(history.users.tolist()):
        bad = set(history.of(b).tolist()) | excl.get(u, set())
        picks: set[int] = set()
        while len(picks) < min(n_random, n_items - len(bad)):
            i = int(rng.integers(n_items))
            if i not in bad:
                picks.add(i)
        users += [u] * len(picks)
        items += sorted(picks)
    return pd.DataFrame({"user_idx": np.array(users, dtype=np.int64), "item_idx": np.array(items, dtype=np.int64)})


def training_rows(
    retriever,
    inner: pd.DataFrame,
    heldout: pd.DataFrame,
    n_items: int,
    n_candidates: int = 50,
    n_popular: int = 10,
    n_random: int = 10,
    seed: int = 0,
    progress: bool = True,
) -> tuple[pd.DataFrame, History]:
    """Labelled rows for the users with held-out interactions, and their inner histories.

    ``retriever`` must have been fitted on ``inner`` only.
    """
    users = np.unique(heldout["user_idx"].to_numpy())
    history = History.from_interactions(inner, users)
    popularity = np.bincount(inner["item_idx"].to_numpy(), minlength=n_items).astype(np.float64)
    rows = retrieve(retriever, history, n_candidates, popularity, n_popular, progress=progress)
    neg = random_negatives(history, pd.concat([rows[["user_idx", "item_idx"]], heldout[["user_idx", "item_idx"]]]), n_items, n_random, seed)
    if len(neg):
        # Random negatives get the retriever's score and rank too, so the dense features mean the same for every row.
        ranked = retrieve_scores(retriever, history, neg)
        rows = pd.concat([rows, ranked.assign(source="random")], ignore_index=True)
    rows = label(rows, heldout)
    assert set(rows["source"]) <= set(SOURCES)
    return rows.sort_values(["user_idx", "item_idx"], kind="stable").reset_index(drop=True), history


def retrieve_scores(retriever, history: History, pairs: pd.DataFrame) -> pd.DataFrame:
    """Retriever score and rank (among non-consumed items) of given (user, item) pairs."""
    pos = {u: b for b, u in enumerate(history.users.tolist())}
    scores = retriever.score(history).detach().float().cpu()
    rows_b = torch.repeat_interleave(torch.arange(len(history)), history.lengths)
    scores[rows_b, history.items] = float("-inf")
    b = torch.as_tensor([pos[int(u)] for u in pairs["user_idx"]], dtype=torch.long)
    it = torch.as_tensor(pairs["item_idx"].to_numpy(np.int64, copy=True))
    s = scores[b, it]
    rank = (scores[b] > s[:, None]).sum(1)  # items strictly better = 0-based rank
    return pairs.assign(retriever_score=s.numpy().astype(np.float64), retriever_rank=rank.numpy().astype(np.int64))
