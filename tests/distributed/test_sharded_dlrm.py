"""2-process gloo tests of the torchrec DMP harness on CPU: plans, loss, one optimiser owner, checkpoint + resume."""

import json
import socket

import pytest
import torch.multiprocessing as mp

import _workers

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(fn, *args) -> None:
    mp.spawn(fn, args=(WORLD, _free_port(), *args), nprocs=WORLD, join=True)


def _read(out, rank=0):
    return json.loads(open(f"{out}.{rank}.json").read())


def test_fused_embedding_and_dense_optimisers_own_disjoint_params(tmp_path):
    out = str(tmp_path / "own")
    _spawn(_workers.check_ownership, out)
    for rank in range(WORLD):
        r = _read(out, rank)
        assert r["n_emb"] > 0 and r["n_dense"] > 0
        assert r["emb_moved_in_backward"] and r["emb_still_in_step"]
        assert r["dense_still_in_backward"]
        assert r["dense_moved_in_step"] == r["n_dense"]
        assert not r["dense_opt_has_embedding"] and r["n_dense_opt_params"] == r["n_dense"]


def test_digest_on_a_rank_without_a_shard(tmp_path):
    out = str(tmp_path / "dig")
    _spawn(_workers.digest_without_shard, out)
    r0, r1 = _read(out, 0), _read(out, 1)
    assert sorted([r0["n_local_shards"], r1["n_local_shards"]]) == [0, 1]  # one rank owns the only table
    assert r0["digest"] == r1["digest"] and all(abs(v) < float("inf") for v in r0["digest"].values())
    assert (r0["device"], r0["backend"]) == ("cpu", "gloo")


@pytest.mark.slow
@pytest.mark.parametrize("sharding", ["table_wise", "row_wise", "column_wise"])
def test_each_plan_trains_on_cpu(tmp_path, sharding):
    out = str(tmp_path / "job")
    _spawn(_workers.run_job, dict(steps=40, rows_per_rank=640, batch_size=64, sharding=[sharding]), out)
    r = _read(out)
    assert (r["device"], r["backend"]) == ("cpu", "gloo")
    assert set(r["plan"].values()) == {sharding}
    losses = r["losses"]
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.05


@pytest.mark.slow
def test_checkpoint_save_load_and_resume_is_exact(tmp_path):
    common = dict(steps=16, rows_per_rank=512, batch_size=32, sharding=["table_wise"], interaction="dcn")
    ckpt = str(tmp_path / "ckpt")
    full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
    # One run saves at step 8 and continues to 16; a fresh run resumes from step 8 to 16.
    _spawn(_workers.run_job, dict(common, save=ckpt, save_at=8), full)
    assert (tmp_path / "ckpt" / ".metadata").exists()
    _spawn(_workers.run_job, dict(common, resume=ckpt), resumed)
    a, b = _read(full), _read(resumed)
    assert b["start"] == 8 and len(b["losses"]) == 8
    assert a["losses"][0] > a["losses"][-1]
    assert b["losses"] == pytest.approx(a["losses"][8:], abs=1e-6)
    assert b["digest"] == pytest.approx(a["digest"], rel=1e-9, abs=1e-9)
