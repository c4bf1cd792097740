"""Hot swap logic with a fake loader: atomic switch, refusal, rollback, pinning."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from xemb.errors import VersionIntegrityError, VersionNotFound
from xemb.serving.holder import VersionHolder


class FakeStore:
    def __init__(self, current: str) -> None:
        self.cur = current
        self.refused: dict[str, str] = {}

    def current(self) -> str:
        return self.cur

    def serving_target(self) -> str:
        return self.cur

    def mark_refused(self, version: str, why: str) -> None:
        self.refused[version] = why

    def is_refused(self, version: str) -> bool:
        return version in self.refused

    def clear_refusal(self, version: str) -> None:
        self.refused.pop(version, None)


def _holder(broken=(), keep=2):
    loads, switched, refused = [], [], []

    def loader(version):
        loads.append(version)
        if version in broken:
            raise ValueError(f"bad table in {version}")
        return SimpleNamespace(version=version)

    store = FakeStore("v1")
    h = VersionHolder(store, loader, keep=keep, on_switch=lambda v: switched.append(v.version),
                      on_refuse=lambda v, why: refused.append(v))
    h.refresh()
    return h, store, loads, switched, refused


def test_follows_current_and_keeps_old_loaded():
    h, store, loads, switched, _ = _holder()
    store.cur = "v2"
    assert h.refresh() and h.current.version == "v2"
    assert h.get("v1").version == "v1" and h.loaded_ids() == ["v1", "v2"]
    assert not h.refresh()  # unchanged CURRENT: no reload
    assert loads == ["v1", "v2"] and switched == ["v1", "v2"]


def test_rollback_is_a_switch_back_without_reloading():
    h, store, loads, _, _ = _holder()
    store.cur = "v2"
    h.refresh()
    store.cur = "v1"
    assert h.refresh() and h.current.version == "v1"
    assert loads == ["v1", "v2"]


def test_broken_version_is_refused_and_old_keeps_serving():
    h, store, loads, _, refused = _holder(broken={"v2"})
    old = h.current
    store.cur = "v2"
    assert not h.refresh()
    assert h.current is old and refused == ["v2"] and "bad table" in h.refused["v2"]
    assert not h.refresh() and loads.count("v2") == 1  # not retried on every poll
    with pytest.raises(VersionIntegrityError):
        h.switch_to("v2")
    h.refresh(retry_refused=True)
    assert loads.count("v2") == 2


def test_startup_with_a_broken_version_fails_fast():
    with pytest.raises(VersionIntegrityError):
        _holder(broken={"v1"})


def test_pinning_an_unknown_version_is_not_found():
    h, *_ = _holder()
    with pytest.raises(VersionNotFound, match="not served"):
        h.get("v9")


def test_keep_bounds_versions_in_memory():
    h, store, *_ = _holder(keep=2)
    for v in ("v2", "v3"):
        store.cur = v
        h.refresh()
    assert h.loaded_ids() == ["v2", "v3"]
    with pytest.raises(VersionNotFound):
        h.get("v1")


def test_refusal_is_recorded_in_the_root_and_followed():
    """Issue 7.1: a version the server refuses is recorded, so Feast and rollback skip it."""
    h, store, _, _, refused = _holder(broken={"v2"})
    store.cur = "v2"
    assert not h.refresh()
    assert "bad table" in store.refused["v2"] and refused == ["v2"]
    h._loader = lambda v: SimpleNamespace(version=v)  # fixed: SIGHUP retries, clears it
    assert h.refresh(retry_refused=True) and h.current.version == "v2"
    assert not store.is_refused("v2")
