"""Latency percentiles of a callable, shared by the benchmarks (torch-free)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np


def percentiles(fn: Callable[[], Any], n: int) -> tuple[float, float]:
    """(p50, p99) in milliseconds of ``n`` calls, after up to 20 warm-up calls."""
    for _ in range(min(20, n)):
        fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)
