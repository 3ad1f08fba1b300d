"""Constructor-name injection: the one helper that hands data-derived objects to config-built objects.

YAML holds hyper-parameters only; objects that come from the prepared dataset or a
trained run (``meta``, ``dataset``, ``catalog``, a model...) are passed in code, and
each constructor receives exactly the ones it names. Hydra builds a partial first
(``_convert_="all"``: plain lists and dicts, never ``ListConfig``/``DictConfig``, so
whatever the object stores, a checkpoint's hyper-parameters included, loads with
``torch.load(weights_only=True)``), then the partial is called with the objects, so
Hydra never tries to turn a DataFrame or a dataclass into config.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping


def _parameters(target: Callable) -> Mapping[str, inspect.Parameter]:
    return inspect.signature(target).parameters  # a class (its __init__), a function or a partial


def accepted(target: Callable, available: Mapping[str, object], exclude=()) -> dict:
    """The entries of ``available`` that ``target``'s signature names (all of them for ``**kwargs``)."""
    params = _parameters(target)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return {k: v for k, v in available.items() if k not in exclude}
    return {k: v for k, v in available.items() if k in params and k not in exclude}


def call_with_available(factory: Callable, **available):
    """Call ``factory`` (a class, function or ``functools.partial``) with the keyword arguments it accepts."""
    return factory(**accepted(factory, available))


def instantiate_with(node, required_hint: str = "", **available):
    """Instantiate a Hydra ``_target_`` node, passing the ``available`` objects its target names.

    Keys the node sets itself win over ``available``. A required parameter whose
    available object is None raises a ``ValueError`` that names it (``required_hint``
    says how to provide it).
    """
    from hydra.utils import get_object, instantiate
    from omegaconf import DictConfig, OmegaConf

    if not isinstance(node, DictConfig):
        node = OmegaConf.create(node)
    target = node.get("_target_")
    if target is None:
        raise ValueError(f"config node without _target_: {OmegaConf.to_yaml(node)}")
    fn = get_object(target)
    extra = accepted(fn, available, exclude=set(node.keys()))
    params = _parameters(fn)
    for k, v in extra.items():
        if v is None and k in params and params[k].default is inspect.Parameter.empty:
            raise ValueError(f"{target} needs {k!r}, which is not available here" + (f" ({required_hint})" if required_hint else ""))
    return instantiate(node, _partial_=True, _convert_="all")(**extra)
