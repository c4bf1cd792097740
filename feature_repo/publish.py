"""Publishing one committed version into Feast: the step ``xemb build`` runs before CURRENT.

Steps: (re)write the generated ``feature_store.yaml``, ``apply`` the definitions, write
exactly the version's rows (read from its own tables) into its own online slot, verify the
slot (counts + spot values) and mark it ready, drop slots of versions that are not published.
Nothing here changes what readers see; the build's ``VersionStore.set_current`` does, in one
os.replace, and only then :func:`after_switch` adds the rows to the offline history, stamped
with the switch time.
"""

from __future__ import annotations

import time
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from xemb.errors import FailedPrecondition, XembError
from xemb.feature_repo import names

if TYPE_CHECKING:
    from feast import FeatureStore

    from xemb.feature_repo.online_store import XembOnlineStore
    from xemb.settings import XembConfig
    from xemb.store import VersionStore

__all__ = ["publish_to_feast", "FeastPublishError", "after_switch", "collect_garbage",
           "slot_ready"]


class FeastPublishError(FailedPrecondition):
    """Publishing a version into Feast failed; CURRENT stays on the previous version."""


def _open(root: Path, cfg: XembConfig) -> FeatureStore:
    from feast import FeatureStore

    from xemb.feature_repo.repo_config import write_yaml

    path = write_yaml(root, cfg.feast)
    return FeatureStore(repo_path=str(path.parent), fs_yaml_file=path)


def _online(fs: FeatureStore) -> XembOnlineStore:
    online = fs._get_provider().online_store  # type: ignore[attr-defined]
    return cast("XembOnlineStore", online)


def _drop_stale_slots(fs: FeatureStore, store: VersionStore, keep: str | None) -> list[str]:
    online = _online(fs)
    present = set(store.list_ids()) | {keep}
    stale = [s for s in online.slots(fs.config).list() if s not in present]
    for slot in stale:
        online.drop_slot(fs.config, slot)
    return stale


def _materialize(fs: FeatureStore, store: VersionStore, version: str, ts: datetime,
                 chunk_rows: int, cfg: XembConfig) -> None:
    """Write the version's rows into its online slot through Feast.

    Reads the version's own tables rather than ``FeatureStore.materialize``'s dask scan of
    the offline history (which only gets the rows once the version served), then records the
    interval in the registry so a later ``feast materialize-incremental`` starts after it.
    With ``build.engine: ray`` Feast writers on a Ray actor pool write the rows (and the rows
    written are counted against the tables).
    """
    from xemb.feature_repo.offline import version_batches

    if cfg.build.engine == "ray":
        from xemb.embedders.engine_ray import write_online_rows

        write_online_rows(store, version, ts, chunk_rows, cfg.build,
                          sqlite=cfg.feast.online_store == "sqlite")
    for table, view in names.VIEW_OF_TABLE.items():
        if cfg.build.engine != "ray":
            for batch in version_batches(store, version, table, ts, chunk_rows):
                fs.write_to_online_store(view, batch.to_pandas())
        fs.registry.apply_materialization(fs.get_feature_view(view), fs.project, ts,
                                          ts + timedelta(microseconds=1))


def _publish(cfg: XembConfig, store: VersionStore, version: str) -> dict[str, Any]:
    from xemb.feature_repo.repo import build_definitions
    from xemb.feature_repo.verify import expected_rows

    clock, out = time.perf_counter(), cast(dict[str, Any], {})
    out["rows"] = dict(zip(names.TABLES, expected_rows(store, version).values(), strict=True))
    fs = _open(store.root, cfg)
    defs = build_definitions()
    with warnings.catch_warnings():  # Feast flags every on-demand view as "experimental"
        warnings.filterwarnings("ignore", "On demand feature view", RuntimeWarning)
        fs.apply(defs.objects())
    out["apply_s"], clock = time.perf_counter() - clock, time.perf_counter()
    online = _online(fs)
    out["already_ready"] = online.slots(fs.config).ready_info(version) is not None
    if not out["already_ready"]:  # a verified slot is immutable: re-publishing is a no-op
        _materialize(fs, store, version, datetime.now(timezone.utc),
                     10 * cfg.feast.write_batch_size, cfg)
    online.finalize(fs.config, version, {v.name: v for v in defs.views})
    out["materialize_s"] = time.perf_counter() - clock
    out["dropped_slots"] = _drop_stale_slots(fs, store, version)
    out["rows_per_s"] = sum(out["rows"].values()) / max(out["materialize_s"], 1e-9)
    _write_metrics(store.root, version, out)
    return out


def _write_metrics(root: Path, version: str, metrics: dict[str, Any]) -> None:
    """The manifest is sealed before Feast runs, so publish metrics live beside it here."""
    import json

    path = names.feast_dir(root) / "metrics" / f"{version}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, default=str), encoding="utf-8")


def publish_to_feast(cfg: XembConfig, store: VersionStore, version: str) -> dict[str, Any]:
    """Make ``version`` servable through Feast; call after commit, before set_current.

    Returns timings and row counts for the manifest metrics. Re-running it after a crash is
    safe: the slot is rewritten with the same values and verified again.
    """
    if not cfg.feast.enabled:
        return {"enabled": False}
    try:
        return {"enabled": True, **_publish(cfg, store, version)}
    except XembError:
        raise
    except Exception as exc:
        raise FeastPublishError(f"publishing version {version} into Feast failed: "
                                f"{type(exc).__name__}: {exc}") from exc


def slot_ready(root: Path, version: str) -> bool:
    """Whether ``version``'s online slot under ``root`` was verified and marked ready."""
    from xemb.feature_repo import get_feature_store

    fs = get_feature_store(root)
    return _online(fs).slots(fs.config).ready_info(version) is not None


def after_switch(store: VersionStore) -> dict[str, Any]:
    """Bring the offline history up to the switch log (call after every switch)."""
    from xemb.feature_repo.offline import sync_history

    return sync_history(store)


def collect_garbage(store: VersionStore, keep: str | None = None) -> dict[str, Any]:
    """Drop online slots of versions that are not published (failed builds, gc'd versions)
    and offline rows that no switch accounts for. Needs the root's feature_store.yaml."""
    from xemb.feature_repo import get_feature_store

    out: dict[str, Any] = {"history": after_switch(store), "dropped_slots": []}
    if names.yaml_path(store.root).is_file():
        out["dropped_slots"] = _drop_stale_slots(get_feature_store(store.root), store, keep)
    return out
