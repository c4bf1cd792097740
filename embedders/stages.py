"""Stage outputs cached under ``<root>/work/<stage>-<key>/``, keyed by everything they depend on.

A stage writes into a temporary folder and renames it into place when complete, so a build
killed at any point resumes from the last finished stage and never reads half an output.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["StageCache", "stage_key"]


def stage_key(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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
        tmp = self.dir / f".{stage}-{key}.{secrets.token_hex(4)}.tmp"
        tmp.mkdir(parents=True)
        try:
            produce(tmp)
            (tmp / "DONE").write_text(key)
            shutil.rmtree(final, ignore_errors=True)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    def prune(self, keep: set[str]) -> None:
        """Drop stage outputs no longer referenced (and leftovers of killed runs)."""
        if not self.dir.is_dir():
            return
        for p in self.dir.iterdir():
            if p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)
