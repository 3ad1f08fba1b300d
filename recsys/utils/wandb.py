"""W&B helpers: offline by default, and a run that is always closed."""

from __future__ import annotations

import os


def default_offline() -> None:
    """Make W&B write runs locally unless the user chose otherwise (`wandb sync` later)."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")


def finish() -> None:
    """Close the active W&B run, if any (called from ``finally`` blocks)."""
    try:
        import wandb
    except ImportError:  # pragma: no cover - wandb is a core dependency
        return
    if wandb.run is not None:
        wandb.finish()
