"""Advisory locks on an xemb root (``fcntl.flock``), released by the kernel when the holder dies.

``<root>/.lock`` is held for a whole build (one build per root at a time); ``<root>/.switch.lock``
for the few milliseconds a switch or a garbage collection needs, so ``xemb rollback`` never
waits for a build. The build lock file names its holder (pid, host, start time), so the
second build's error says who has the root.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from xemb.errors import BuildLocked

__all__ = ["RootLock", "switch_lock", "BUILD_LOCK", "SWITCH_LOCK"]

BUILD_LOCK = ".lock"
SWITCH_LOCK = ".switch.lock"


def _holder_text(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process (holder not recorded yet)"
    return (f"pid {info.get('pid')} on host {info.get('host')} since {info.get('started')}"
            f" ({info.get('what', 'build')})")


class RootLock:
    """``with RootLock(root, wait=False):`` runs the body as the root's only builder."""

    def __init__(self, root: str | Path, *, wait: bool = False, what: str = "build") -> None:
        self.path = Path(root) / BUILD_LOCK
        self.wait, self.what = wait, what
        self._file: IO[str] | None = None

    def __enter__(self) -> RootLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until __exit__
        try:
            fcntl.flock(f, fcntl.LOCK_EX if self.wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise BuildLocked(f"{self.path.parent} is locked by {_holder_text(self.path)}; "
                              f"wait for it to finish (or remove nothing: the lock goes "
                              f"away by itself when that process exits)") from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": self.what,
                            "started": datetime.now(timezone.utc).isoformat()}))
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.seek(0)
            self._file.truncate()
            self._file.close()  # closing the descriptor releases the flock
            self._file = None


@contextmanager
def switch_lock(root: str | Path) -> Iterator[None]:
    """Serialises switches and garbage collection on one root (blocking, held briefly)."""
    path = Path(root) / SWITCH_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
