"""Stage sizes relative to the request's k.

A request may ask for any k (1..max_k), so a stage's list length is declared
as a function of it rather than a number fixed for k=10:

    an int                      a fixed size (the same for every k)
    {times: 2, min: 20}         max(2k, 20)
    {plus: -1}                  k - 1
    {times: 0.1, min: 1}        floor(0.1 k), at least 1
    {}                          k itself

``resolve = clamp(floor(times * k + plus), min, max)``. In YAML:

    mmr:
      _target_: recsys.pipeline.diversity.MMRDiversifier
      k: {times: 2, min: 20}     # keeps max(2k, 20)
      pool: {times: 10, min: 100}

A stage that has sizes takes ``k`` at call time (``__call__(ctx, cands, k)``);
the pipeline passes the request's k (after ``constraints.max_results``) to
every stage whose ``__call__`` names it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_K = 10  # the list length a stage assumes when called on its own, without a k


@dataclass(frozen=True)
class Size:
    """``clamp(floor(times * k + plus), min, max)``; ``Size()`` is k itself."""

    times: float = 1.0
    plus: int = 0
    min: int = 0
    max: int | None = None

    def __post_init__(self) -> None:
        if self.times < 0 or self.min < 0 or (self.max is not None and self.max < self.min):
            raise ValueError(f"bad size {self}: need times >= 0, min >= 0, max >= min")

    @classmethod
    def fixed(cls, n: int) -> "Size":
        return cls(times=0.0, plus=int(n), min=int(n), max=int(n))

    def __call__(self, k: int) -> int:
        n = math.floor(self.times * k + self.plus + 1e-9)  # 1e-9: 0.1 * 30 is 2.9999999999999996
        n = max(n, self.min)
        return n if self.max is None else min(n, self.max)

    def describe(self) -> str:
        if self.times == 0.0:
            return str(self.plus)
        core = ("k" if self.times == 1 else f"{self.times:g}k") + (f"{self.plus:+d}" if self.plus else "")
        core = f"max({core}, {self.min})" if self.min else core
        return f"min({core}, {self.max})" if self.max is not None else core


SizeSpec = int | Mapping | Size


def as_size(spec: SizeSpec) -> Size:
    """An int (fixed), a mapping of ``times/plus/min/max`` (relative to k) or a ``Size``."""
    if isinstance(spec, Size):
        return spec
    if isinstance(spec, bool) or spec is None:
        raise TypeError(f"a size is an int or a mapping of times/plus/min/max, got {spec!r}")
    if isinstance(spec, int):
        if spec < 0:
            raise ValueError(f"a size must be >= 0, got {spec}")
        return Size.fixed(spec)
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"times", "plus", "min", "max"}
        if unknown:
            raise ValueError(f"unknown size keys {sorted(unknown)}: a size takes times, plus, min, max")
        return Size(**dict(spec))
    raise TypeError(f"a size is an int or a mapping of times/plus/min/max, got {type(spec).__name__}")
