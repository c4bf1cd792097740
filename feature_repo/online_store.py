"""A Feast online store that serves exactly one complete version at a time.

Feast's own stores write in place and not atomically (Redis: a non-transactional pipeline;
SQLite: a commit per batch), so a materialization that dies half-way would leave a mix of
two versions. This store wraps them (``backend: sqlite|redis``) and keeps every version in
its own slot (see ``slots.py``):

* writes are routed by each row's ``xemb_version`` feature into that version's slot;
* a slot becomes *ready* only after all its rows are written and verified;
* every ``get_online_features`` call resolves the switch record once
  (``VersionStore.serving_target``: ``<root>/CURRENT``, which the build flips with one
  ``os.replace`` after publishing, unless a gRPC server refused that version) and reads all
  views from that slot;
* a call whose rows carry ``user_vector_version`` (the version of the gRPC vector being
  scored) is served from that version's slot when the switch record says it is live, and
  refused with FailedPrecondition naming both versions when it is not, so a user vector
  and the item vectors it is scored against always come from one version.

So a reader sees the old version until CURRENT moves, then the new one, never a mix, and
the feature names never change. Configure it in ``feature_store.yaml``::

    online_store:
      type: feature_repo.online_store.XembOnlineStore
      root: ${XEMB_ROOT}
      backend: sqlite            # or redis, with connection_string: host:port
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, NoReturn

from feast import Entity, FeatureView
from feast.infra.online_stores.online_store import OnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import FeastConfigBaseModel, RepoConfig
from pydantic import Field, StrictStr

from xemb.errors import FailedPrecondition, InvalidArgument, NoCurrentVersion, Unavailable
from xemb.feature_repo import names
from xemb.feature_repo.entities import check_entity_rows, join_key_types
from xemb.feature_repo.slots import RedisSlots, Slots, SqliteSlots
from xemb.feature_repo.verify import expected_rows, verify_slot
from xemb.store import VersionStore

__all__ = ["XembOnlineStore", "XembOnlineStoreConfig"]

log = logging.getLogger(__name__)
_PINNED: contextvars.ContextVar[str | None] = contextvars.ContextVar("xemb_slot", default=None)
Row = tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]


class XembOnlineStoreConfig(FeastConfigBaseModel):
    type: Literal["xemb.feature_repo.online_store.XembOnlineStore"] = (
        "xemb.feature_repo.online_store.XembOnlineStore")
    root: StrictStr
    """The xemb root: ``CURRENT`` there picks the version readers get. A relative path is
    relative to the folder of ``feature_store.yaml`` (the build writes ``..``)."""
    backend: Literal["sqlite", "redis"] = "sqlite"
    """Feast store that holds the slots."""
    connection_string: StrictStr = "localhost:6379"
    """``backend: redis``: Feast Redis connection string (``host:port[,password=...]``)."""
    redis_retries: int = Field(2, ge=0)
    """``backend: redis``: retries of a failed call before a read raises ``Unavailable``."""
    redis_timeout_s: float = Field(1.0, gt=0)
    """``backend: redis``: connect and socket timeout per call, in seconds."""
    write_batch_size: int = Field(1000, gt=0)
    """Rows per write call to the backend (one SQLite commit / one Redis pipeline)."""


def root_of(config: RepoConfig) -> Path:
    """The xemb root of a Feast config (a relative ``root`` is relative to the repo path)."""
    root = Path(config.online_store.root)
    if not root.is_absolute():  # absolute from here on: Feast's SQLite store would prefix
        root = Path(config.repo_path or ".") / root  # a relative path with the repo path
    return root.absolute()


def _stat_key(path: Path) -> tuple[int, int, int]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return (0, 0, 0)
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class _SwitchRecord:
    """The root's switch record as Feast reads it, re-read only when a file changed:
    CURRENT (os.replace gives a new inode), the switch log and the ledger folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = VersionStore(root)
        self._target_key: tuple | None = None
        self._target = ""
        self._live: dict[str, tuple[tuple, bool]] = {}

    def _missing(self) -> NoReturn:
        if not self.root.is_dir():
            raise FailedPrecondition(f"xemb root {self.root} does not exist (moved or deleted?"
                                     f"); open the FeatureStore from the root's new place")
        raise NoCurrentVersion(f"no published version under {self.root}")

    def target(self) -> str:
        key = (_stat_key(self.root / "CURRENT"), _stat_key(self.store.ledger_dir))
        if key != self._target_key:
            if key[0] == (0, 0, 0):
                self._missing()
            self._target, self._target_key = self.store.serving_target(), key
        return self._target

    def live(self, version: str) -> bool:
        key = (_stat_key(self.root / "HISTORY"), _stat_key(self.store.ledger_dir))
        cached = self._live.get(version)
        if cached is None or cached[0] != key:
            cached = (key, self.store.is_live(version))
            self._live[version] = cached
        return cached[1]


