"""Latency percentiles of a callable and table output, shared by the benchmarks (torch-free)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
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


def emit(text: str, results: dict[str, Any], out: Path | None) -> None:
    """Print a benchmark's table; with ``out``, also write its results and the table as JSON."""
    print(text)
    if out:
        out.write_text(json.dumps({**results, "table": text}, indent=2, default=str))
