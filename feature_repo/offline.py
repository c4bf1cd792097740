"""The offline source: what was served when, one file per switch of the switch log.

``<root>/feast/offline/<table>/<switch time>-<version>.parquet`` holds the version's rows
stamped with the time it became CURRENT (``VersionStore.switches``). The files are written
*after* the switch (atomically: a hidden temp file, then os.replace) and derived from the
switch log alone (:func:`sync_history`), so a version that never served has no rows, a
rollback adds the rolled-back-to version's rows again at the rollback time, and a version a
server refused is left out (its interval belongs to the version that kept serving). Files
stay after the version directory is garbage-collected, so ``get_historical_features``
always answers "which vectors were served at time t". Vectors become ``list<float32>``
(Feast's Array(Float32)); values are not touched, so they stay bit-identical to the
published tables.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from xemb import layout
from xemb.errors import DataValidationError
from xemb.feature_repo import names
from xemb.settings.offline import DESCRIPTION_COLUMNS
from xemb.store import Manifest, Switch, VersionStore

__all__ = ["export_version", "sync_history", "history_rows", "version_batches",
           "publish_time", "table_path", "COLUMNS"]

COLUMNS = {
    names.ITEMS_TABLE: ("item_id", "domain", "full", "transferable", "residual",
                        "intent_ids", "intent_weights", "warm", *DESCRIPTION_COLUMNS),
    names.USERS_TABLE: ("user_id", "target_domain", "vector", "top_intent_ids",
                        "top_intent_weights"),
    names.INTENTS_TABLE: ("intent_id", "vector", "label", "support", "domain_support",
                          "domain_labels", "top_terms"),
    names.PROFILES_TABLE: ("user_id", "profile", "domain_summaries", "vector"),
}
# A version built without an optional table has no rows of it: its offline file is empty
# (this schema), so the history of every view has one file per switch.
_EMPTY = {names.PROFILES_TABLE: pa.schema([("user_id", pa.string()), ("profile", pa.string()),
                                           ("domain_summaries", pa.string()),
                                           ("vector", pa.list_(pa.float32()))])}
# Columns newer than some published versions: an older table gets these values.
# Description columns exist only where describe ran: null elsewhere.
_DEFAULTS: dict[str, tuple[pa.DataType, object]] = {
    "domain_labels": (pa.string(), "{}"), "top_terms": (pa.list_(pa.string()), []),
    **{c: (pa.string(), None) for c in DESCRIPTION_COLUMNS}}
_FILES = {names.ITEMS_TABLE: layout.ITEMS, names.USERS_TABLE: layout.USERS,
          names.INTENTS_TABLE: layout.INTENTS, names.PROFILES_TABLE: layout.USER_PROFILES}


def table_path(vstore: VersionStore, version: str, table: str) -> Path | None:
    """``version``'s file of ``table``; None where an optional table was not built."""
    path = vstore.path(version) / _FILES[table]
    return None if table in names.OPTIONAL_TABLES and not path.is_file() else path


def _read(vstore: VersionStore, version: str, table: str) -> tuple[pa.Table, Path]:
    path = vstore.path(version) / _FILES[table]
    if table_path(vstore, version, table) is None:
        return _EMPTY[table].empty_table(), path
    return pq.read_table(path), path


def publish_time(manifest: Manifest) -> datetime:
    """The event time of a version's rows: ``Manifest.created_at`` as an aware UTC time."""
    ts = datetime.fromisoformat(manifest.created_at.replace("Z", "+00:00"))
    return (ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def _as_list(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type):
        return col.cast(pa.list_(col.type.value_type))
    return col


def _table(src: pa.Table, path: Path, table: str, version: str, at: datetime) -> pa.Table:
    missing = [c for c in COLUMNS[table] if c not in src.column_names and c not in _DEFAULTS]
    if missing:
        raise DataValidationError(f"missing columns {missing}", file=str(path))
    n = src.num_rows
    cols = {c: _as_list(src.column(c)) if c in src.column_names
            else pa.array([_DEFAULTS[c][1]] * n, _DEFAULTS[c][0]) for c in COLUMNS[table]}
    ts = pa.array([at] * n, type=pa.timestamp("us", tz="UTC"))
    cols[names.VERSION_FIELD] = pa.array([version] * n, type=pa.string())
    cols[names.EVENT_TS] = ts
    cols[names.CREATED_TS] = ts
    return pa.table(cols)


def _write_atomic(table: pa.Table, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, dest)


def version_batches(vstore: VersionStore, version: str, table: str, at: datetime,
                    batch_rows: int) -> Iterator[pa.Table]:
    """``version``'s rows of ``table`` in Feast's schema, a batch at a time (online writes);
    none for an optional table the version lacks."""
    path = table_path(vstore, version, table)
    if path is None:
        return
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
        yield _table(pa.Table.from_batches([batch]), path, table, version, at)


def _file_name(at: datetime, version: str) -> str:
    return f"{at.astimezone(timezone.utc).strftime('%Y%m%dT%H%M%S%f')}-{version}.parquet"


def export_version(vstore: VersionStore, version: str, at: datetime) -> dict[str, int]:
    """Write ``version``'s rows stamped ``at`` into the offline source; rows per table."""
    rows = {}
    for table in _FILES:
        out = _table(*_read(vstore, version, table), table, version, at)
        _write_atomic(out, names.offline_dir(vstore.root, table) / _file_name(at, version))
        rows[table] = out.num_rows
    return rows


def served_switches(vstore: VersionStore) -> list[Switch]:
    """The switch log without versions a server refused (their time went to the old one)."""
    return [s for s in vstore.switches() if not vstore.is_refused(s.version)]


def history_rows(vstore: VersionStore) -> dict[str, list[str]]:
    """Offline files per table, oldest first (for tests and ``xemb feast export``)."""
    return {t: sorted(p.name for p in names.offline_dir(vstore.root, t).glob("*.parquet"))
            for t in names.TABLES}


def sync_history(vstore: VersionStore) -> dict[str, Any]:
    """Make the offline source match the switch log: add the files of switches not yet
    exported (the version must still be on disk), remove files no switch accounts for
    (builds that never served, refused versions, temp files). Idempotent."""
    wanted = {_file_name(s.time, s.version): s for s in served_switches(vstore)}
    added, removed = [], []
    for table in names.TABLES:
        folder = names.offline_dir(vstore.root, table)
        have = {p.name for p in folder.glob("*.parquet")} if folder.is_dir() else set()
        for name, switch in wanted.items():
            if name not in have and (vstore.versions_dir / switch.version).is_dir():
                export_version(vstore, switch.version, switch.time)
                have |= {name}
                added.append(name)
        doomed = [n for n in have - set(wanted) if not _kept_legacy(n, have, wanted)]
        for p in [folder / n for n in doomed] + list(folder.glob(".*.tmp")):
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return {"added": sorted(set(added)), "removed": sorted(set(removed))}


def _kept_legacy(name: str, have: set[str], wanted: dict[str, Switch]) -> bool:
    """A ``<version>.parquet`` of an older xemb (stamped with the build time) stays only while
    it is the sole record of a version that served."""
    stem = name.removesuffix(".parquet")
    if stem[:1].isdigit():
        return False
    served = {s.version for s in wanted.values()}
    switch_files = {n for n, s in wanted.items() if s.version == stem}
    return stem in served and not (switch_files & have)
