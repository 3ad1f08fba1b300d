"""A small generic training loop for DMP-wrapped (or plain) torchrec models.

Model-agnostic: the caller passes ``loss_fn(model, batch) -> scalar loss`` and
an iterable of batches (tensors, KeyedJaggedTensors, or tuples/dicts of them).
The optimiser is the ``CombinedOptimizer`` from ``sharding.make_optimizer``:
embedding rows were already updated in backward by the fused optimiser, so
``optimizer.step()`` moves the dense parameters only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
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


def rank_batches(epoch: Callable[[], Iterable[Any]], rank: int, world_size: int, steps: int) -> Iterator[Any]:
    """Exactly ``steps`` batches for this rank: batches rank, rank + W, ... of a stream of epochs.

    ``epoch()`` returns one pass over the data (a DataLoader; called again for the next
    pass, e.g. the same shuffling loader, whose generator then gives a new order); every
    rank must see the same stream (same seed). Every rank gets the same count however
    many batches an epoch has: DMP's collectives hang when one rank stops stepping
    before the others, which a single pass would cause once steps x ranks exceeds the
    batches per epoch.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside a world of {world_size}")
    i = taken = 0
    while taken < steps:
        seen = 0
        for batch in epoch():
            seen += 1
            if i % world_size == rank:
                yield batch
                taken += 1
                if taken == steps:
                    return
            i += 1
        if seen == 0:
            raise ValueError("an epoch yielded no batches: nothing to train on")
