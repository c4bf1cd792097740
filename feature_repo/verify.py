"""Check that a slot holds exactly one version: row counts per view, then spot values."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureView
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig

from xemb import layout
from xemb.errors import VersionIntegrityError
from xemb.feature_repo import names
from xemb.store import VersionStore

if TYPE_CHECKING:
    from xemb.feature_repo.online_store import XembOnlineStore

__all__ = ["expected_rows", "verify_slot", "KEYS", "VECTORS", "entity_key"]

FILES = {names.ITEM_VIEW: layout.ITEMS, names.USER_VIEW: layout.USERS,
         names.INTENT_VIEW: layout.INTENTS, names.PROFILE_VIEW: layout.USER_PROFILES}
KEYS = {names.ITEM_VIEW: (names.ITEM_KEY,), names.USER_VIEW: (names.USER_KEY,
        names.TARGET_DOMAIN_KEY), names.INTENT_VIEW: (names.INTENT_KEY,),
        names.PROFILE_VIEW: (names.USER_KEY,)}
VECTORS = {names.ITEM_VIEW: layout.VECTOR_PARTS, names.USER_VIEW: ("vector",),
           names.INTENT_VIEW: ("vector",), names.PROFILE_VIEW: ("vector",)}
_OPTIONAL = {names.VIEW_OF_TABLE[t] for t in names.OPTIONAL_TABLES}
SPOT_ROWS = 16


@functools.lru_cache(maxsize=64)
def _rows(path: str) -> int:
    return pq.ParquetFile(path).metadata.num_rows


def expected_rows(vstore: VersionStore, version: str) -> dict[str, int]:
    """Rows per view the version's Parquet tables hold (what its slot must hold); 0 for an
    optional table the version lacks."""
    base = vstore.path(version)
    return {view: 0 if view in _OPTIONAL and not (base / f).is_file() else _rows(str(base / f))
            for view, f in FILES.items()}


def entity_key(join_keys: tuple[str, ...], values: tuple[Any, ...]) -> EntityKeyProto:
    protos = [ValueProto(int64_val=int(v)) if isinstance(v, (int, np.integer))
              else ValueProto(string_val=str(v)) for v in values]
    return EntityKeyProto(join_keys=list(join_keys), entity_values=protos)


def _sample(n: int) -> list[int]:
    rng = np.random.default_rng(n)
    picks = {0, n - 1, n // 2, *rng.integers(0, n, size=min(n, SPOT_ROWS)).tolist()}
    return sorted(i for i in picks if 0 <= i < n)


def _spot_check(store: XembOnlineStore, config: RepoConfig, version: str, view: FeatureView,
                table: pa.Table) -> None:
    keys, vectors = KEYS[view.name], VECTORS[view.name]
    rows = table.take(_sample(table.num_rows)).to_pylist()
    protos = [entity_key(keys, tuple(r[k] for k in keys)) for r in rows]
    slot_store = store.slots(config).store_for(version)
    got = slot_store.online_read(store.slot_config(config, version), view, protos,
                                 [*vectors, names.VERSION_FIELD])
    for row, (_, values) in zip(rows, got, strict=True):
        where = f"version {version}, {view.name} {[row[k] for k in keys]}"
        if not values or values[names.VERSION_FIELD].string_val != version:
            raise VersionIntegrityError(f"{where}: missing or wrong version in online store")
        for vec in vectors:
            want = np.asarray(row[vec], dtype=np.float32)
            have = np.asarray(values[vec].float_list_val.val, dtype=np.float32)
            if want.tobytes() != have.tobytes():
                raise VersionIntegrityError(f"{where}: {vec} differs from Parquet")


def verify_slot(store: XembOnlineStore, config: RepoConfig, vstore: VersionStore,
                version: str, views: dict[str, FeatureView]) -> dict[str, Any]:
    """Raise VersionIntegrityError unless the slot matches the version's Parquet tables."""
    counts = {}
    for name, n in expected_rows(vstore, version).items():
        if n or name in views:  # a view with no rows may not have been written through here
            _check_view(store, config, vstore, version, views[name], n)
        counts[name] = n
    return {"version": version, "rows": counts}


def _check_view(store: XembOnlineStore, config: RepoConfig, vstore: VersionStore,
                version: str, view: FeatureView, n: int) -> None:
    have = store.slots(config).count(config, version, view)
    if have != n:
        raise VersionIntegrityError(
            f"version {version}: online store holds {have} {view.name} rows, Parquet has {n}")
    if n:
        path = vstore.path(version) / FILES[view.name]
        table = pq.read_table(path, columns=[*KEYS[view.name], *VECTORS[view.name]])
        _spot_check(store, config, version, view, table)