def _request_version(entity_rows: Any) -> str | None:
    """The one ``user_vector_version`` of a request (None when the rows carry none)."""
    key = names.REQUEST_VERSION
    if isinstance(entity_rows, Mapping):
        values = list(entity_rows.get(key, []))
    else:
        values = [row[key] for row in entity_rows or [] if key in row]
    if any(not isinstance(v, str) or len(v) > 200 for v in values):
        raise InvalidArgument("expected a version id string (what the gRPC response named)",
                              field=key)
    found = {v for v in values if v}
    if len(found) > 1:
        raise InvalidArgument(f"one request, one version: rows carry {sorted(found)[:3]}",
                              field=key)
    if found and not all(values):
        raise InvalidArgument("set it on every row or on none", field=key)
    return found.pop() if found else None


class XembOnlineStore(OnlineStore):
    """Slot-per-version wrapper around Feast's SQLite or Redis online store."""

    def __init__(self) -> None:
        self._slots: Slots | None = None
        self._record: _SwitchRecord | None = None
        self._ready: set[str] = set()
        self._last = ""
        self._written: Counter[tuple[str, str]] = Counter()
        self._views: dict[str, FeatureView] = {}
        self._derived: dict[str, tuple[RepoConfig, RepoConfig]] = {}
        self._key_types: dict[tuple[int, str], dict] = {}

    # ---- plumbing ------------------------------------------------------------------
    def slots(self, config: RepoConfig) -> Slots:
        if self._slots is None:
            oc = config.online_store
            self._slots = (SqliteSlots(root_of(config)) if oc.backend == "sqlite"
                           else RedisSlots(oc.connection_string, config.project,
                                           oc.redis_retries, oc.redis_timeout_s))
        return self._slots

    def slot_config(self, config: RepoConfig, slot: str) -> RepoConfig:
        cached = self._derived.get(slot)
        if cached is None or cached[0] is not config:
            cached = (config, self.slots(config).config_for(config, slot))
            self._derived[slot] = cached
        return cached[1]

    def _backend_call(self, config: RepoConfig, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except self.slots(config).transient_errors as exc:
            raise Unavailable(f"online store ({config.online_store.backend}) "
                              f"unreachable: {exc}") from exc

    # ---- reading -------------------------------------------------------------------
    def record(self, config: RepoConfig) -> _SwitchRecord:
        if self._record is None:
            self._record = _SwitchRecord(root_of(config))
        return self._record

    def current_slot(self, config: RepoConfig, requested: str | None = None) -> str:
        """The slot a call reads: the switch record's target, or ``requested`` (the version
        of the caller's user vector) when that one is live; checked ready once."""
        record = self.record(config)
        version = record.target()
        if requested and requested != version:
            if not record.live(requested):
                raise FailedPrecondition(
                    f"{names.REQUEST_VERSION} {requested} is not served by Feast under "
                    f"{record.root} (serving {version}; a version is servable once it has "
                    f"been current and was not refused): compose the user vector again",
                )
            version = requested
        if version != self._last:
            self.slots(config).forget(keep={version, self._last})
            self._last = version
        if version not in self._ready:
            if self._backend_call(config, lambda: self.slots(config).ready_info(version)) is None:
                raise FailedPrecondition(
                    f"version {version} is current under {record.root} but is not "
                    f"materialized in the Feast online store ({config.online_store.backend}); "
                    f"run `python -m xemb.feature_repo publish` for it")
            self._ready.add(version)
        return version

    def get_online_features(self, config: RepoConfig, features: Any, entity_rows: Any,
                            registry: Any, project: str, full_feature_names: bool = False,
                            include_feature_view_version_metadata: bool = False) -> Any:
        from feast.errors import (
            FeastObjectNotFoundException,
            RequestDataNotFoundInEntityRowsException,
        )

        types = self._key_types.get((id(registry), project))
        if types is None:  # entity types never change between versions: look them up once
            types = self._key_types[(id(registry), project)] = join_key_types(registry, project)
        check_entity_rows(types, entity_rows)
        token = _PINNED.set(self.current_slot(config, _request_version(entity_rows)))
        try:
            return super().get_online_features(
                config, features, entity_rows, registry, project,
                full_feature_names=full_feature_names,
                include_feature_view_version_metadata=include_feature_view_version_metadata)
        except RequestDataNotFoundInEntityRowsException as exc:
            field = names.REQUEST_VERSION if names.REQUEST_VERSION in str(exc) \
                else names.REQUEST_VECTOR
            raise InvalidArgument(str(exc), field=field) from exc
        except (KeyError, FeastObjectNotFoundException) as exc:
            # Feast reports an unknown feature or a missing join key as a bare KeyError.
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            raise InvalidArgument(f"bad feature reference or entity row: {msg}",
                                  field="features") from exc
        finally:
            _PINNED.reset(token)

    def _read_features_per_fv(self, config: RepoConfig, grouped_refs: list, *args: Any) -> None:
        slot = _PINNED.get() or self.current_slot(config)
        store = self.slots(config).store_for(slot)
        self._backend_call(config, lambda: store._read_features_per_fv(  # noqa: SLF001
            self.slot_config(config, slot), grouped_refs, *args))

    def online_read(self, config: RepoConfig, table: FeatureView,
                    entity_keys: list[EntityKeyProto],
                    requested_features: list[str] | None = None) -> list:
        slot = _PINNED.get() or self.current_slot(config)
        store = self.slots(config).store_for(slot)
        return self._backend_call(config, lambda: store.online_read(
            self.slot_config(config, slot), table, entity_keys, requested_features))

    # ---- writing -------------------------------------------------------------------
    def online_write_batch(self, config: RepoConfig, table: FeatureView, data: list[Row],
                           progress: Callable[[int], Any] | None) -> None:
        known = set(VersionStore(root_of(config)).committed_ids())
        for version, rows in _by_version(table, data).items():
            if version not in known:
                log.warning("skipping %d %s rows of version %s: not under the root",
                            len(rows), table.name, version)
                continue
            self._views[table.name] = table
            self.write_slot(config, version, table, rows, progress)
            self._finalize_if_complete(config, version)

    def write_slot(self, config: RepoConfig, slot: str, table: FeatureView, rows: list[Row],
                   progress: Callable[[int], Any] | None) -> None:
        slots = self.slots(config)
        self._backend_call(config, lambda: slots.prepare(config, slot, table))
        size = config.online_store.write_batch_size
        for start in range(0, len(rows), size):
            chunk = rows[start:start + size]
            self._backend_call(config, functools.partial(self._write_chunk, config, slot,
                                                         table, chunk, progress))
            self._written[(slot, table.name)] += len(chunk)

    def _write_chunk(self, config: RepoConfig, slot: str, table: FeatureView, chunk: list[Row],
                     progress: Callable[[int], Any] | None) -> None:
        store = self.slots(config).store_for(slot)
        store.online_write_batch(self.slot_config(config, slot), table, chunk, progress)

    def _finalize_if_complete(self, config: RepoConfig, version: str) -> None:
        """Verify and mark a slot ready once every row of every view went through here.

        This is what makes a plain ``feast materialize-incremental`` publish a version; the
        xemb build calls :meth:`finalize` itself.
        """
        vstore = VersionStore(root_of(config))
        expected = expected_rows(vstore, version)
        if all(self._written[(version, v)] >= n for v, n in expected.items()) and \
                all(v in self._views for v, n in expected.items() if n):
            self.finalize(config, version, self._views)

    def finalize(self, config: RepoConfig, version: str,
                 views: dict[str, FeatureView]) -> dict[str, Any]:
        """Verify ``version``'s slot (row counts + spot values); mark it ready; return info."""
        slots = self.slots(config)
        info = slots.ready_info(version)
        if info is None:
            vstore = VersionStore(root_of(config))
            info = verify_slot(self, config, vstore, version, views)
            self._backend_call(config, lambda: slots.mark_ready(version, info))
        return info

    # ---- lifecycle -----------------------------------------------------------------
    def drop_slot(self, config: RepoConfig, slot: str) -> None:
        self._backend_call(config, lambda: self.slots(config).drop(config, slot))
        self._ready.discard(slot)
        self._derived.pop(slot, None)
        for key in [k for k in self._written if k[0] == slot]:
            del self._written[key]

    def update(self, config: RepoConfig, tables_to_delete: Sequence[FeatureView],
               tables_to_keep: Sequence[FeatureView], entities_to_delete: Sequence[Entity],
               entities_to_keep: Sequence[Entity], partial: bool) -> None:
        """Tables are created per slot on first write; deleted views go from every slot."""
        if not tables_to_delete:
            return
        slots = self.slots(config)
        for slot in slots.list():
            slots.store_for(slot).update(self.slot_config(config, slot), tables_to_delete, [],
                                         entities_to_delete, [], partial)

    def teardown(self, config: RepoConfig, tables: Sequence[FeatureView],
                 entities: Sequence[Entity]) -> None:
        for slot in self.slots(config).list():
            self.drop_slot(config, slot)


def _by_version(table: FeatureView, data: list[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for row in data:
        value = row[1].get(names.VERSION_FIELD)
        version = value.string_val if value is not None else ""
        if not version:
            raise InvalidArgument(f"{table.name}: a row has no {names.VERSION_FIELD}; "
                                  "materialize from the xemb offline source only",
                                  field=names.VERSION_FIELD)
        out.setdefault(version, []).append(row)
    return out
