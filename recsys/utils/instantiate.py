"""Build callbacks and loggers from their config groups.

Each group is a mapping name -> node with ``_target_``; an empty or null
group builds nothing, so ``logger=none`` / ``callbacks=none`` switch them off.
"""

from __future__ import annotations

import logging

from hydra.utils import instantiate
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def instantiate_group(group: DictConfig | None) -> list:
    """Instantiate every ``_target_`` node of a config group, in order."""
    if not group:
        return []
    out = []
    for name, node in group.items():
        if isinstance(node, DictConfig) and "_target_" in node:
            log.info("instantiating %s <%s>", name, node._target_)
            out.append(instantiate(node))
    return out
