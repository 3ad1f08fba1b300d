"""Two-tower retrieval model: a user tower and an item tower on torchrec embeddings.

Papers:
- Covington, Adams, Sargin. "Deep Neural Networks for YouTube Recommendations",
  RecSys 2016: the user is a pooled bag of watched items plus user features,
  fed through an MLP; items are scored by an inner product with the user vector.
- Yi, Yang, Hong, Cheng, Heldt, Kumthekar, Zhao, Wei, Chi. "Sampling-Bias-Corrected
  Neural Modeling for Large Corpus Item Recommendations", RecSys 2019: two
  towers with L2-normalised outputs, trained with in-batch softmax, a
  temperature and logQ correction (the loss lives in ``two_tower_loss.py``).

Every sparse feature goes through a torchrec ``EmbeddingBagCollection`` (tables
``t_<feature>``) fed a ``KeyedJaggedTensor``, so the same towers shard with
``DistributedModelParallel``. History under attention pooling needs the
per-item vectors, so that one table is an ``EmbeddingCollection`` (unpooled).

KJT layouts (B rows per key; a key's bag may be empty)::

    user KJT   "user"       [u]          1 id (0 ids for a user the model does not know)
               "history"    [i1 .. iL]   last L items, oldest first
               "session"    [i1 .. iS]   last S items (only if session_len > 0)
               "<demo>"     [v]          one id per demographic feature
    item KJT   "item"       [i]
               "categories" [c1 .. cC]   multi-hot genres
               "year_bucket" [y]

The towers are plain ``nn.Module``s: they know nothing of Lightning or Hydra.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def _mlp(d_in: int, hidden: list[int], d_out: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(d_in, h), nn.ReLU(), nn.Dropout(dropout)]
        d_in = h
    layers.append(nn.Linear(d_in, d_out))
    return nn.Sequential(*layers)


def _bag_config(name: str, n: int, dim: int):
    from torchrec import EmbeddingBagConfig
    from torchrec.modules.embedding_configs import PoolingType

    if n <= 0:
        raise ValueError(f"table t_{name}: cardinality must be positive, got {n}")
    # MEAN pooling: a multi-hot bag averages, a one-id bag is that id, an empty bag is 0
    # (which is how a cold user or a user with no history enters the tower).
    return EmbeddingBagConfig(
        name=f"t_{name}", embedding_dim=dim, num_embeddings=n, feature_names=[name], pooling=PoolingType.MEAN
    )


class AttentionPooling(nn.Module):
    """Pools a jagged bag of item vectors with one learned query per user.

    Scaled dot-product attention (query from the user's other features) over
    the bag; an empty bag pools to zeros.
    """

    def __init__(self, d_query: int, dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(d_query, dim)
        self.dim = dim

    def forward(self, query_in: torch.Tensor, values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """query_in (B, Dq), values (nnz, D), lengths (B,) -> (B, D)."""
        b = lengths.numel()
        max_len = int(lengths.max()) if b else 0
        if max_len == 0:
            return values.new_zeros(b, self.dim)
        seg = torch.repeat_interleave(torch.arange(b, device=lengths.device), lengths)  # (nnz,)
        offsets = torch.cumsum(lengths, 0) - lengths
        pos = torch.arange(values.shape[0], device=values.device) - offsets[seg]  # (nnz,)
        dense = values.new_zeros(b, max_len, self.dim)  # (B, L, D)
        dense[seg, pos] = values
        mask = torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]  # (B, L)
        q = self.query(query_in)  # (B, D)
        logits = torch.einsum("bd,bld->bl", q, dense) / math.sqrt(self.dim)  # (B, L)
        logits = logits.masked_fill(~mask, float("-inf"))
        # rows with an empty bag are all -inf: softmax gives NaN, replace by 0 weights
        w = torch.nan_to_num(torch.softmax(logits, dim=1), nan=0.0)  # (B, L)
        return torch.einsum("bl,bld->bd", w, dense)


class UserTower(nn.Module):
    """User id + history bag + optional session bag + demographics -> (B, D_out).

    Args:
        n_users, n_items: table sizes (from ``DatasetMeta``).
        demographics: feature name -> cardinality (``gender``, ``age_bucket``...).
        dim: embedding dimension of every table.
        out_dim: output dimension D_out (must equal the item tower's).
        hidden: hidden sizes of the MLP on top of the concatenated embeddings.
        history_pooling: ``mean`` (Covington et al.) or ``attention``.
        session_len: if > 0, a second bag over the last ``session_len`` items
            (its own table ``t_session``) so the same model serves session requests.
        normalize: L2-normalise the output (Yi et al. 2019).
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        demographics: dict[str, int] | None = None,
        dim: int = 64,
        out_dim: int = 64,
        hidden: list[int] | tuple[int, ...] = (128,),
        history_pooling: str = "mean",
        session_len: int = 0,
        dropout: float = 0.0,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        from torchrec import EmbeddingBagCollection, EmbeddingCollection, EmbeddingConfig

        if history_pooling not in ("mean", "attention"):
            raise ValueError(f"history_pooling must be 'mean' or 'attention', got {history_pooling!r}")
        self.demographics = dict(demographics or {})
        self.history_pooling = history_pooling
        self.session_len = int(session_len)
        self.normalize = normalize
        self.dim = dim
        tables = [_bag_config("user", n_users, dim)]
        if history_pooling == "mean":
            tables.append(_bag_config("history", n_items, dim))
        if self.session_len > 0:
            tables.append(_bag_config("session", n_items, dim))
        tables += [_bag_config(f, n, dim) for f, n in self.demographics.items()]
        self.pooled_keys = [t.feature_names[0] for t in tables]
        self.ebc = EmbeddingBagCollection(tables=tables, device=torch.device("cpu"))
        self.ec = None
        self.attention = None
        if history_pooling == "attention":
            self.ec = EmbeddingCollection(
                tables=[EmbeddingConfig(name="t_history", embedding_dim=dim, num_embeddings=n_items, feature_names=["history"])],
                device=torch.device("cpu"),
            )
            self.attention = AttentionPooling(dim * len(tables), dim)
        n_in = dim * (len(tables) + (1 if history_pooling == "attention" else 0))
        self.mlp = _mlp(n_in, list(hidden), out_dim, dropout)

    @property
    def out_dim(self) -> int:
        return self.mlp[-1].out_features

    @property
    def feature_keys(self) -> list[str]:
        """Keys the input KJT must carry."""
        return self.pooled_keys if self.ec is None else self.pooled_keys + ["history"]

    def forward(self, kjt) -> torch.Tensor:
        """kjt: KeyedJaggedTensor with ``feature_keys`` (B rows each) -> (B, D_out)."""
        pooled = self.ebc(kjt).to_dict()  # key -> (B, D)
        parts = [pooled[k] for k in self.pooled_keys]
        if self.ec is not None:
            hist = self.ec(kjt)["history"]  # JaggedTensor, values (nnz, D)
            ctx = torch.cat(parts, dim=1)  # (B, D * n_pooled) is the attention query's input
            parts.append(self.attention(ctx, hist.values(), hist.lengths()))
        out = self.mlp(torch.cat(parts, dim=1))  # (B, D_out)
        return F.normalize(out, dim=-1) if self.normalize else out


class ItemTower(nn.Module):
    """Item id + categories (multi-hot) + year bucket + text embedding -> (B, D_out).

    The text embedding (all-MiniLM-L6-v2, 384-d, computed once per dataset)
    enters through a linear projection, so a new item with no interactions
    still gets a meaningful vector from its text and categories.

    Args:
        n_items, n_categories, n_year_buckets: table sizes (from ``DatasetMeta``).
        text_dim: width of the precomputed text embedding (0 = no text input).
        id_dropout: probability of zeroing the item-id embedding in training, so the
            tower also learns to place items from content alone (cold items).
    """

    def __init__(
        self,
        n_items: int,
        n_categories: int,
        n_year_buckets: int,
        text_dim: int = 384,
        dim: int = 64,
        out_dim: int = 64,
        hidden: list[int] | tuple[int, ...] = (128,),
        dropout: float = 0.0,
        id_dropout: float = 0.0,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        from torchrec import EmbeddingBagCollection

        self.keys = ["item", "categories", "year_bucket"]
        tables = [_bag_config("item", n_items, dim), _bag_config("categories", n_categories, dim),
                  _bag_config("year_bucket", n_year_buckets, dim)]
        self.ebc = EmbeddingBagCollection(tables=tables, device=torch.device("cpu"))
        self.text_proj = nn.Linear(text_dim, dim) if text_dim > 0 else None
        self.text_dim = text_dim
        self.id_dropout = id_dropout
        self.normalize = normalize
        self.mlp = _mlp(dim * (len(tables) + (1 if text_dim > 0 else 0)), list(hidden), out_dim, dropout)

    @property
    def out_dim(self) -> int:
        return self.mlp[-1].out_features

    @property
    def feature_keys(self) -> list[str]:
        return self.keys

    def forward(self, kjt, text: torch.Tensor | None = None) -> torch.Tensor:
        """kjt: KJT with ``item``, ``categories``, ``year_bucket`` (B rows); text (B, text_dim) -> (B, D_out)."""
        pooled = self.ebc(kjt).to_dict()  # key -> (B, D)
        item = pooled["item"]
        if self.training and self.id_dropout > 0:
            keep = (torch.rand(item.shape[0], 1, device=item.device) >= self.id_dropout).to(item.dtype)
            item = item * keep
        parts = [item, pooled["categories"], pooled["year_bucket"]]
        if self.text_proj is not None:
            if text is None:
                raise ValueError("ItemTower was built with text_dim > 0 but no text embedding was passed")
            parts.append(self.text_proj(text))  # (B, D)
        out = self.mlp(torch.cat(parts, dim=1))  # (B, D_out)
        return F.normalize(out, dim=-1) if self.normalize else out


class TwoTower(nn.Module):
    """The two towers side by side; ``forward`` returns both embeddings.

    Scores are inner products ``user @ item.T``; with normalised towers
    these are cosines in [-1, 1] (the loss divides by a temperature). The user
    tower is the bag-of-items ``UserTower`` or the sequential
    ``recsys.models.seq_tower.SeqUserTower``; the latter reads the item tower's
    vectors of the history items, passed in as ``item_vectors`` (ids (M,) -> (M, D)).
    """

    def __init__(self, user_tower: nn.Module, item_tower: ItemTower) -> None:
        super().__init__()
        if user_tower.out_dim != item_tower.out_dim:
            raise ValueError(f"user tower output {user_tower.out_dim} != item tower output {item_tower.out_dim}")
        self.user_tower = user_tower
        self.item_tower = item_tower

    @property
    def sequential(self) -> bool:
        return bool(getattr(self.user_tower, "reads_item_vectors", False))

    def users(self, user_kjt, item_vectors=None) -> torch.Tensor:
        """-> (B, D) user vectors; ``item_vectors`` is required by the sequential tower only."""
        if not self.sequential:
            return self.user_tower(user_kjt)
        if item_vectors is None:
            raise ValueError("the sequential user tower needs item_vectors (ids -> item-tower vectors)")
        return self.user_tower(user_kjt, item_vectors)

    def forward(self, user_kjt, item_kjt, item_text: torch.Tensor | None = None,
                item_vectors=None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> user (B, D), item (B', D)."""
        return self.users(user_kjt, item_vectors), self.item_tower(item_kjt, item_text)
