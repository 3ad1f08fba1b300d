"""Sharded checkpoints with torch.distributed.checkpoint (DCP).

A DMP model's ``state_dict`` holds each embedding table as a ``ShardedTensor``
(every rank owns its shards); DCP writes each rank's shards once, plus a
metadata file, into a directory. Loading is in place: each rank reads back the
pieces its current plan owns, so resuming works on the same plan (and DCP can
reshard when the plan changes).

Layout: ``<dir>/`` DCP files (``.metadata``, ``__<rank>_0.distcp``) holding
``{"model": ..., "optim": ...}``, and ``extra.json`` (step, config: small
plain values, readable without torch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import json

import torch.distributed as dist


def save(path: str | Path, model, optimizer=None, extra: dict[str, Any] | None = None) -> Path:
    """Write model (+ optimiser) state of every rank into ``path`` (collective: all ranks call it)."""
    import torch.distributed.checkpoint as dcp

    path = Path(path)
    state: dict[str, Any] = {"model": model.state_dict()}
    if optimizer is not None:
        state["optim"] = optimizer.state_dict()
    dcp.save(state, checkpoint_id=str(path))
    if not dist.is_initialized() or dist.get_rank() == 0:
        (path / "extra.json").write_text(json.dumps(extra or {}))
    if dist.is_initialized():
        dist.barrier()
    return path


def load(path: str | Path, model, optimizer=None) -> dict[str, Any]:
    """Load ``path`` into ``model`` (and ``optimizer``) in place; returns the ``extra`` dict.

    The optimiser's state must exist before loading (torchrec's KeyedOptimizer
    ``init_state`` creates it), so DCP has tensors to read into.
    """
    import torch.distributed.checkpoint as dcp

    path = Path(path)
    if not (path / ".metadata").exists():
        raise FileNotFoundError(f"{path}: no DCP checkpoint here (missing .metadata)")
    state: dict[str, Any] = {"model": model.state_dict()}
    if optimizer is not None:
        if hasattr(optimizer, "init_state"):
            optimizer.init_state()
        state["optim"] = optimizer.state_dict()
    dcp.load(state, checkpoint_id=str(path))
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optim"])
    extra = path / "extra.json"
    return json.loads(extra.read_text()) if extra.exists() else {}
