"""Process-group setup from the torchrun environment (gloo on CPU, nccl on GPU).

torchrun (or ``torch.multiprocessing.spawn`` setting the same variables) exports
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
nothing happens at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer (set by torchrun)") from None


def init_from_env(backend: str | None = None, device: str | None = None) -> DistEnv:
    """Join (or create) the default process group described by torchrun's variables.

    ``device`` None picks ``cuda:<LOCAL_RANK>`` when CUDA is present, else CPU;
    ``backend`` None picks nccl for CUDA and gloo for CPU. A single process
    without torchrun variables gets a world of one (so scripts run unchanged).
    """
    rank, world, local = _int_env("RANK", 0), _int_env("WORLD_SIZE", 1), _int_env("LOCAL_RANK", 0)
    if device is None:
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
    if backend == "nccl" and dev.type != "cuda":
        raise ValueError("backend nccl needs a CUDA device; use gloo on CPU")
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistEnv(dist.get_rank(), dist.get_world_size(), local, dev, backend)


def shutdown() -> None:
    """Leave the process group (safe to call when none exists)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
