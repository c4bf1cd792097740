"""The "nothing changed" check of `xemb build`: build key, Feast settings, gate-kept versions."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from xemb.settings import XembConfig
from xemb.store import Manifest, VersionStore

pytest.importorskip("torch", reason="the offline job needs the 'offline' extra")


def _version(store: VersionStore, key: str, feast: str | None, current: bool) -> str:
    version, staging = store.new_staging()
    (staging / "items.parquet").write_text(key)
    store.commit(staging, Manifest(version=version, created_at="2026-01-01T00:00:00+00:00",
                                   domains=["a"], dims={"embedding": 4}, counts={"items": 1},
                                   hashes={"build": key}))
    store.mark_published(version, {"build": key, "feast": feast})
    if current:
        store.set_current(version)
    return version


def test_feast_settings_and_gate_kept_versions(tmp_path: Path) -> None:
    """Issue 7.7: sqlite -> redis said "nothing changed" and Redis stayed empty."""
    from xemb.embedders.pipeline import _up_to_date
    from xemb.embedders.publish import feast_fingerprint

    sqlite = XembConfig.model_validate({"build": {"root": str(tmp_path)}})
    redis = XembConfig.model_validate({"build": {"root": str(tmp_path)},
                                       "feast": {"online_store": "redis"}})
    store = VersionStore(tmp_path)
    v1 = _version(store, "k1", feast_fingerprint(sqlite), current=True)
    ctx = SimpleNamespace(store=store, keys={"publish": "k1"}, cfg=sqlite)
    assert _up_to_date(ctx).version == v1
    assert _up_to_date(SimpleNamespace(store=store, keys={"publish": "k1"}, cfg=redis)) is None
    assert _up_to_date(SimpleNamespace(store=store, keys={"publish": "k2"}, cfg=sqlite)) is None
    kept = _version(store, "k2", feast_fingerprint(sqlite), current=False)  # a gate said no
    assert _up_to_date(SimpleNamespace(store=store, keys={"publish": "k2"}, cfg=sqlite)
                       ).version == kept
    store.set_current(kept)
    store.set_current(v1, reason="rollback")  # rolled back from: a rebuild publishes anew
    assert _up_to_date(SimpleNamespace(store=store, keys={"publish": "k2"}, cfg=sqlite)) is None
