"""Versioned, immutable builds under one root, with an atomically switched CURRENT pointer.

Layout::

    <root>/versions/<id>/manifest.json   + the files it lists (checksummed)
    <root>/staging/<id>/                 a build in progress (never read by servers)
    <root>/CURRENT                       the id of the serving version (written by os.replace)
    <root>/HISTORY                       one line per switch: "<iso time> <id>"

A version becomes visible under ``versions/`` only by one ``os.rename`` of a complete staging
folder, and current only after its checksums verify, so a crash at any point leaves the
previous version current and readable.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from xemb.errors import NoCurrentVersion, VersionIntegrityError, VersionNotFound

__all__ = ["Manifest", "FileEntry", "VersionStore", "sha256_file", "new_version_id"]

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class FileEntry(BaseModel):
    sha256: str
    bytes: int


class Manifest(BaseModel):
    """What a version holds; serving and Feast trust nothing that is not listed here."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    version: str
    created_at: str
    """UTC ISO-8601 time the build finished writing (event time of its rows in Feast)."""
    domains: list[str]
    dims: dict[str, int]
    """``semantic`` (encoder output), ``embedding`` (transferable/residual/full width)."""
    counts: dict[str, int]
    files: dict[str, FileEntry] = Field(default_factory=dict)
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per ONNX model: file, input/output names, parity max abs diff, source hash."""
    hashes: dict[str, str] = Field(default_factory=dict)
    """``config``, ``dataset``, ``encoder`` fingerprints."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Values the online path needs (composer max_len, top_m, intent count, ...)."""
    metrics: dict[str, Any] = Field(default_factory=dict)
    """Training losses, parity figures, timings."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def new_version_id(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    # millisecond resolution: ids sort in creation order (list_ids, gc and rollback rely on it)
    return f"v{now.strftime('%Y%m%dT%H%M%S')}{now.microsecond // 1000:03d}-{secrets.token_hex(3)}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class VersionStore:
    """All reads and writes of versions go through here (offline job, Feast, serving)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.staging_dir = self.root / "staging"

    # ---- writing -------------------------------------------------------------------
    def new_staging(self, version: str | None = None) -> tuple[str, Path]:
        version = version or new_version_id()
        path = self.staging_dir / version
        path.mkdir(parents=True, exist_ok=False)
        return version, path

    def commit(self, staging: Path, manifest: Manifest) -> Path:
        """Checksum every file in ``staging``, write the manifest, move it under versions/."""
        files = {}
        for f in sorted(p for p in staging.rglob("*") if p.is_file() and p.name != MANIFEST):
            rel = f.relative_to(staging).as_posix()
            files[rel] = FileEntry(sha256=sha256_file(f), bytes=f.stat().st_size)
        manifest = manifest.model_copy(update={"files": files})
        _write_atomic(staging / MANIFEST, manifest.model_dump_json(indent=2))
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        final = self.versions_dir / manifest.version
        os.rename(staging, final)
        _fsync_dir(self.versions_dir)
        return final

    def set_current(self, version: str) -> Manifest:
        """Verify ``version`` in full, then point CURRENT at it in one os.replace."""
        manifest = self.verify(version)
        _write_atomic(self.root / "CURRENT", version + "\n")
        stamp = datetime.now(timezone.utc).isoformat()
        with open(self.root / "HISTORY", "a", encoding="utf-8") as f:
            f.write(f"{stamp} {version}\n")
        return manifest

    def gc(self, keep: int) -> list[str]:
        """Delete the oldest versions beyond ``keep`` (never the current one) and stale staging."""
        current = self.current_or_none()
        ids = self.list_ids()
        doomed = [v for v in ids[:-keep] if v != current] if keep < len(ids) else []
        for v in doomed:
            shutil.rmtree(self.versions_dir / v, ignore_errors=True)
        return doomed

    def clean_staging(self) -> None:
        """Remove leftovers of killed builds; safe because staging is never served."""
        shutil.rmtree(self.staging_dir, ignore_errors=True)

    # ---- reading -------------------------------------------------------------------
    def list_ids(self) -> list[str]:
        """Committed versions, oldest first (ids sort by creation time)."""
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir()
                      if (p / MANIFEST).is_file())

    def current_or_none(self) -> str | None:
        try:
            return (self.root / "CURRENT").read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    def current(self) -> str:
        version = self.current_or_none()
        if version is None:
            raise NoCurrentVersion(f"no published version under {self.root} (run `xemb build`)")
        return version

    def path(self, version: str) -> Path:
        path = self.versions_dir / version
        if not (path / MANIFEST).is_file():
            raise VersionNotFound(f"version {version!r} not found under {self.versions_dir}")
        return path

    def manifest(self, version: str) -> Manifest:
        path = self.path(version) / MANIFEST
        try:
            return Manifest.model_validate_json(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise VersionIntegrityError(f"{path}: unreadable manifest: {exc}") from exc

    def verify(self, version: str) -> Manifest:
        """Check every listed file exists with its size and sha256."""
        manifest = self.manifest(version)
        base = self.path(version)
        for rel, entry in manifest.files.items():
            f = base / rel
            if not f.is_file():
                raise VersionIntegrityError(f"version {version}: missing file {rel}")
            if f.stat().st_size != entry.bytes or sha256_file(f) != entry.sha256:
                raise VersionIntegrityError(f"version {version}: checksum mismatch for {rel}")
        return manifest

    def history(self) -> list[tuple[str, str]]:
        """(time, version) of every switch, oldest first."""
        try:
            lines = (self.root / "HISTORY").read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        return [tuple(line.split(" ", 1)) for line in lines if " " in line]  # type: ignore[misc]

    def previous(self) -> str:
        """The version current before the present one that still exists (for rollback)."""
        current = self.current()
        present = set(self.list_ids())
        seen = [v for _, v in self.history()]
        for v in reversed(seen):
            if v != current and v in present:
                return v
        older = [v for v in self.list_ids() if v < current]
        if not older:
            raise VersionNotFound("no earlier version to roll back to")
        return older[-1]

    def describe(self) -> list[dict[str, Any]]:
        current = self.current_or_none()
        out = []
        for v in self.list_ids():
            m = self.manifest(v)
            out.append({"version": v, "current": v == current, "created_at": m.created_at,
                        "counts": m.counts, "dims": m.dims})
        return out


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))
