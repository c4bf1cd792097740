"""Run a generation script in a child process and SIGKILL it once its text cache holds at
least ``n`` lines (describe and profile append one JSON line per generated text)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers.wait import wait_for

__all__ = ["cached_texts", "kill_after_cached"]

REPO = Path(__file__).resolve().parents[2]


def cached_texts(cache: Path) -> int:
    """Lines in the one ``*.jsonl`` text cache under ``cache`` (0 before it exists)."""
    files = list(cache.glob("*.jsonl"))
    return len(files[0].read_text().splitlines()) if files else 0


def kill_after_cached(script: str, args: list[str], cache: Path, n: int, what: str,
                      interval: float = 0.1) -> int:
    """Start ``python -c script *args``, wait until ``cache`` holds ``n`` texts (or the child
    ended), SIGKILL it and return how many texts the cache holds then."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen([sys.executable, "-c", script, *args], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: cached_texts(cache) >= n or child.poll() is not None, timeout=240,
                 interval=interval, what=what)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    return cached_texts(cache)
