"""The one on-disk cache of derived files outside the repository: converted LLM weights, LoRA adapters,
text embeddings, the LLM scripts' prepared datasets.

``$RECSYS_CACHE`` moves it (a big disk, a shared volume); default ``~/.cache/recsys``. Everything in
it can be rebuilt from the installed packages; deleting it costs time, never results.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(*parts: str) -> Path:
    """``$RECSYS_CACHE`` (else ``~/.cache/recsys``) joined with ``parts``.

    ``RECSYS_CACHE_DIR`` (the text-embedding cache's former name) is still read when
    ``RECSYS_CACHE`` is unset, so an existing setting keeps its cache."""
    root = os.environ.get("RECSYS_CACHE") or os.environ.get("RECSYS_CACHE_DIR") or Path.home() / ".cache" / "recsys"
    return Path(root).joinpath(*parts)
