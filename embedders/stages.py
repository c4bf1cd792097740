"""Stage outputs cached under ``<root>/work/<stage>-<key>/``, keyed by everything they depend on.

A stage writes into a temporary folder and renames it into place when complete, so a build
killed at any point resumes from the last finished stage and never reads half an output.
A temporary folder's name carries its writer (``.<stage>-<key>.<pid>@<host>.<hex>.tmp``):
pruning never touches one, and :meth:`StageCache.clean_stale` removes only those whose
writer on this host is gone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["StageCache", "stage_key"]

_TMP = re.compile(r"^\.(?P<entry>[^.]+)\.(?P<pid>\d+)@(?P<host>.+)\.[0-9a-f]{8}\.tmp$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(name: str) -> bool:
    """A temporary folder whose writer is known to be dead (or of an older, unnamed format)."""
    if not (name.startswith(".") and name.endswith(".tmp")):
        return False
    m = _TMP.match(name)
    if m is None:
        return True
    return m["host"] == socket.gethostname() and not _alive(int(m["pid"]))


def stage_key(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _superseded(name: str, own: dict[str, str]) -> bool:
    stage, _, key = name.partition("-")
    return not name.startswith(".") and stage in own and key != own[stage]


class StageCache:
    def __init__(self, root: Path) -> None:
        self.dir = root / "work"

    def path(self, stage: str, key: str) -> Path:
        return self.dir / f"{stage}-{key}"

    def has(self, stage: str, key: str) -> bool:
        return (self.path(stage, key) / "DONE").is_file()

    def run(self, stage: str, key: str, produce: Callable[[Path], None]) -> Path:
        """Run ``produce(tmp_dir)`` unless this (stage, key) is already complete."""
        final = self.path(stage, key)
        if self.has(stage, key):
            return final
        owner = f"{os.getpid()}@{socket.gethostname()}"
        tmp = self.dir / f".{stage}-{key}.{owner}.{secrets.token_hex(4)}.tmp"
        tmp.mkdir(parents=True)
        try:
            produce(tmp)
            (tmp / "DONE").write_text(key)
            shutil.rmtree(final, ignore_errors=True)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    def prune(self, own: dict[str, str]) -> list[str]:
        """Drop finished outputs of the stages in ``own`` (stage -> this build's key) that
        have another key: what this build superseded. Temporary folders (in progress, maybe
        another process's) and anything else are left alone."""
        if not self.dir.is_dir():
            return []
        doomed = [p for p in self.dir.iterdir() if _superseded(p.name, own)]
        for p in doomed:
            shutil.rmtree(p, ignore_errors=True)
        return sorted(p.name for p in doomed)

    def clean_stale(self) -> list[str]:
        """Remove temporary folders of killed runs (their writer is no longer alive)."""
        if not self.dir.is_dir():
            return []
        doomed = [p for p in self.dir.iterdir() if _stale(p.name)]
        for p in doomed:
            shutil.rmtree(p, ignore_errors=True)
        return sorted(p.name for p in doomed)
