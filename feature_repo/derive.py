"""Publishing a version derived from another (``xemb add-items``) into Feast in seconds.

A derived version holds its base's rows plus new items. With the SQLite backend its slot is
seeded from the base's *ready* slot (a consistent copy through SQLite's backup API, into a
hidden file renamed into place), every row's ``xemb_version`` is restamped, only the new
items are written through Feast, and the slot is verified (row counts per view, bit-exact
spot values; the last item row is always a spot row) and marked ready like any other.
Anything else (Redis, a base slot that is not ready) publishes the whole version.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
import warnings
from contextlib import closing
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from xemb.errors import XembError
from xemb.feature_repo import names
from xemb.feature_repo.publish import (
    FeastPublishError,
    _drop_stale_slots,
    _online,
    _open,
    _write_metrics,
    publish_to_feast,
)

if TYPE_CHECKING:
    from feast import FeatureStore

    from xemb.settings import XembConfig
    from xemb.store import VersionStore

__all__ = ["publish_derived"]


def publish_derived(cfg: XembConfig, store: VersionStore, version: str, base: str,
                    new_ids: np.ndarray) -> dict[str, Any]:
    """Make ``version`` (``base`` + the items ``new_ids``) servable through Feast."""
    if not cfg.feast.enabled:
        return {"enabled": False}
    try:
        out = _derive(cfg, store, version, base, new_ids)
    except XembError:
        raise
    except Exception as exc:
        raise FeastPublishError(f"publishing version {version} into Feast failed: "
                                f"{type(exc).__name__}: {exc}") from exc
    return out if out is not None else publish_to_feast(cfg, store, version)


def _derive(cfg: XembConfig, store: VersionStore, version: str, base: str,
            new_ids: np.ndarray) -> dict[str, Any] | None:
    from xemb.feature_repo.repo import build_definitions
    from xemb.feature_repo.slots import SqliteSlots

    clock = time.perf_counter()
    out: dict[str, Any] = {"derived_from": base}
    fs = _open(store.root, cfg)
    online = _online(fs)
    slots = online.slots(fs.config)
    if not isinstance(slots, SqliteSlots) or slots.ready_info(base) is None:
        return None
    defs = build_definitions()
    with warnings.catch_warnings():  # Feast flags every on-demand view as "experimental"
        warnings.filterwarnings("ignore", "On demand feature view", RuntimeWarning)
        fs.apply(defs.objects())
    if slots.ready_info(version) is None:
        _seed(slots, base, version)
        _write_items(fs, store, version, new_ids, 10 * cfg.feast.write_batch_size)
    online.finalize(fs.config, version, {v.name: v for v in defs.views})
    out["publish_s"] = time.perf_counter() - clock
    out["rows_written"] = len(new_ids)
    out["dropped_slots"] = _drop_stale_slots(fs, store, version)
    _write_metrics(store.root, version, out)
    return out


def _seed(slots: Any, base: str, version: str) -> None:
    """``version``'s slot := a copy of ``base``'s with every row restamped, not ready."""
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto

    dest = slots.path(version)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
    stamp = ValueProto(string_val=version)
    try:
        with closing(sqlite3.connect(f"file:{slots.path(base)}?mode=ro", uri=True)) as src, \
                closing(sqlite3.connect(tmp)) as dst:
            src.backup(dst)
            with dst:
                dst.execute(f"DELETE FROM {slots.META}")
                for (table,) in dst.execute("SELECT name FROM sqlite_master WHERE type = "
                                            "'table'").fetchall():
                    cols = {r[1] for r in dst.execute(f'PRAGMA table_info("{table}")')}
                    if "feature_name" not in cols:
                        continue
                    text = ", value_text = ?" if "value_text" in cols else ""
                    args = [stamp.SerializeToString()] + ([version] if text else [])
                    dst.execute(f'UPDATE "{table}" SET value = ?{text} '
                                f"WHERE feature_name = ?", (*args, names.VERSION_FIELD))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _write_items(fs: FeatureStore, store: VersionStore, version: str, new_ids: np.ndarray,
                 batch_rows: int) -> None:
    """Only the new items' rows, in Feast's schema, through ``write_to_online_store``."""
    from xemb.feature_repo.offline import version_batches

    wanted = pa.array(np.asarray(new_ids, np.int64))
    at = datetime.now(timezone.utc)
    for batch in version_batches(store, version, names.ITEMS_TABLE, at, batch_rows):
        rows = batch.filter(pc.is_in(batch[names.ITEM_KEY], wanted))
        if rows.num_rows:
            fs.write_to_online_store(names.ITEM_VIEW, rows.to_pandas())
