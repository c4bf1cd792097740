"""The offline source: every published version's rows, stamped with its publish time.

``<root>/feast/offline/<table>/<version>.parquet`` is written once per version (atomically:
a hidden temp file, then os.replace) and never deleted, not even when the version directory
is garbage-collected, so ``get_historical_features`` can always answer "which vectors were
current at time t". Vectors become ``list<float32>`` (Feast's Array(Float32)); values are not
touched, so they stay bit-identical to the published tables.
"""

from __future__ import annotations

import os
import secrets
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from feature_repo import names
from xemb import layout
from xemb.errors import DataValidationError
from xemb.store import Manifest, VersionStore

__all__ = ["export_version", "publish_time", "COLUMNS"]

COLUMNS = {
    names.ITEMS_TABLE: ("item_id", "domain", "full", "transferable", "residual",
                        "intent_ids", "intent_weights", "warm"),
    names.USERS_TABLE: ("user_id", "target_domain", "vector", "top_intent_ids",
                        "top_intent_weights"),
    names.INTENTS_TABLE: ("intent_id", "vector", "label", "support", "domain_support"),
}
_FILES = {names.ITEMS_TABLE: layout.ITEMS, names.USERS_TABLE: layout.USERS,
          names.INTENTS_TABLE: layout.INTENTS}


def publish_time(manifest: Manifest) -> datetime:
    """The event time of a version's rows: ``Manifest.created_at`` as an aware UTC time."""
    ts = datetime.fromisoformat(manifest.created_at.replace("Z", "+00:00"))
    return (ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def _as_list(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type):
        return col.cast(pa.list_(col.type.value_type))
    return col


def _table(path: Path, table: str, manifest: Manifest) -> pa.Table:
    src = pq.read_table(path)
    missing = [c for c in COLUMNS[table] if c not in src.column_names]
    if missing:
        raise DataValidationError(f"missing columns {missing}", file=str(path))
    cols = {c: _as_list(src.column(c)) for c in COLUMNS[table]}
    n = src.num_rows
    ts = pa.array([publish_time(manifest)] * n, type=pa.timestamp("us", tz="UTC"))
    cols[names.VERSION_FIELD] = pa.array([manifest.version] * n, type=pa.string())
    cols[names.EVENT_TS] = ts
    cols[names.CREATED_TS] = ts
    return pa.table(cols)


def _write_atomic(table: pa.Table, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, dest)


def export_version(vstore: VersionStore, version: str) -> dict[str, int]:
    """Write ``version``'s rows into the offline source; returns rows per table."""
    manifest = vstore.manifest(version)
    base = vstore.path(version)
    rows = {}
    for table, file in _FILES.items():
        out = _table(base / file, table, manifest)
        _write_atomic(out, names.offline_dir(vstore.root, table) / f"{version}.parquet")
        rows[table] = out.num_rows
    return rows
