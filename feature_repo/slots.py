"""Per-version namespaces ("slots") in an online store, one backend per class.

A slot holds exactly one version's rows and is written by Feast's own online stores through a
derived RepoConfig: SQLite gets one database file per version, Redis gets the version in the
key's project suffix. A slot is *ready* only after it was verified; the marker is written in
one atomic step (one SQLite transaction, one Redis SET), so a half-written slot is never ready.
"""

from __future__ import annotations

import json
import sqlite3
from abc import ABC, abstractmethod
from contextlib import closing
from pathlib import Path
from typing import Any

from feast import FeatureView
from feast.infra.online_stores.online_store import OnlineStore
from feast.infra.online_stores.sqlite import SqliteOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.repo_config import RepoConfig

from xemb.feature_repo import names

__all__ = ["Slots", "SqliteSlots", "RedisSlots", "derive_config"]


def derive_config(base: RepoConfig, online: Any, project: str | None = None) -> RepoConfig:
    """A copy of ``base`` whose online store is ``online`` (and project, if given)."""
    cfg = base.model_copy()
    cfg.online_config = online
    cfg._online_store = online
    if project is not None:
        cfg.project = project
    return cfg


class Slots(ABC):
    """The namespaces of one backend; ``config_for`` gives what Feast's store needs."""

    transient_errors: tuple[type[Exception], ...] = ()
    """Backend errors that mean "store unreachable" (mapped to Unavailable)."""

    @abstractmethod
    def store_for(self, slot: str) -> OnlineStore: ...

    @abstractmethod
    def config_for(self, base: RepoConfig, slot: str) -> RepoConfig: ...

    @abstractmethod
    def count(self, base: RepoConfig, slot: str, view: FeatureView) -> int:
        """Distinct entity keys of ``view`` written into ``slot``."""

    @abstractmethod
    def ready_info(self, slot: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def mark_ready(self, slot: str, info: dict[str, Any]) -> None: ...

    @abstractmethod
    def list(self) -> list[str]: ...

    @abstractmethod
    def drop(self, base: RepoConfig, slot: str) -> None: ...

    @abstractmethod
    def forget(self, keep: set[str]) -> None:
        """Release cached handles of slots other than ``keep`` (readers after a switch)."""

    @abstractmethod
    def prepare(self, base: RepoConfig, slot: str, view: FeatureView) -> None:
        """Create what a first write into ``slot`` needs (idempotent)."""


class _SlotStore(SqliteOnlineStore):
    """Feast's SQLite store, except that a view the slot has no table of (an optional view its
    version was built without, such as ``user_profiles``, or a view newer than the version)
    reads as rows that are not there, as in Redis, instead of failing."""

    def online_read(self, config: RepoConfig, table: FeatureView,
                    entity_keys: list[EntityKeyProto],
                    requested_features: list[str] | None = None) -> list:
        try:
            return super().online_read(config, table, entity_keys, requested_features)
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            return [(None, None)] * len(entity_keys)


class SqliteSlots(Slots):
    """``<root>/feast/online/<version>.db``: a crash mid-write never touches a live file."""

    META = "xemb_slot"

    def __init__(self, root: Path) -> None:
        self.dir = names.online_dir(root)
        self._stores: dict[str, OnlineStore] = {}
        self._prepared: set[tuple[str, str]] = set()

    def path(self, slot: str) -> Path:
        return self.dir / f"{slot}.db"

    def forget(self, keep: set[str]) -> None:
        for slot in [s for s in self._stores if s not in keep]:
            conn = getattr(self._stores.pop(slot), "_conn", None)
            if conn is not None:
                conn.close()

    def store_for(self, slot: str) -> OnlineStore:
        if slot not in self._stores:
            self._stores[slot] = _SlotStore()
        return self._stores[slot]

    def config_for(self, base: RepoConfig, slot: str) -> RepoConfig:
        from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig

        return derive_config(base, SqliteOnlineStoreConfig(path=str(self.path(slot))))

    def prepare(self, base: RepoConfig, slot: str, view: FeatureView) -> None:
        if (slot, view.name) in self._prepared:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self.store_for(slot).update(self.config_for(base, slot), [], [view], [], [], True)
        self._prepared.add((slot, view.name))

    def _connect(self, slot: str) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.path(slot)}?mode=ro", uri=True)

    def count(self, base: RepoConfig, slot: str, view: FeatureView) -> int:
        from feast.infra.online_stores.helpers import compute_table_id

        table = compute_table_id(base.project, view,
                                 base.registry.enable_online_feature_view_versioning)
        try:
            with closing(self._connect(slot)) as conn:
                row = conn.execute(f'SELECT COUNT(*) FROM "{table}" WHERE feature_name = ?',
                                   (names.VERSION_FIELD,)).fetchone()
        except sqlite3.OperationalError:
            return 0
        return int(row[0])

    def ready_info(self, slot: str) -> dict[str, Any] | None:
        if not self.path(slot).is_file():
            return None
        try:
            with closing(self._connect(slot)) as conn:
                row = conn.execute(f"SELECT value FROM {self.META} WHERE key = 'ready'").fetchone()
        except sqlite3.OperationalError:
            return None
        return json.loads(row[0]) if row else None

    def mark_ready(self, slot: str, info: dict[str, Any]) -> None:
        with closing(sqlite3.connect(self.path(slot))) as conn, conn:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {self.META} "
                         "(key TEXT PRIMARY KEY, value TEXT)")
            conn.execute(f"INSERT OR REPLACE INTO {self.META} VALUES ('ready', ?)",
                         (json.dumps(info),))

    def list(self) -> list[str]:
        return sorted(p.stem for p in self.dir.glob("*.db")) if self.dir.is_dir() else []

    def drop(self, base: RepoConfig, slot: str) -> None:
        self.forget(keep=set(self._stores) - {slot})
        self._prepared = {p for p in self._prepared if p[0] != slot}
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{self.path(slot)}{suffix}").unlink(missing_ok=True)


