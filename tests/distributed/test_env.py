"""Device resolution and process-group setup, on CPU.

A GPU box is imitated by mocking only what CUDA would answer (``is_available``,
``device_count``, ``set_device``) and the NCCL backend (swapped for a real one-process
gloo group, so the rest of ``init_from_env`` runs for real).
"""

import socket

import pytest
import torch
import torch.distributed as dist

from recsys.distributed import env as env_mod
from recsys.distributed.dlrm_job import param_digest
from recsys.distributed.env import init_from_env, resolve_device


def _fake_gpus(monkeypatch, n: int, calls: list) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", torch.device(d))))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("local_rank", [0, 1, 3])
def test_bare_cuda_means_this_ranks_gpu(monkeypatch, local_rank):
    _fake_gpus(monkeypatch, 4, [])
    assert resolve_device("cuda", local_rank) == torch.device("cuda", local_rank)
    assert resolve_device(None, local_rank) == torch.device("cuda", local_rank)


def test_cpu_stays_cpu_even_with_gpus(monkeypatch):
    _fake_gpus(monkeypatch, 2, [])
    assert resolve_device("cpu", 1) == torch.device("cpu")


def test_more_ranks_than_gpus_is_refused(monkeypatch):
    _fake_gpus(monkeypatch, 1, [])
    with pytest.raises(ValueError, match=r"LOCAL_RANK=1 .* 1 CUDA device.*nproc_per_node=1"):
        resolve_device("cuda", 1)


def test_no_gpu_for_cuda_is_refused(monkeypatch):
    _fake_gpus(monkeypatch, 0, [])
    with pytest.raises(RuntimeError, match="sees no CUDA device"):
        resolve_device("cuda", 0)
    assert resolve_device(None, 0) == torch.device("cpu")


def test_explicit_index_is_refused_with_several_local_processes(monkeypatch):
    _fake_gpus(monkeypatch, 8, [])
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    with pytest.raises(ValueError, match="every rank on one GPU: pass --device cuda"):
        resolve_device("cuda:0", 3)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert resolve_device("cuda:5", 0) == torch.device("cuda", 5)
    with pytest.raises(ValueError, match="sees 8 CUDA"):
        resolve_device("cuda:8", 0)


def test_set_device_comes_before_the_nccl_process_group(monkeypatch):
    """torchrun's variables for local rank 1 of 2 GPUs: cuda:1 is set, then the group is made with nccl."""
    calls: list = []
    _fake_gpus(monkeypatch, 2, calls)
    real_init = dist.init_process_group

    def init_process_group(backend, rank, world_size):
        calls.append(("init_process_group", backend))
        real_init("gloo", rank=0, world_size=1)  # NCCL needs a GPU: a real gloo group stands in

    monkeypatch.setattr(env_mod.dist, "init_process_group", init_process_group)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    try:
        e = init_from_env(device="cuda")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert calls == [("set_device", torch.device("cuda", 1)), ("init_process_group", "nccl")]
    assert (e.device, e.backend, e.local_rank) == (torch.device("cuda", 1), "nccl", 1)


def test_env_rejects_nccl_on_cpu(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(ValueError, match="nccl needs a CUDA device"):
        init_from_env(backend="nccl", device="cpu")


def test_param_digest_reduces_on_the_jobs_device(monkeypatch):
    """A rank without a shard must all-reduce its zero on the job's device (NCCL cannot reduce CPU tensors)."""

    class NoLocalShard:  # a ShardedTensor of which this rank owns nothing
        def local_shards(self):
            return []

    class Model:
        def state_dict(self):
            return {"emb": NoLocalShard(), "dense": torch.ones(3)}

    class Reduced(Exception):
        pass

    seen = []

    def all_reduce(t, *a, **k):
        seen.append((t.device, t.dtype, tuple(t.shape)))
        raise Reduced  # a meta tensor has no values to read back

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    with pytest.raises(Reduced):
        param_digest(Model(), torch.device("meta"))
    assert seen == [(torch.device("meta"), torch.float64, (1,))]


def _trainer_cfg(name: str, *overrides: str):
    """configs/trainer/<name>.yaml as `python -m recsys.train trainer=<name>` composes it."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    import recsys.train  # noqa: F401  (registers ${run_hash:})

    with initialize_config_dir(str(Path(__file__).resolve().parents[2] / "configs"), version_base="1.3"):
        return compose("train", overrides=[f"trainer={name}", *overrides]).trainer


@pytest.mark.parametrize("name", ["gpu", "ddp"])
def test_gpu_trainer_without_a_gpu_names_trainer_cpu(monkeypatch, name):
    from recsys.distributed.env import check_trainer_device

    _fake_gpus(monkeypatch, 0, [])
    with pytest.raises(SystemExit, match=r"trainer.accelerator=gpu but torch .* sees no CUDA device.*use trainer=cpu"):
        check_trainer_device(_trainer_cfg(name))


def test_trainer_devices_beyond_the_gpus_are_refused_and_cpu_with_a_gpu_is_said(monkeypatch, caplog):
    from recsys.distributed.env import check_trainer_device

    _fake_gpus(monkeypatch, 1, [])
    with pytest.raises(SystemExit, match=r"trainer.devices=2 but torch sees 1 CUDA device"):
        check_trainer_device(_trainer_cfg("gpu", "trainer.devices=2"))
    with caplog.at_level("WARNING"):
        check_trainer_device(_trainer_cfg("cpu"))
    assert "trainer=gpu or trainer=auto uses them" in caplog.text


def test_trainer_auto_builds_a_cpu_trainer_here():
    """`trainer=auto`: Lightning's accelerator=auto (a GPU when present), one device; here the CPU."""
    from hydra.utils import instantiate

    from recsys.distributed.env import check_trainer_device

    cfg = _trainer_cfg("auto", "paths.output_dir=/tmp/unused")
    check_trainer_device(cfg)
    assert cfg.accelerator == "auto" and cfg.devices == 1
    trainer = instantiate(cfg, logger=False, enable_checkpointing=False)
    assert trainer.strategy.root_device == torch.device("cpu")
