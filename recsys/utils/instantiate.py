"""Build callbacks and loggers from their config groups.

Each group is a mapping name -> node with ``_target_``; an empty or null
group builds nothing, so ``logger=none`` / ``callbacks=none`` switch them off.
"""

from __future__ import annotations

import inspect
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


def instantiate_with_data(node: DictConfig, **available):
    """Instantiate ``node`` passing only the keyword arguments its target accepts.

    Models and data modules take what they need from ``meta``, ``dataset``,
    ``split`` or ``dataset_dir``; passing exactly those keeps constructors
    free of ``**kwargs`` soup.
    """
    from hydra.utils import get_class, get_method

    target = node._target_
    try:
        fn = get_class(target)
        params = inspect.signature(fn.__init__).parameters
    except (ImportError, ValueError):
        fn = get_method(target)
        params = inspect.signature(fn).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in available.items() if accepts_any or k in params}
    # Build a partial from the config, then call it with the Python objects: passing them
    # through instantiate() would convert them to OmegaConf nodes (and instantiate any
    # `_target_` found inside, e.g. the prepare config recorded in DatasetMeta.extra).
    factory = instantiate(node, _partial_=True)
    return factory(**kwargs)
