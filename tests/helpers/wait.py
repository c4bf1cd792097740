"""Wait on a condition, never on the clock alone."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["wait_for"]

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, *, interval: float = 0.01,
             what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy and return that value.

    Raises AssertionError naming ``what`` (and the last exception the predicate raised, if
    any) once ``timeout`` seconds passed.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # a predicate may fail until the condition holds
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}"
                                 + (f" (last error: {last!r})" if last else ""))
        time.sleep(interval)
