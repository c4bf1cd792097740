"""Version store: atomic switch, verification, rollback, retention."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from xemb.errors import NoCurrentVersion, NotPublished, VersionIntegrityError, VersionNotFound
from xemb.store import Manifest, VersionStore


def _publish(store: VersionStore, payload: str) -> str:
    version, staging = store.new_staging()
    (staging / "items.parquet").write_text(payload)
    manifest = Manifest(version=version, created_at="2026-01-01T00:00:00+00:00",
                        domains=["a"], dims={"embedding": 4}, counts={"items": 1})
    store.commit(staging, manifest)
    store.mark_published(version)
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
    assert rows == [{"version": v, "current": True, "state": "current",
                     "created_at": "2026-01-01T00:00:00+00:00",
                     "counts": {"items": 1}, "dims": {"embedding": 4},
                     "valid": None}]  # no quality block in this manifest


def _commit_only(store: VersionStore, payload: str) -> str:
    """What a build killed between commit and publish leaves behind."""
    version, staging = store.new_staging()
    (staging / "items.parquet").write_text(payload)
    store.commit(staging, Manifest(version=version, created_at="2026-01-01T00:00:00+00:00",
                                   domains=["a"], dims={"embedding": 4}, counts={"items": 1}))
    return version


def test_an_unpublished_version_is_not_listed_selectable_or_kept(tmp_path: Path) -> None:
    """Issue 7.2: a killed build's committed version looked normal; rollback took it."""
    store = VersionStore(tmp_path)
    good = _publish(store, "one")
    failed = _commit_only(store, "two")
    assert store.list_ids() == [good] and store.committed_ids() == [good, failed]
    with pytest.raises(NotPublished, match="never fully published"):
        store.set_current(failed)
    assert store.current() == good
    _, stale = store.new_staging()
    (tmp_path / ".CURRENT.dead.tmp").write_text("x")
    assert store.gc(keep=3) == [failed]
    assert store.committed_ids() == [good]
    assert not any(store.staging_dir.iterdir()) and not (stale.exists())
    assert not list(tmp_path.glob(".*.tmp"))


def test_published_but_not_current_is_a_state_of_its_own(tmp_path: Path) -> None:
    store = VersionStore(tmp_path)
    v1 = _publish(store, "one")
    v2 = _commit_only(store, "two")
    store.mark_published(v2, {"gate": "not better"})
    assert store.list_ids() == [v1, v2] and store.current() == v1
    assert store.state(v2) == "published" and store.published_record(v2)["gate"]
    assert not store.is_live(v2)    # Feast serves only what the switch log made current
    store.set_current(v2, reason="rollback")  # selectable by `rollback --to`
    assert store.is_live(v2)


def test_a_refused_version_is_skipped_by_readers_and_rollback(tmp_path: Path) -> None:
    """Issue 7.1: a version the server refused is not one Feast serves."""
    store = VersionStore(tmp_path)
    v1, v2 = _publish(store, "one"), _publish(store, "two")
    store.mark_refused(v2, "composer smoke test failed")
    assert store.current() == v2 and store.serving_target() == v1
    assert store.list_ids() == [v1] and store.state(v2) == "refused"
    with pytest.raises(NotPublished, match="refused by a server: composer smoke"):
        store.set_current(v2)
    assert store.gc(keep=1) == []  # neither the current nor the serving one is deleted


def test_switch_log_records_reason_and_survives_a_lost_line(tmp_path: Path) -> None:
    store = VersionStore(tmp_path)
    v1, v2 = _publish(store, "one"), _publish(store, "two")
    store.set_current(v1, reason="rollback")
    assert [(s.version, s.reason) for s in store.switches()] == [
        (v1, "switch"), (v2, "switch"), (v1, "rollback")]
    (tmp_path / "CURRENT").write_text(v2 + "\n")  # a switch that died before its log line
    assert store.switches()[-1].version == v2 and store.switches()[-1].reason == "recovered"


def test_second_build_fails_at_once_naming_the_holder(tmp_path: Path) -> None:
    """Issue 7.2: two builds on one root both ran; now the second one is refused."""
    from xemb.errors import BuildLocked
    from xemb.lock import RootLock

    with RootLock(tmp_path), pytest.raises(BuildLocked, match=f"pid {os.getpid()} on host "
                                          f"{socket.gethostname()} since "), RootLock(tmp_path):
        pass
    with RootLock(tmp_path):  # released on exit
        pass


def test_stage_cache_prunes_only_this_builds_superseded_outputs(tmp_path: Path) -> None:
    """Issue 7.2: pruning deleted another build's in-progress folders."""
    from xemb.embedders.stages import StageCache

    cache = StageCache(tmp_path)
    for name in ("encode-aaa", "encode-bbb", "adapt-ccc", "other-x",
                 f".adapt-ddd.{os.getpid()}@{socket.gethostname()}.0123abcd.tmp",
                 ".adapt-eee.999999999@nohost.0123abcd.tmp", ".adapt-fff.0123abcd.tmp"):
        (cache.dir / name).mkdir(parents=True)
    assert cache.prune({"encode": "aaa"}) == ["encode-bbb"]
    assert cache.clean_stale() == [".adapt-fff.0123abcd.tmp"]  # live or foreign: kept
    assert sorted(p.name for p in cache.dir.iterdir() if not p.name.startswith(".")) == [
        "adapt-ccc", "encode-aaa", "other-x"]


def test_fingerprints_do_not_depend_on_where_files_live(tmp_path: Path) -> None:
    """Issue 7.3: a clone at another path rebuilt everything."""
    from xemb.embedders.data import _fingerprint
    from xemb.settings import XembConfig, config_hash
    from xemb.settings.offline import DataConfig

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "items.csv").write_text("same")
    fps = [_fingerprint([tmp_path / d / "items.csv"], DataConfig(path=tmp_path / d))
           for d in ("a", "b")]
    assert fps[0] == fps[1]
    hashes = [config_hash(XembConfig.model_validate(
        {"data": {"path": str(tmp_path / d)}, "build": {"root": str(tmp_path / d)}}),
        ("data", "encoder", "build")) for d in ("a", "b")]
    assert hashes[0] == hashes[1]
