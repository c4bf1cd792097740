"""Versioned, immutable builds under one root, with an atomically switched CURRENT pointer.

Layout::

    <root>/versions/<id>/manifest.json   + the files it lists (checksummed)
    <root>/staging/<id>/                 a build in progress (never read by servers)
    <root>/ledger/<id>.published.json    written once everything about <id> succeeded
    <root>/ledger/<id>.refused.json      a server could not load <id> (never served again)
    <root>/CURRENT                       the id of the serving version (written by os.replace)
    <root>/HISTORY                       the switch log: "<iso time> <id> <reason>" per switch

A version's life: *staged* (``staging/``) -> *committed* (``versions/``, one ``os.rename``)
-> *published* (verified, loadable, its Feast slot ready: the ledger entry) -> *current*
(CURRENT + a switch-log line) or *refused*. Only published, never-refused versions are
listed, selectable by rollback and kept by gc; a committed version without a ledger entry is
a failed build and gc removes it. CURRENT and the switch log are the one switch record that
the gRPC server and Feast both follow (:meth:`VersionStore.serving_target`).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from xemb.errors import (
    NoCurrentVersion,
    NotPublished,
    VersionIntegrityError,
    VersionNotFound,
)
from xemb.lock import switch_lock

__all__ = ["Manifest", "FileEntry", "VersionStore", "Switch", "link_or_copy", "sha256_file",
           "new_version_id"]

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


@dataclass(frozen=True)
class Switch:
    """One line of the switch log: ``version`` became CURRENT at ``time``."""

    time: datetime
    version: str
    reason: str = "switch"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _parse_time(text: str) -> datetime:
    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def _append_line(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def _remove_tree(path: Path) -> None:
    """Move aside first so a half-deleted folder is never mistaken for a version."""
    if not path.exists():
        return
    doomed = path.with_name(f".{path.name}.{secrets.token_hex(4)}.deleting")
    os.rename(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


class VersionStore:
    """All reads and writes of versions go through here (offline job, Feast, serving)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.staging_dir = self.root / "staging"
        self.ledger_dir = self.root / "ledger"

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

    def mark_published(self, version: str, record: dict[str, Any] | None = None) -> None:
        """Ledger entry: ``version`` verified, loadable and in Feast; now listable."""
        self.path(version)
        self.ledger_dir.mkdir(parents=True, exist_ok=True)
        body = {"version": version, "published_at": _now().isoformat(), **(record or {})}
        _write_atomic(self._ledger(version, "published"), json.dumps(body, indent=2))

    def mark_refused(self, version: str, why: str) -> None:
        """A server could not load ``version``: neither it nor Feast serves it any more."""
        self.ledger_dir.mkdir(parents=True, exist_ok=True)
        body = {"version": version, "refused_at": _now().isoformat(), "why": why[:2000]}
        _write_atomic(self._ledger(version, "refused"), json.dumps(body, indent=2))

    def clear_refusal(self, version: str) -> None:
        """A server loaded ``version`` after all (e.g. ``xemb serve`` reload after a fix)."""
        self._ledger(version, "refused").unlink(missing_ok=True)

    def set_current(self, version: str, reason: str = "switch") -> Manifest:
        """Verify ``version`` in full, point CURRENT at it (one os.replace), log the switch.

        Only published, never-refused versions can be made current.
        """
        with switch_lock(self.root):
            self.require_selectable(version)
            manifest = self.verify(version)
            _write_atomic(self.root / "CURRENT", version + "\n")
            stamp = datetime.fromtimestamp((self.root / "CURRENT").stat().st_mtime, timezone.utc)
            _append_line(self.root / "HISTORY", f"{stamp.isoformat()} {version} {reason}")
        return manifest

    def discard(self, version: str) -> None:
        """Remove a version that failed before it was published (never the current one)."""
        if version == self.current_or_none():
            raise NotPublished(f"version {version} is current; it cannot be discarded")
        self._ledger(version, "published").unlink(missing_ok=True)
        _remove_tree(self.versions_dir / version)

    def gc(self, keep: int, building: str | None = None) -> list[str]:
        """Delete failed versions (committed, never published) except ``building``, the oldest
        published ones beyond ``keep`` (never current or serving), and temporary leftovers.
        Call it while holding the build lock: every staging folder is then stale."""
        with switch_lock(self.root):
            protect = {self.current_or_none(), self._target_or_none(), building}
            failed = [v for v in self.committed_ids()
                      if v not in protect and not self.is_published(v)]
            published = self.list_ids()
            old = [v for v in published[:-keep] if v not in protect] \
                if keep < len(published) else []
            for v in failed + old:
                self._ledger(v, "published").unlink(missing_ok=True)
                _remove_tree(self.versions_dir / v)
            self._clean_temporaries(building)
        return sorted(failed + old)

    def clean_staging(self, keep: str | None = None) -> None:
        """Remove leftovers of killed builds; safe under the build lock (staging is never
        served)."""
        if self.staging_dir.is_dir():
            for p in self.staging_dir.iterdir():
                if p.name != keep:
                    shutil.rmtree(p, ignore_errors=True)

    def _clean_temporaries(self, building: str | None) -> None:
        self.clean_staging(keep=building)
        for folder in (self.root, self.versions_dir, self.ledger_dir):
            if folder.is_dir():
                for p in folder.glob(".*.tmp"):
                    p.unlink(missing_ok=True)
                for p in folder.glob(".*.deleting"):
                    shutil.rmtree(p, ignore_errors=True)

    # ---- the ledger ----------------------------------------------------------------
    def _ledger(self, version: str, state: str) -> Path:
        return self.ledger_dir / f"{version}.{state}.json"

    def _legacy(self) -> bool:
        """A root written before the ledger existed: what was once current is published."""
        return not self.ledger_dir.is_dir()

    def is_published(self, version: str) -> bool:
        if not (self.versions_dir / version / MANIFEST).is_file():
            return False
        if self._ledger(version, "published").is_file():
            return True
        return self._legacy() and version in {s.version for s in self.switches()}

    def is_refused(self, version: str) -> bool:
        return self._ledger(version, "refused").is_file()

    def published_record(self, version: str) -> dict[str, Any] | None:
        try:
            return read_json(self._ledger(version, "published"))
        except (FileNotFoundError, ValueError):
            return None

    def refusal(self, version: str) -> str | None:
        try:
            return str(read_json(self._ledger(version, "refused")).get("why", ""))
        except (FileNotFoundError, ValueError):
            return None

    def require_selectable(self, version: str) -> None:
        """Raise unless ``version`` is published and was never refused."""
        self.path(version)
        why = self.refusal(version)
        if why is not None:
            raise NotPublished(f"version {version} was refused by a server: {why}")
        if not self.is_published(version):
            raise NotPublished(f"version {version} was never fully published (a failed or "
                               f"unfinished build); it cannot be selected")

    # ---- reading -------------------------------------------------------------------
    def committed_ids(self) -> list[str]:
        """Every version folder with a manifest, published or not, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir()
                      if not p.name.startswith(".") and (p / MANIFEST).is_file())

    def list_ids(self) -> list[str]:
        """Published, never-refused versions, oldest first (ids sort by creation time)."""
        return [v for v in self.committed_ids()
                if self.is_published(v) and not self.is_refused(v)]

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

    def serving_target(self) -> str:
        """The version every reader serves: CURRENT, or, when a server refused CURRENT, the
        newest version of the switch log before it that is still live."""
        current = self.current()
        if not self.is_refused(current):
            return current
        for switch in reversed(self.switches()):
            if switch.version != current and self.is_live(switch.version):
                return switch.version
        raise NotPublished(f"CURRENT {current} under {self.root} was refused "
                           f"({self.refusal(current)}) and no earlier version is live")

    def _target_or_none(self) -> str | None:
        try:
            return self.serving_target()
        except (NoCurrentVersion, NotPublished):
            return None

    def is_live(self, version: str) -> bool:
        """Published, never refused, still on disk, and current at some time (switch log)."""
        return (self.is_published(version) and not self.is_refused(version)
                and version in {s.version for s in self.switches()})

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

    def switches(self) -> list[Switch]:
        """The switch log, oldest first. A CURRENT written by a switch that died before its
        log line is added here with CURRENT's own modification time."""
        try:
            lines = (self.root / "HISTORY").read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        out = []
        for line in lines:
            parts = line.split()
            if len(parts) >= 2:
                out.append(Switch(_parse_time(parts[0]), parts[1],
                                  parts[2] if len(parts) > 2 else "switch"))
        current = self.current_or_none()
        if current and (not out or out[-1].version != current):
            mtime = (self.root / "CURRENT").stat().st_mtime
            out.append(Switch(datetime.fromtimestamp(mtime, timezone.utc), current, "recovered"))
        return out

    def history(self) -> list[tuple[str, str]]:
        """(time, version) of every switch, oldest first."""
        return [(s.time.isoformat(), s.version) for s in self.switches()]

    def previous(self) -> str:
        """The newest version current before the present one that is still selectable."""
        current = self.current()
        for s in reversed(self.switches()):
            if s.version != current and s.version in self.list_ids():
                return s.version
        older = [v for v in self.list_ids() if v < current]
        if not older:
            raise VersionNotFound("no earlier published version to roll back to")
        return older[-1]

    def state(self, version: str) -> str:
        if self.is_refused(version):
            return "refused"
        if version == self.current_or_none():
            return "current"
        return "published" if self.is_published(version) else "committed"

    def describe(self) -> list[dict[str, Any]]:
        current = self.current_or_none()
        out = []
        for v in self.list_ids():
            m = self.manifest(v)
            out.append({"version": v, "current": v == current, "state": self.state(v),
                        "created_at": m.created_at, "counts": m.counts, "dims": m.dims,
                        "valid": _valid_figures(m)})
        return out


def _valid_figures(m: Manifest) -> dict[str, Any] | None:
    """HR@10 / NDCG@10 per domain on valid (served path) and the quality gate's verdict."""
    q = m.metrics.get("quality")
    if not q:
        return None
    short = {d: {k: v[k] for k in ("HR@10", "NDCG@10") if k in v}
             for d, v in (q.get("candidate") or {}).items()}
    pop = {d: v.get("HR@10") for d, v in
           ((q.get("baselines") or {}).get("popularity") or {}).items()}
    gate = q.get("gate") or {}
    return {"xemb": short, "popularity_HR@10": pop, "gate_passed": gate.get("passed"),
            "gate_reasons": gate.get("reasons", [])}


def link_or_copy(src: Path, dst: Path) -> None:
    """Files that never change (a frozen encoder, tables a derived version keeps) are
    hard-linked between versions; copied where the filesystem cannot link."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))
