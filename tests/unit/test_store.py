"""Version store: atomic switch, verification, rollback, retention."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xemb.errors import NoCurrentVersion, VersionIntegrityError, VersionNotFound
from xemb.store import Manifest, VersionStore


def _publish(store: VersionStore, payload: str) -> str:
    version, staging = store.new_staging()
    (staging / "items.parquet").write_text(payload)
    manifest = Manifest(version=version, created_at="2026-01-01T00:00:00+00:00",
                        domains=["a"], dims={"embedding": 4}, counts={"items": 1})
    store.commit(staging, manifest)
    store.set_current(version)
    return version


def test_commit_switch_and_verify(tmp_path: Path) -> None:
    store = VersionStore(tmp_path)
    with pytest.raises(NoCurrentVersion):
        store.current()
    v1 = _publish(store, "one")
    assert store.current() == v1
    m = store.verify(v1)
    assert set(m.files) == {"items.parquet"}
    assert m.files["items.parquet"].bytes == 3
    assert not any(store.staging_dir.iterdir())


def test_tampered_file_is_refused(tmp_path: Path) -> None:
    store = VersionStore(tmp_path)
    v1 = _publish(store, "one")
    v2 = _publish(store, "two")
    (store.path(v1) / "items.parquet").write_text("oops")
    with pytest.raises(VersionIntegrityError, match="checksum mismatch for items.parquet"):
        store.set_current(v1)
    assert store.current() == v2  # the failed switch changed nothing
    (store.path(v1) / "items.parquet").unlink()
    with pytest.raises(VersionIntegrityError, match="missing file items.parquet"):
        store.verify(v1)


def test_rollback_goes_to_the_previous_current(tmp_path: Path) -> None:
    store = VersionStore(tmp_path)
    v1, v2 = _publish(store, "one"), _publish(store, "two")
    assert store.previous() == v1
    store.set_current(store.previous())
    assert store.current() == v1
    assert store.previous() == v2  # and back again


def test_gc_keeps_newest_and_current(tmp_path: Path) -> None:
    store = VersionStore(tmp_path)
    versions = [_publish(store, str(i)) for i in range(4)]
    store.set_current(versions[0])
    removed = store.gc(keep=2)
    assert removed == versions[1:2]
    assert store.list_ids() == [versions[0], *versions[2:]]


def test_unknown_version(tmp_path: Path) -> None:
    with pytest.raises(VersionNotFound, match="'nope'"):
        VersionStore(tmp_path).manifest("nope")


def test_describe_is_json_serialisable(tmp_path: Path) -> None:
    store = VersionStore(tmp_path)
    v = _publish(store, "x")
    rows = json.loads(json.dumps(store.describe()))
    assert rows == [{"version": v, "current": True, "created_at": "2026-01-01T00:00:00+00:00",
                     "counts": {"items": 1}, "dims": {"embedding": 4}}]
