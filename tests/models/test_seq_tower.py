"""Sequential user tower of the two-tower model: padding, causality, order, the shared item
tower, window batches against hand-computed rows, both softmaxes, a short fit, a checkpoint."""

import numpy as np
import pytest
import torch

from recsys.data.history import History, training_windows
from recsys.data.schema import Dataset, Split
from recsys.models.seq_tower import SeqUserTower, left_padded
from recsys.models.two_tower_features import ItemFeatures, UserFeatures
from tt_synthetic import tiny_tables

torch.set_num_threads(1)


@pytest.fixture
def tiny():
    inter, items, users, meta, text = tiny_tables()
    return inter, items, users, meta, ItemFeatures.from_tables(items, meta, text), UserFeatures.from_tables(users, meta)


def _lit(tiny, **kw):
    from recsys.models.lit_two_tower import LitTwoTower

    _, _, _, meta, itf, uf = tiny
    torch.manual_seed(0)
    seq = dict(n_blocks=2, n_heads=2, dropout=0.0)
    return LitTwoTower(meta, item_features=itf, user_features=uf, dim=8, out_dim=8, hidden=[16], max_history=5,
                       user_tower="sequential", seq_tower=seq, **kw).eval()


def test_left_padded_keeps_the_last_items_right_aligned():
    values, lengths = torch.tensor([1, 2, 3, 4, 5, 6, 7]), torch.tensor([2, 0, 5])
    assert left_padded(values, lengths, 3).tolist() == [[-1, 1, 2], [-1, -1, -1], [5, 6, 7]]


def test_training_windows_hand_computed():
    # One sequence of 8 items = 7 transitions 0..6; windows of 4 ending every 2 back from 7.
    rows, start, end, first = training_windows(np.array([8, 1, 3]), max_len=4, stride=2)
    assert rows.tolist() == [0, 0, 0, 0, 2]
    assert list(zip(start, end, first)) == [(3, 7, 5), (1, 5, 3), (0, 3, 1), (0, 1, 0), (0, 2, 0)]
    counted = sorted(j for r, e, f in zip(rows, end, first) for j in range(f, e) if r == 0)
    assert counted == list(range(7))  # every transition of sequence 0 exactly once
    assert [a.tolist() for a in training_windows(np.array([8]), 4, 0)] == [[0], [3], [7], [3]]  # last window only


def test_causal_a_later_item_does_not_change_earlier_outputs(tiny):
    m = _lit(tiny)
    uf = m.user_features
    a = History.from_lists([0], [[1, 2, 3, 4]])
    b = History.from_lists([0], [[1, 2, 3, 9]])  # differs at the last position only
    vec = m.item_embeddings_of
    with torch.no_grad():
        sa = m.model.user_tower.sequence(uf.kjt(a.users, a), vec)  # (1, 5, 8): padding, then 1 2 3 4
        sb = m.model.user_tower.sequence(uf.kjt(b.users, b), vec)
    assert sa.shape == (1, 5, 8)
    assert torch.allclose(sa[:, :4], sb[:, :4], atol=1e-6)
    assert not torch.allclose(sa[:, 4], sb[:, 4])
    with torch.no_grad():  # the user vector is the last position's output
        assert torch.allclose(m.user_embeddings(a.users, a), sa[:, -1], atol=1e-6)


def test_order_matters_and_the_item_tower_is_shared(tiny):
    m = _lit(tiny)
    fwd, rev = History.from_lists([0], [[1, 2, 3]]), History.from_lists([0], [[3, 2, 1]])
    with torch.no_grad():
        u_fwd, u_rev = m.user_embeddings(fwd.users, fwd), m.user_embeddings(rev.users, rev)
        assert not torch.allclose(u_fwd, u_rev)  # a bag (mean) tower could not tell these apart
        assert torch.allclose(u_fwd.norm(dim=-1), torch.ones(1), atol=1e-5)
        # The history enters through the item tower's torchrec table: moving item 3's id row moves the user.
        table = m.model.item_tower.ebc.embedding_bags["t_item"].weight
        table[3] += 1.0
        assert not torch.allclose(m.user_embeddings(fwd.users, fwd), u_fwd)
    names = [n for n, _ in m.named_parameters()]
    assert not any(n.startswith("model.user_tower.") and "t_item" in n for n in names)  # one copy of the table


