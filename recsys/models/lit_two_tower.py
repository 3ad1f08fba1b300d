"""LightningModule around the two towers: loss, optimisers, validation, ``score``.

Model: ``recsys.models.two_tower`` (Covington et al. 2016; Yi et al. 2019).
Loss: ``recsys.models.two_tower_loss`` (in-batch sampled softmax, logQ, mixed negatives).

Exactly one owner steps each parameter:
- ``fused_embedding_optimizer=False``: Lightning's optimiser (Adam) owns every parameter.
- ``fused_embedding_optimizer=True``: the embedding tables get torchrec's
  optimiser-in-backward (fused into the backward pass; under
  ``DistributedModelParallel`` it becomes FBGEMM's fused kernel), and they are
  left out of Lightning's optimiser. ``optimizer_owners()`` says who owns what;
  the tests check both the partition and the resulting updates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import pytorch_lightning as pl
import torch

from recsys.data.history import History
from recsys.data.schema import DatasetMeta
from recsys.models.two_tower import ItemTower, TwoTower, UserTower
from recsys.models.two_tower_features import ItemFeatures, UserFeatures
from recsys.models.seq_tower import SeqUserTower, next_item_loss, unique_lookup
from recsys.models.two_tower_loss import sampled_softmax_loss, sampling_log_q

_FUSED = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad, "sgd": torch.optim.SGD}


class LitTwoTower(pl.LightningModule):
    """Args:
        meta: dataset metadata (table sizes). dataset_dir: prepared dataset dir
            (items/users tables, ``item_text_emb.npy``). Alternatively pass built
            ``item_features``/``user_features`` (tests, synthetic data).
        dim/out_dim/hidden/history_pooling/session_len/max_history/dropout/id_dropout: towers.
        temperature: softmax temperature on cosine scores.
        logq: subtract log Q (popularity) from the logits (Yi et al. 2019).
        n_uniform_negatives: M extra uniform negatives per batch (mixed negative sampling).
        lr, weight_decay: Lightning's Adam. embedding_lr: lr of the embedding tables.
        fused_embedding_optimizer: tables stepped by torchrec in backward ("adam"/"adagrad"/"sgd").
        user_tower: ``bag`` (``UserTower``: pooled history + user features) or ``sequential``
            (``seq_tower.SeqUserTower``: a causal Transformer over the item tower's vectors of the
            last ``max_history`` items); ``seq_tower``: its keyword arguments (a plain dict).
        softmax: ``sampled`` (in-batch, logQ, mixed negatives) or ``full`` (over the whole catalogue,
            for small catalogues); the sequential tower's loss is ``seq_tower.next_item_loss``.
    """

    def __init__(
        self,
        meta: DatasetMeta | Mapping,
        dataset_dir: str | None = None,
        item_features: ItemFeatures | None = None,
        user_features: UserFeatures | None = None,
        dim: int = 64,
        out_dim: int = 64,
        hidden: list[int] | tuple[int, ...] = (128,),
        history_pooling: str = "mean",
        session_len: int = 0,
        max_history: int = 50,
        dropout: float = 0.0,
        id_dropout: float = 0.0,
        use_text: bool = True,
        temperature: float = 0.05,
        logq: bool = True,
        n_uniform_negatives: int = 0,
        lr: float = 1e-3,
        embedding_lr: float | None = None,
        weight_decay: float = 0.0,
        fused_embedding_optimizer: bool = False,
        fused_optimizer: str = "adam",
        eval_batch_items: int = 8192,
        user_tower: str = "bag",
        seq_tower: dict | None = None,
        softmax: str = "sampled",
    ) -> None:
        super().__init__()
        if isinstance(meta, Mapping):  # from a checkpoint's hyperparameters
            meta = DatasetMeta(**meta)
        dataset_dir = str(dataset_dir) if dataset_dir is not None else None  # plain str in the checkpoint
        self.save_hyperparameters(ignore=["item_features", "user_features", "meta"])
        # Plain types only, so the checkpoint loads with torch.load(weights_only=True); `extra`
        # (prepare provenance) is not needed to rebuild the model.
        self.hparams["meta"] = {k: v for k, v in dataclasses.asdict(meta).items() if k != "extra"}
        if item_features is None or user_features is None:
            if dataset_dir is None:
                raise ValueError("LitTwoTower needs dataset_dir (or item_features and user_features)")
            item_features = item_features or ItemFeatures.from_dir(dataset_dir, meta, use_text=use_text)
            user_features = user_features or UserFeatures.from_dir(dataset_dir, meta)
        user_features.max_history, user_features.session_len = max_history, session_len
        self.item_features, self.user_features = item_features, user_features
        if user_tower not in ("bag", "sequential") or softmax not in ("sampled", "full"):
            raise ValueError(f"user_tower must be 'bag' or 'sequential' and softmax 'sampled' or 'full'; got {user_tower!r}, {softmax!r}")
        self.softmax = softmax
        self.model = TwoTower(
            UserTower(meta.n_users, meta.n_items, user_features.demographics, dim, out_dim, hidden,
                      history_pooling, session_len, dropout) if user_tower == "bag"
            else SeqUserTower(out_dim, max_history, **(seq_tower or {})),
            ItemTower(meta.n_items, item_features.n_categories, item_features.n_year_buckets,
                      item_features.text_dim, dim, out_dim, hidden, dropout, id_dropout),
        )
        # Item popularity for logQ; set from the datamodule's counts at fit start, else uniform.
        self.register_buffer("item_prob", torch.full((meta.n_items,), 1.0 / meta.n_items))
        self.temperature, self.logq, self.n_uniform = temperature, logq, n_uniform_negatives
        self.lr, self.embedding_lr, self.weight_decay = lr, embedding_lr or lr, weight_decay
        self.fused = fused_embedding_optimizer
        if self.fused:
            from torch.distributed.optim import _apply_optimizer_in_backward

            if fused_optimizer not in _FUSED:
                raise ValueError(f"fused_optimizer must be one of {sorted(_FUSED)}, got {fused_optimizer!r}")
            _apply_optimizer_in_backward(_FUSED[fused_optimizer], self.embedding_parameters(), {"lr": self.embedding_lr})
        self.eval_batch_items = eval_batch_items

    # ---- parameters and optimisers -------------------------------------------------
    def embedding_parameters(self) -> list[torch.nn.Parameter]:
        """The torchrec tables (``t_<feature>``) of both towers."""
        mods = [m for m in (self.model.user_tower.ebc, self.model.item_tower.ebc, self.model.user_tower.ec) if m is not None]
        return [p for m in mods for p in m.parameters()]

    def optimizer_owners(self) -> dict[str, list[str]]:
        """Parameter names grouped by the one optimiser that steps them."""
        emb = {id(p) for p in self.embedding_parameters()}
        owners: dict[str, list[str]] = {"lightning": [], "torchrec_fused": []}
        for name, p in self.named_parameters():
            fused = self.fused and id(p) in emb
            owners["torchrec_fused" if fused else "lightning"].append(name)
        return owners

    def configure_optimizers(self):
        emb = {id(p) for p in self.embedding_parameters()}
        dense = [p for p in self.parameters() if id(p) not in emb]
        groups = [{"params": dense, "lr": self.lr, "weight_decay": self.weight_decay}]
        if not self.fused:  # otherwise torchrec steps the tables in backward; never both
            groups.append({"params": self.embedding_parameters(), "lr": self.embedding_lr, "weight_decay": 0.0})
        return torch.optim.Adam(groups)

    def on_fit_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        counts = getattr(dm, "item_counts", None)
        if counts is not None:
            self.set_item_counts(counts)

    def set_item_counts(self, counts: torch.Tensor) -> None:
        """counts (N,) train interactions per item -> smoothed unigram probabilities."""
        counts = torch.as_tensor(counts, dtype=torch.float32, device=self.item_prob.device)
        self.item_prob.copy_((counts + 1.0) / (counts.sum() + counts.numel()))

    # ---- embeddings -----------------------------------------------------------------
    def user_embeddings(self, users: torch.Tensor, history: History, session: History | None = None) -> torch.Tensor:
        """users (B,) (-1 = unknown), history/session B bags -> (B, D).

        The sequential tower reads the session as the most recent part of the history.
        """
        if self.model.sequential and session is not None:
            history, session = history.extend(session), None
        kjt = self.user_features.kjt(users, history.to(self.device), session)
        return self.model.users(kjt, unique_lookup(self.item_embeddings_of) if self.model.sequential else None)

    def item_embeddings_of(self, items: torch.Tensor) -> torch.Tensor:
        """items (B,) -> (B, D)."""
        items = items.to(self.device)
        return self.model.item_tower(self.item_features.kjt(items), self.item_features.text(items))

    @torch.no_grad()
    def item_embeddings(self) -> torch.Tensor:
        """(N, D) embeddings of the whole catalogue, in eval mode (what the index stores)."""
        was = self.training
        self.eval()
        n = self.item_features.n_items
        out = torch.cat([self.item_embeddings_of(torch.arange(s, min(s + self.eval_batch_items, n), device=self.device))
                         for s in range(0, n, self.eval_batch_items)])
        self.train(was)
        return out

    @torch.no_grad()
    def score(self, history: History) -> torch.Tensor:
        """Evaluator contract: history of B users -> (B, N) inner-product scores (no logQ at serving)."""
        was = self.training
        self.eval()
        s = self.user_embeddings(history.users, history) @ self.item_embeddings().T
        self.train(was)
        return s

    # ---- training -------------------------------------------------------------------
    def loss(self, batch) -> torch.Tensor:
        if self.model.sequential or self.softmax == "full":
            return next_item_loss(self, batch)
        users, items, history = batch
        u = self.user_embeddings(users, history)  # (B, D)
        v = self.item_embeddings_of(items)  # (B, D)
        b = items.numel()
        log_q_all = sampling_log_q(self.item_prob, b, self.n_uniform) if self.logq else None
        neg = neg_ids = neg_lq = None
        if self.n_uniform > 0:
            neg_ids = torch.randint(0, self.item_features.n_items, (self.n_uniform,), device=self.device)
            neg = self.item_embeddings_of(neg_ids)  # (M, D)
            neg_lq = log_q_all[neg_ids] if log_q_all is not None else None
        items = items.to(self.device)
        return sampled_softmax_loss(u, v, items, self.temperature,
                                    log_q_all[items] if log_q_all is not None else None, neg, neg_ids, neg_lq)

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.items.numel())
        return loss

    def validation_step(self, batch, batch_idx):
        # Sampled-softmax loss of the held-out item given the whole train history. Full-ranking
        # val/ndcg@10 comes from the evaluator callback of recsys.train (one owner of that key).
        self.log("val/loss", self.loss(batch), batch_size=batch.items.numel())

    @classmethod
    def from_checkpoint(cls, path: str | Path | dict, trusted: bool = False, **overrides) -> "LitTwoTower":
        """Rebuild the model of a checkpoint (a file, or its already-loaded dict) on CPU;
        dataset_dir from its hyperparameters (or ``overrides``).

        Loads through ``recsys.utils.artifacts.load_torch`` (weights only, the project's
        allow-list), which is all a checkpoint of this class needs; ``trusted=True`` is the
        per-command opt-in for a foreign file (full unpickling, with a warning).
        """
        from recsys.utils.artifacts import load_torch

        ckpt = path if isinstance(path, dict) else load_torch(path, trusted=trusted)
        model = cls(**{**ckpt["hyper_parameters"], **overrides})
        model.load_state_dict(ckpt["state_dict"])
        return model
