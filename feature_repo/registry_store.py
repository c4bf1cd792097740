"""A file registry written with os.replace, so a reader never parses a half-written file.

Feast's FileRegistryStore rewrites the registry in place; every ``apply`` and every
``materialize`` (which records its interval) would race readers refreshing their cache.
It also creates an empty registry wherever it finds none, so a FeatureStore pointed at a
moved or deleted root answered "feature service ... does not exist"; this one says the root
is missing instead.
"""

from __future__ import annotations

import os
import secrets
import uuid

from feast.infra.registry.file import FileRegistryStore
from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto
from feast.utils import _utc_now

from xemb.errors import FailedPrecondition

__all__ = ["AtomicFileRegistryStore"]


class AtomicFileRegistryStore(FileRegistryStore):
    def _require_root(self) -> None:
        """The registry lives at ``<root>/feast/registry.db``; a root has ``versions/``."""
        root = self._filepath.parent.parent
        if not self._filepath.exists() and not (root / "versions").is_dir():
            raise FailedPrecondition(f"xemb root {root} is missing (no {root / 'versions'}): "
                                     f"was it moved or deleted? Open the FeatureStore from "
                                     f"the root's current place")

    def get_registry_proto(self) -> RegistryProto:
        self._require_root()
        return super().get_registry_proto()

    def _write_registry(self, registry_proto: RegistryProto) -> None:
        self._require_root()
        registry_proto.version_id = str(uuid.uuid4())
        registry_proto.last_updated.FromDatetime(_utc_now())
        self._filepath.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._filepath.with_name(f".{self._filepath.name}.{secrets.token_hex(4)}.tmp")
        with open(tmp, "wb") as f:
            f.write(registry_proto.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._filepath)
