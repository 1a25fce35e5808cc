"""Latency percentiles, which h2load does not print (it gives min, max, mean and sd only)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of ascending `sorted_values`: p99 is fraction 0.99.

    Nearest rank returns a value that was actually observed, never an interpolation.
    """
    if not sorted_values:
        raise ValueError("no values")
    if not 0 < fraction <= 1:
        raise ValueError("fraction must be in (0, 1]")
    rank = math.ceil(fraction * len(sorted_values))
    return sorted_values[rank - 1]
