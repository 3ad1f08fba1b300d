"""A small generic training loop for DMP-wrapped (or plain) torchrec models.

Model-agnostic: the caller passes ``loss_fn(model, batch) -> scalar loss`` and
an iterable of batches (tensors, KeyedJaggedTensors, or tuples/dicts of them).
The optimiser is the ``CombinedOptimizer`` from ``sharding.make_optimizer``:
embedding rows were already updated in backward by the fused optimiser, so
``optimizer.step()`` moves the dense parameters only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from tqdm.auto import tqdm


def to_device(batch: Any, device: torch.device) -> Any:
    """Move tensors / KJTs inside tuples, lists and dicts to ``device``."""
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if hasattr(batch, "to"):
        return batch.to(device)
    return batch


def train_steps(
    model: torch.nn.Module,
    optimizer,
    batches: Iterable[Any],
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    device: torch.device | str = "cpu",
    show_progress: bool = True,
    desc: str = "train",
) -> list[float]:
    """Run one optimiser step per batch; returns the per-step losses (this rank's)."""
    device = torch.device(device)
    model.train()
    losses: list[float] = []
    for batch in tqdm(batches, desc=desc, disable=not show_progress):
        loss = loss_fn(model, to_device(batch, device))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {len(losses)}")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
