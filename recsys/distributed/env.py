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


def resolve_device(device: str | torch.device | None, local_rank: int) -> torch.device:
    """The device this rank trains on.

    ``None`` is ``cuda`` when CUDA is present, else ``cpu``. A bare ``cuda`` (the
    form the launch scripts and READMEs use) becomes ``cuda:<LOCAL_RANK>``, so each
    process on a node gets its own GPU (``torch.cuda.set_device`` refuses a device
    without an index). An explicit ``cuda:<i>`` is kept for a single process per
    node; with several (``LOCAL_WORLD_SIZE`` > 1) every rank would share GPU i, so
    it is refused.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type != "cuda":
        return dev
    n = torch.cuda.device_count()
    if n == 0:
        raise RuntimeError(f"device {device!r} requested but this process sees no CUDA device")
    if dev.index is None:
        if local_rank >= n:
            raise ValueError(f"LOCAL_RANK={local_rank} but this process sees {n} CUDA device(s) "
                             f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}): "
                             f"start at most {n} processes per node (torchrun --nproc_per_node={n})")
        return torch.device("cuda", local_rank)
    if _int_env("LOCAL_WORLD_SIZE", 1) > 1:
        raise ValueError(f"device {device!r} with {_int_env('LOCAL_WORLD_SIZE', 1)} processes on this node would put "
                         "every rank on one GPU: pass --device cuda (each rank takes cuda:LOCAL_RANK)")
    if dev.index >= n:
        raise ValueError(f"device {device!r} but this process sees {n} CUDA device(s)")
    return dev


def init_from_env(backend: str | None = None, device: str | None = None) -> DistEnv:
    """Join (or create) the default process group described by torchrun's variables.

    ``device``: see ``resolve_device`` (None picks ``cuda:<LOCAL_RANK>`` when CUDA is
    present, else CPU); ``backend`` None picks nccl for CUDA and gloo for CPU. The
    CUDA device is set before the process group exists, so NCCL binds each rank to
    its own GPU. A single process without torchrun variables gets a world of one
    (so scripts run unchanged).
    """
    rank, world, local = _int_env("RANK", 0), _int_env("WORLD_SIZE", 1), _int_env("LOCAL_RANK", 0)
    dev = resolve_device(device, local)
    backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
    if backend == "nccl" and dev.type != "cuda":
        raise ValueError("backend nccl needs a CUDA device; use gloo on CPU")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
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


def check_trainer_device(trainer_cfg) -> None:
    """Before Lightning builds the Trainer: refuse a GPU trainer config on a machine without one, in one line.

    ``trainer_cfg``: the ``trainer`` config node (``accelerator``, ``devices``). ``gpu``/``cuda``
    without a CUDA device is a ``SystemExit`` naming the fix (``trainer=cpu`` or ``trainer=auto``);
    ``cpu`` while a GPU is visible trains on the CPU as asked and logs that ``trainer=gpu`` would use it.
    """
    import logging

    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    n = torch.cuda.device_count()
    if accelerator in ("gpu", "cuda") and n == 0:
        raise SystemExit(f"trainer.accelerator={accelerator} but torch {torch.__version__} sees no CUDA device "
                         f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}): use trainer=cpu "
                         "(or trainer=auto, which takes a GPU when there is one)")
    devices = trainer_cfg.get("devices", 1)
    if accelerator in ("gpu", "cuda") and isinstance(devices, int) and devices > n:
        raise SystemExit(f"trainer.devices={devices} but torch sees {n} CUDA device(s): set trainer.devices<={n} "
                         "(trainer=ddp takes them all with devices=auto)")
    if accelerator == "cpu" and n > 0:
        logging.getLogger(__name__).warning("training on the CPU (trainer.accelerator=cpu) although %d CUDA device(s) "
                                            "are visible: trainer=gpu or trainer=auto uses them", n)