def _glob_escape(raw: bytes) -> bytes:
    return b"".join(b"\\" + bytes([c]) if c in b"*?[]\\" else bytes([c]) for c in raw)


class RedisSlots(Slots):
    """Keys are ``<entity key><project>@<version>``; markers live under ``xemb:<project>:``."""

    def __init__(self, connection_string: str, project: str, retries: int = 2,
                 timeout_s: float = 1.0) -> None:
        import redis.exceptions as rexc

        self.transient_errors = (rexc.ConnectionError, rexc.TimeoutError)
        self.connection_string = connection_string
        self.project = project
        self.retries, self.timeout_s = retries, timeout_s
        self._store: OnlineStore | None = None

    def _online(self) -> Any:
        from feast.infra.online_stores.redis import RedisOnlineStoreConfig

        # skip_dedup: a slot only ever receives rows of its own version, all with one
        # timestamp, so Feast's read-before-write timestamp check buys nothing here.
        return RedisOnlineStoreConfig(connection_string=self.connection_string, skip_dedup=True)

    def store_for(self, slot: str) -> OnlineStore:
        from feast.infra.online_stores.redis import RedisOnlineStore

        if self._store is None:
            store = RedisOnlineStore()
            store._client = self._new_client()  # type: ignore[attr-defined]  # Feast reuses it
            self._store = store
        return self._store

    def _new_client(self) -> Any:
        """The client Feast's store would make from the connection string, with bounded
        retries and timeouts (redis-py's defaults keep a read waiting ~4 s on a dead Redis)."""
        from feast.infra.online_stores.redis import RedisOnlineStore
        from redis import Redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        nodes, kwargs = RedisOnlineStore._parse_connection_string(self.connection_string)
        kwargs.setdefault("socket_timeout", self.timeout_s)
        kwargs.setdefault("socket_connect_timeout", self.timeout_s)
        kwargs["retry"] = Retry(ExponentialBackoff(cap=0.1, base=0.01), self.retries)
        return Redis(host=nodes[0]["host"], port=int(nodes[0]["port"]), **kwargs)

    def client(self) -> Any:
        return self.store_for("")._get_client(self._online())  # type: ignore[attr-defined]

    def slot_project(self, project: str, slot: str) -> str:
        return f"{project}@{slot}"

    def config_for(self, base: RepoConfig, slot: str) -> RepoConfig:
        return derive_config(base, self._online(), self.slot_project(base.project, slot))

    def _meta(self, *parts: str) -> str:
        return ":".join(("xemb", self.project, *parts))

    def forget(self, keep: set[str]) -> None:
        """One client serves every slot: nothing to release."""

    def prepare(self, base: RepoConfig, slot: str, view: FeatureView) -> None:
        self.client().sadd(self._meta("slots"), slot)

    def _scan(self, pattern: bytes) -> list[bytes]:
        return list(self.client().scan_iter(match=pattern, count=1000))

    def count(self, base: RepoConfig, slot: str, view: FeatureView) -> int:
        from feast.infra.key_encoding_utils import serialize_entity_key_prefix

        prefix = serialize_entity_key_prefix(view.join_keys, base.entity_key_serialization_version)
        project = self.slot_project(base.project, slot).encode()
        keys = self._scan(_glob_escape(prefix) + b"*" + _glob_escape(project))
        # A key holds one hash per entity; count those that carry this view's timestamp.
        field = f"_ts:{view.name}".encode()
        with self.client().pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hexists(key, field)
            return sum(bool(x) for x in pipe.execute())

    def ready_info(self, slot: str) -> dict[str, Any] | None:
        raw = self.client().get(self._meta("ready", slot))
        return json.loads(raw) if raw else None

    def mark_ready(self, slot: str, info: dict[str, Any]) -> None:
        self.client().set(self._meta("ready", slot), json.dumps(info))

    def list(self) -> list[str]:
        return sorted(s.decode() for s in self.client().smembers(self._meta("slots")))

    def drop(self, base: RepoConfig, slot: str) -> None:
        client = self.client()
        client.delete(self._meta("ready", slot))
        project = self.slot_project(base.project, slot).encode()
        keys = self._scan(b"*" + _glob_escape(project))
        for start in range(0, len(keys), 1000):
            client.unlink(*keys[start:start + 1000])
        client.srem(self._meta("slots"), slot)