def test_window_batches_hand_computed(tiny):
    from recsys.data.two_tower_data import TwoTowerDataModule

    inter, items, users, meta, _, _ = tiny
    dm = TwoTowerDataModule(Dataset(inter, items, users, meta), Split("loo", inter, inter.iloc[:0], inter.iloc[:0]),
                            batch_size=4, max_history=5, window_stride=2)
    user0 = inter[inter.user_idx == 0].item_idx.tolist()  # 8 items in time order (tt_synthetic)
    w = [r for r in range(len(dm.windows[0])) if dm.windows[0][r] == 0]
    b = dm._window_collate(w)
    # Windows of user 0 (7 transitions, 5 per window, ends every 2): [2, 7) counting transitions 5, 6;
    # [0, 5) counting 3, 4; [0, 3) counting 1, 2; [0, 1) counting 0. Transition j predicts user0[j + 1].
    assert len(w) == 4
    assert b.history.of(0).tolist() == user0[2:7] and b.items[0].tolist() == [-1, -1, -1, user0[6], user0[7]]
    assert b.history.of(1).tolist() == user0[0:5] and b.items[1].tolist() == [-1, -1, -1, user0[4], user0[5]]
    assert b.history.of(2).tolist() == user0[0:3] and b.items[2].tolist() == [-1, -1, -1, user0[2], user0[3]]
    assert b.history.of(3).tolist() == user0[0:1] and b.items[3].tolist() == [-1, -1, -1, -1, user0[1]]
    assert sorted(t for t in b.items.flatten().tolist() if t >= 0) == sorted(user0[1:])


@pytest.mark.parametrize("softmax", ["full", "sampled"])
def test_window_loss_at_the_last_column_is_the_one_row_loss(tiny, softmax):
    """Alignment: a window row whose only target is its last column is the per-interaction example."""
    from recsys.data.two_tower_data import TwoTowerBatch

    m = _lit(tiny, softmax=softmax, logq=softmax == "sampled")
    h = History.from_lists([0, 1], [[1, 2, 3], [11, 12, 13, 14, 15]])
    one = TwoTowerBatch(torch.tensor([0, 1]), torch.tensor([4, 16]), h)
    win = TwoTowerBatch(torch.tensor([0, 1]), torch.tensor([[-1, -1, -1, -1, 4], [-1, -1, -1, -1, 16]]), h)
    with torch.no_grad():
        assert m.loss(win).item() == pytest.approx(m.loss(one).item(), rel=1e-5)


def test_full_softmax_loss_hand_computed(tiny):
    from recsys.data.two_tower_data import TwoTowerBatch

    m = _lit(tiny, softmax="full", temperature=0.5)
    h = History.from_lists([0, 1], [[1, 2], [20]])
    batch = TwoTowerBatch(torch.tensor([0, 1]), torch.tensor([3, 21]), h)
    with torch.no_grad():
        u = m.user_embeddings(h.users, h)  # (2, 8)
        logits = u @ m.item_embeddings().T / 0.5  # (2, N)
        manual = (torch.logsumexp(logits, 1) - logits[[0, 1], [3, 21]]).mean()
        assert m.loss(batch).item() == pytest.approx(manual.item(), rel=1e-5)


@pytest.mark.parametrize("softmax", ["full", "sampled"])
def test_short_fit_learns_the_planted_groups_and_checkpoint_loads(tiny, tmp_path, softmax):
    import pytorch_lightning as pl

    from recsys.data.two_tower_data import TwoTowerDataModule
    from recsys.models.lit_two_tower import LitTwoTower

    inter, items, users, meta, _, _ = tiny
    split = Split("loo", inter, inter.iloc[:0], inter.iloc[:0])
    dm = TwoTowerDataModule(Dataset(inter, items, users, meta), split, batch_size=8, max_history=5, window_stride=2)
    m = _lit(tiny, softmax=softmax, temperature=0.2, lr=1e-2).train()
    m.set_item_counts(dm.item_counts)
    first = torch.stack([m.loss(b) for b in dm.train_dataloader()]).mean().item()
    trainer = pl.Trainer(max_epochs=15, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0)
    trainer.fit(m, dm)
    last = torch.stack([m.loss(b) for b in dm.train_dataloader()]).mean().item()
    assert last < first - 0.3
    s = m.score(History.from_interactions(inter, users=[0, 1, 2]))
    for b in range(3):  # user b is in group b: its own 10 items score above the catalogue mean
        assert s[b, b * 10:(b + 1) * 10].mean() > s[b].mean()
    trainer.save_checkpoint(tmp_path / "seq.ckpt")
    again = LitTwoTower.from_checkpoint(tmp_path / "seq.ckpt", item_features=m.item_features, user_features=m.user_features)
    assert again.hparams["user_tower"] == "sequential" and again.hparams["softmax"] == softmax
    h = History.from_interactions(inter, users=[0, 1, 2])
    assert torch.allclose(again.score(h), s, atol=1e-5)


