"""Two-tower model: tower shapes, KJT layout, loss against hand-computed values,
logQ correction, single optimiser owner, and a short real training run."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.data.history import History
from recsys.data.schema import Dataset, DatasetMeta, Split
from recsys.models.two_tower import ItemTower, UserTower
from recsys.models.two_tower_features import ItemFeatures, UserFeatures
from recsys.models.two_tower_loss import sampled_softmax_loss, sampling_log_q
from tt_synthetic import tiny_tables

torch.set_num_threads(1)


@pytest.fixture
def tiny():
    inter, items, users, meta, text = tiny_tables()
    return inter, items, users, meta, ItemFeatures.from_tables(items, meta, text), UserFeatures.from_tables(users, meta)


def test_item_features_kjt_layout(tiny):
    _, _, _, meta, itf, _ = tiny
    kjt = itf.kjt(torch.tensor([0, 11]))
    assert kjt.keys() == ["item", "categories", "year_bucket"]
    # item 0: Action + Comedy (0 % 4 == 0); item 11: Comedy only. Vocab sorted: Action, Comedy, Drama.
    assert kjt["categories"].lengths().tolist() == [2, 1]
    assert kjt["categories"].values().tolist() == [0, 1, 1]
    assert kjt["item"].values().tolist() == [0, 11]
    assert itf.n_year_buckets == 3  # 1990s, 2000s, 2010s
    assert kjt["year_bucket"].values().tolist() == [0, 1]


def test_user_features_kjt_unknown_user_and_empty_history(tiny):
    *_, uf = tiny
    uf.session_len = 2
    h = History.from_lists([3, -1], [[5, 6, 7], []])
    kjt = uf.kjt(torch.tensor([3, -1]), h)
    assert kjt.keys() == ["user", "history", "session", "gender"]
    assert kjt["user"].lengths().tolist() == [1, 0]  # the unknown user has an empty id bag
    assert kjt["history"].values().tolist() == [5, 6, 7]
    assert kjt["session"].values().tolist() == [6, 7]  # last 2
    assert kjt["gender"].lengths().tolist() == [1, 0]
    assert kjt["gender"].values().tolist() == [1]  # user 3 is "M", vocab [F, M]


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_tower_shapes_and_norm(tiny, pooling):
    torch.manual_seed(0)
    _, _, _, meta, itf, uf = tiny
    uf.session_len = 2
    ut = UserTower(meta.n_users, meta.n_items, uf.demographics, dim=8, out_dim=6, hidden=[12],
                   history_pooling=pooling, session_len=2)
    it = ItemTower(meta.n_items, itf.n_categories, itf.n_year_buckets, text_dim=16, dim=8, out_dim=6, hidden=[12])
    h = History.from_lists([0, 1, -1], [[1, 2], [3], []])
    u = ut(uf.kjt(torch.tensor([0, 1, -1]), h))
    items = torch.tensor([0, 5, 29, 7])
    v = it(itf.kjt(items), itf.text(items))
    assert u.shape == (3, 6) and v.shape == (4, 6)
    assert torch.allclose(u.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.isfinite(u).all()  # the cold user (no id, no history) still gets a finite vector
    assert [t for t in ut.ebc.embedding_bag_configs()][0].name == "t_user"


def test_mean_pooling_matches_manual(tiny):
    torch.manual_seed(0)
    _, _, _, meta, _, uf = tiny
    ut = UserTower(meta.n_users, meta.n_items, {}, dim=4, out_dim=4, hidden=[])
    uf.names, uf.cardinalities, uf.demo = [], [], uf.demo[:, :0]
    kjt = uf.kjt(torch.tensor([2]), History.from_lists([2], [[4, 9]]))
    pooled = ut.ebc(kjt).to_dict()
    w = ut.ebc.embedding_bags["t_history"].weight
    assert torch.allclose(pooled["history"][0], (w[4] + w[9]) / 2)


def test_loss_hand_computed():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    loss = sampled_softmax_loss(u, v, torch.tensor([0, 1]), temperature=0.5)
    # row 0 logits: [1/.5, .6/.5] = [2, 1.2]; row 1: [0, .8/.5] = [0, 1.6]
    l0 = -2 + math.log(math.exp(2) + math.exp(1.2))
    l1 = -1.6 + math.log(math.exp(0) + math.exp(1.6))
    assert loss.item() == pytest.approx((l0 + l1) / 2, rel=1e-6)


def test_logq_correction_hand_computed():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    p = torch.tensor([0.75, 0.25])
    lq = sampling_log_q(p, batch_size=2)  # log(2 * p)
    assert torch.allclose(lq, torch.log(torch.tensor([1.5, 0.5])))
    loss = sampled_softmax_loss(u, v, torch.tensor([0, 1]), temperature=0.5, log_q=lq)
    a, b = math.log(1.5), math.log(0.5)
    l0 = -(2 - a) + math.log(math.exp(2 - a) + math.exp(1.2 - b))
    l1 = -(1.6 - b) + math.log(math.exp(0 - a) + math.exp(1.6 - b))
    assert loss.item() == pytest.approx((l0 + l1) / 2, rel=1e-6)
    # The correction lowers the popular item's logit, so the loss differs from the uncorrected one.
    assert loss.item() != pytest.approx(sampled_softmax_loss(u, v, torch.tensor([0, 1]), 0.5).item())


def test_duplicate_items_in_batch_are_not_negatives():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = sampled_softmax_loss(u, v, torch.tensor([7, 7]), temperature=1.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)  # each row has only its own positive left


def test_mixed_negatives_hand_computed():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    neg = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    loss = sampled_softmax_loss(u, v, torch.tensor([0, 1]), 1.0, neg_item=neg, neg_ids=torch.tensor([5, 0]))
    # row 0: [1, 0] + negs [0, masked(item 0 is its positive)]; row 1: [0, 1] + negs [1, 0]
    l0 = -1 + math.log(math.e + 1 + 1)
    l1 = -1 + math.log(1 + math.e + math.e + 1)
    assert loss.item() == pytest.approx((l0 + l1) / 2, rel=1e-6)


def _lit(tiny, **kw):
    from recsys.models.lit_two_tower import LitTwoTower

    _, _, _, meta, itf, uf = tiny
    torch.manual_seed(0)
    return LitTwoTower(meta, item_features=itf, user_features=uf, dim=8, out_dim=8, hidden=[16], **kw)


def _batch(tiny):
    from recsys.data.two_tower_data import TwoTowerBatch

    h = History.from_lists([0, 1, 2, 3], [[1, 2], [11], [], [22, 23, 24]])
    return TwoTowerBatch(torch.tensor([0, 1, 2, 3]), torch.tensor([3, 12, 25, 26]), h)


def test_lightning_optimizer_owns_all_when_not_fused(tiny):
    m = _lit(tiny)
    owners = m.optimizer_owners()
    assert owners["torchrec_fused"] == []
    opt = m.configure_optimizers()
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in m.parameters()}


def test_fused_embedding_optimizer_is_the_only_owner(tiny):
    plain = _lit(tiny)
    fused = _lit(tiny, fused_embedding_optimizer=True, fused_optimizer="sgd", embedding_lr=0.5)
    fused.load_state_dict(plain.state_dict())
    plain.loss(_batch(tiny)).backward()
    grads = {n: p.grad.clone() for n, p in plain.named_parameters() if p.grad is not None}
    before = {n: p.detach().clone() for n, p in fused.named_parameters()}
    opt = fused.configure_optimizers()
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    emb = {id(p) for p in fused.embedding_parameters()}
    assert not (in_opt & emb) and in_opt | emb == {id(p) for p in fused.parameters()}
    fused.loss(_batch(tiny)).backward()  # the fused SGD steps the tables here, in backward
    w = "model.user_tower.ebc.embedding_bags.t_history.weight"
    p = dict(fused.named_parameters())[w]
    assert p.grad is None  # consumed by the in-backward optimiser, so Lightning cannot step it again
    assert torch.allclose(p.detach(), before[w] - 0.5 * grads[w], atol=1e-6)
    opt.step()  # Lightning's Adam: dense layers move, tables do not move a second time
    assert torch.allclose(p.detach(), before[w] - 0.5 * grads[w], atol=1e-6)
    d = "model.user_tower.mlp.0.weight"
    assert not torch.equal(dict(fused.named_parameters())[d].detach(), before[d])


def test_short_fit_loss_falls_and_scores(tiny):
    import pytorch_lightning as pl

    from recsys.data.two_tower_data import TwoTowerDataModule

    inter, items, users, meta, _, _ = tiny
    split = Split("loo", inter, inter.iloc[:0], inter.iloc[:0])
    dm = TwoTowerDataModule(Dataset(inter, items, users, meta), split, batch_size=32, max_history=5)
    m = _lit(tiny, temperature=0.2, lr=1e-2)
    m.set_item_counts(dm.item_counts)
    first = torch.stack([m.loss(b) for b in dm.train_dataloader()]).mean().item()
    pl.Trainer(max_epochs=15, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, limit_val_batches=0).fit(m, dm)
    last = torch.stack([m.loss(b) for b in dm.train_dataloader()]).mean().item()
    assert last < first - 0.3
    h = History.from_interactions(inter, users=[0, 1, 2])
    s = m.score(h)
    assert s.shape == (3, meta.n_items)
    # planted structure: each user's own group (items g*10..g*10+9) scores above the others
    for b, g in enumerate([0, 1, 2]):
        own = s[b, g * 10:(g + 1) * 10].mean()
        assert own > s[b].mean()


def test_cold_item_is_placed_by_its_content(tiny):
    """An item with no interactions reaches the right users through the item tower (categories, year, text)."""
    import pytorch_lightning as pl

    from recsys.data.two_tower_data import TwoTowerDataModule

    inter, items, users, meta, _, _ = tiny
    cold = 29  # a Drama item of the 2010s: group 2's content
    inter = inter[inter["item_idx"] != cold].reset_index(drop=True)
    split = Split("loo", inter, inter.iloc[:0], inter.iloc[:0])
    dm = TwoTowerDataModule(Dataset(inter, items, users, meta), split, batch_size=32, max_history=5)
    m = _lit(tiny, temperature=0.2, lr=1e-2, id_dropout=0.5)  # id dropout: the tower must also use content
    m.set_item_counts(dm.item_counts)
    pl.Trainer(max_epochs=15, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, limit_val_batches=0).fit(m, dm)
    s = m.score(History.from_interactions(inter, users=np.arange(meta.n_users)))[:, cold]  # (U,)
    group = np.arange(meta.n_users) % 3
    assert s[group == 2].mean() > s[group == 0].mean() + 0.1
    assert s[group == 2].mean() > s[group == 1].mean() + 0.1
