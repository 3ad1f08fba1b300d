"""DataModules: batch shapes, negatives, the +1 padding shift, per-epoch seeding."""

import numpy as np
import pytest
import torch

from recsys.data.datamodules import InteractionDataModule, SequenceDataModule, sample_negatives


def _all(loader):
    return list(iter(loader))


def test_interaction_batches_shapes_and_negatives(tiny_dataset):
    ds, split = tiny_dataset
    dm = InteractionDataModule(ds, split, batch_size=4, num_negatives=3, seed=1)
    loader = dm.train_dataloader()
    batches = _all(loader)
    assert [len(b["user"]) for b in batches] == [4, 4, 2] and len(loader) == 3  # 10 train rows
    b = batches[0]
    assert b["neg_items"].shape == (4, 3) and b["neg_items"].dtype == torch.int64
    assert set(b) == {"user", "item", "neg_items", "timestamp", "value"}
    users = torch.cat([b["user"] for b in batches])
    items = torch.cat([b["item"] for b in batches])
    negs = torch.cat([b["neg_items"] for b in batches])
    seen = set(zip(split.train.user_idx, split.train.item_idx))
    assert sorted(zip(users.tolist(), items.tolist())) == sorted(seen)  # every train row exactly once
    assert not any((u, n) in seen for u, row in zip(users.tolist(), negs.tolist()) for n in row)
    assert int(negs.min()) >= 0 and int(negs.max()) < ds.meta.n_items


def test_interaction_epochs_differ_but_are_seeded(tiny_dataset):
    ds, split = tiny_dataset
    a = InteractionDataModule(ds, split, batch_size=16, num_negatives=2, seed=7)
    b = InteractionDataModule(ds, split, batch_size=16, num_negatives=2, seed=7)
    a0, a1 = _all(a.train_dataloader())[0], _all(a.train_dataloader())[0]
    b0 = _all(b.train_dataloader())[0]
    assert torch.equal(a0["neg_items"], b0["neg_items"]) and torch.equal(a0["user"], b0["user"])
    assert not torch.equal(a0["neg_items"], a1["neg_items"])  # a new epoch draws new negatives
    v1, v2 = _all(a.val_dataloader())[0], _all(a.val_dataloader())[0]
    assert torch.equal(v1["neg_items"], v2["neg_items"])  # validation is fixed


def test_interaction_epoch_follows_trainer(tiny_dataset):
    """A resumed run at epoch k draws what an uninterrupted run draws at epoch k."""
    ds, split = tiny_dataset
    fresh = InteractionDataModule(ds, split, batch_size=16, seed=3)
    for _ in range(3):
        expected = _all(fresh.train_dataloader())[0]
    resumed = InteractionDataModule(ds, split, batch_size=16, seed=3)
    loader = resumed.train_dataloader()
    loader.sampler.set_epoch(2)  # what Lightning does at the start of epoch 2 after a resume
    assert torch.equal(_all(loader)[0]["neg_items"], expected["neg_items"])


def test_sample_negatives_avoids_seen_keys():
    rng = np.random.default_rng(0)
    n_items = 5
    seen = np.array(sorted(0 * n_items + i for i in range(4)))  # user 0 saw items 0..3: only 4 is allowed
    neg = sample_negatives(rng, np.zeros(50, dtype=np.int64), n_items, 2, seen, max_rounds=50)
    assert (neg == 4).all()


def test_sequence_train_batches(tiny_dataset):
    ds, split = tiny_dataset
    dm = SequenceDataModule(ds, split, max_len=3, batch_size=8, seed=0)
    loader = dm.train_dataloader()
    (b,) = _all(loader)
    assert len(loader) == 1 and len(b["user"]) == 4
    rows = {int(u): (s.tolist(), t.tolist(), n.tolist()) for u, s, t, n in zip(b["user"], b["seq"], b["target"], b["neg"])}
    # u4 train items (time order) i5 i6 i1 -> +1: 6 7 2 ; u2 has 1 train item: no training row.
    assert set(rows) == {0, 1, 3, 4}
    assert rows[4][0] == [0, 6, 7] and rows[4][1] == [0, 7, 2]
    assert rows[0][0] == [0, 0, 1] and rows[0][1] == [0, 0, 2]  # u0: i0 -> i1
    for seq, target, neg in rows.values():
        assert all((n == 0) == (t == 0) for t, n in zip(target, neg))


def test_sequence_eval_batches_use_history_for(tiny_dataset):
    ds, split = tiny_dataset
    dm = SequenceDataModule(ds, split, max_len=4, batch_size=8)
    (v,) = _all(dm.val_dataloader())
    (t,) = _all(dm.test_dataloader())
    v_rows = {int(u): (s.tolist(), int(y)) for u, s, y in zip(v["user"], v["seq"], v["target"])}
    t_rows = {int(u): (s.tolist(), int(y)) for u, s, y in zip(t["user"], t["seq"], t["target"])}
    assert v_rows[0] == ([0, 0, 1, 2], 3)  # train i0 i1 -> predict valid i2 (ids +1)
    assert t_rows[0] == ([0, 1, 2, 3], 4)  # train + valid -> predict test i3
    assert t_rows[4] == ([6, 7, 2, 5], 3)  # u4: i5 i6 i1 i4 -> test i2
    assert 3 not in v_rows  # u3 has no valid item


def test_datamodule_from_directory(tiny_dir):
    dm = InteractionDataModule(tiny_dir, "loo", batch_size=64)
    assert dm.meta.n_items == 8 and len(dm.split.train) == 10
    with pytest.raises(ValueError, match="num_negatives"):
        InteractionDataModule(tiny_dir, "loo", num_negatives=0)


def test_interaction_datamodule_trains_a_real_model(ml100k, ml100k_split):
    """One Lightning epoch of a tiny BPR-style module over real ML-100K batches."""
    import pytorch_lightning as pl

    class DotBPR(pl.LightningModule):
        def __init__(self, n_users, n_items):
            super().__init__()
            self.u = torch.nn.Embedding(n_users, 8)
            self.i = torch.nn.Embedding(n_items, 8)

        def training_step(self, batch, _):
            u = self.u(batch["user"])  # (B, D)
            pos = (u * self.i(batch["item"])).sum(-1)  # (B,)
            neg = (u[:, None] * self.i(batch["neg_items"])).sum(-1)  # (B, n_neg)
            loss = -torch.nn.functional.logsigmoid(pos[:, None] - neg).mean()
            self.losses.append(float(loss.detach()))
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=0.05)

    dm = InteractionDataModule(ml100k, ml100k_split, batch_size=4096, num_negatives=2)
    model = DotBPR(ml100k.meta.n_users, ml100k.meta.n_items)
    model.losses = []
    pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, limit_val_batches=0).fit(model, datamodule=dm)
    assert len(model.losses) == 2 * int(np.ceil(len(ml100k_split.train) / 4096))
    assert model.losses[-1] < model.losses[0]