def test_serving_source_and_index_use_the_sequential_tower_unchanged(tiny):
    from recsys.core.candidates import UserContext
    from recsys.retrieval.index import ItemIndex
    from recsys.retrieval.sources import TwoTowerSource

    m = _lit(tiny)
    src = TwoTowerSource(m, ItemIndex("flat", device="cpu").build(m.item_embeddings().numpy()))
    out = src(UserContext(user_idx=0, history=np.array([1, 2, 3])), 5)
    assert len(out) == 5 and not set(out.items.tolist()) & {1, 2, 3}
    with torch.no_grad():
        exact = m.score(History.from_lists([0], [[1, 2, 3]]))[0]
    exact[[1, 2, 3]] = float("-inf")
    assert out.items.tolist() == torch.topk(exact, 5).indices.tolist()  # flat index = exact inner product
    cold = src(UserContext(user_idx=None), 3)  # no history: a defined vector, no NaN
    assert len(cold) == 3
    # A request's session items are the most recent part of the sequence.
    with_session = src.user_vector(UserContext(user_idx=0, history=np.array([1, 2]), session=np.array([3])))
    with torch.no_grad():
        assert np.allclose(with_session, m.user_embeddings(torch.tensor([0]), History.from_lists([0], [[1, 2, 3]])).numpy(), atol=1e-6)


def test_bad_choices_fail_clearly(tiny):
    from recsys.data.two_tower_data import TwoTowerBatch

    with pytest.raises(ValueError, match="user_tower"):
        _lit(tiny, softmax="softer")
    from recsys.models.lit_two_tower import LitTwoTower

    _, _, _, meta, itf, uf = tiny
    bag = LitTwoTower(meta, item_features=itf, user_features=uf, dim=8, out_dim=8, hidden=[16], softmax="full")
    h = History.from_lists([0], [[1, 2]])
    with pytest.raises(ValueError, match="sequential"):
        bag.loss(TwoTowerBatch(torch.tensor([0]), torch.tensor([[-1, 3]]), h))
    assert isinstance(_lit(tiny).model.user_tower, SeqUserTower)


def test_train_then_index_entry_points_with_the_sequential_tower(tmp_path, ml100k_data_root):
    """The user's journey: the composed experiment trains (debug=fast), recsys.index indexes the run by
    its stable name, and the pipeline's loader + source serve it."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(root))
    logs = tmp_path / "outputs"
    res = subprocess.run([sys.executable, "-m", "recsys.train", "experiment=ml100k/two_tower_seq", "debug=fast",
                          "eval.progress=false", f"paths.log_dir={logs}", f"paths.data_dir={ml100k_data_root}"],
                         env=env, cwd=root, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    run = logs / "debug" / "ml100k-two_tower_seq-seed42"
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["test/ndcg@10"] <= 1.0 and "test/recall@200" in metrics
    res = subprocess.run([sys.executable, "-m", "recsys.index", f"run={run}", "index=flat", "n_queries=100", "k=20",
                          f"paths.log_dir={logs}"], env=env, cwd=root, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]  # weights_only load: no trust flag
    from recsys.data.schema import DatasetMeta

    dataset_dir = Path(ml100k_data_root) / "ml100k"
    n_items = DatasetMeta.load(dataset_dir / "meta.json").n_items
    assert np.load(run.resolve() / "index" / "flat" / "item_embeddings.npy").shape == (n_items, 64)
    # The serving source built from those artifacts (configs/pipeline/two_tower.yaml's factories).
    from recsys.core.candidates import UserContext
    from recsys.pipeline.recommender import load_two_tower, two_tower_source

    src = two_tower_source(load_two_tower(str(run), "flat", dataset_dir=dataset_dir))
    out = src(UserContext(user_idx=0, history=np.array([0, 1, 2])), 10)
    assert len(out) == 10 and not set(out.items.tolist()) & {0, 1, 2}
