"""A Feast root with one published synthetic version (SQLite or Redis online store)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from tests.helpers.synthetic_feast import make_version
from xemb import layout
from xemb.feature_repo import get_feature_store, names, publish_to_feast
from xemb.settings import XembConfig
from xemb.store import VersionStore

__all__ = ["FeastEnv", "feast_env"]


@dataclass
class FeastEnv:
    root: Path
    version: str
    store: Any  # feast.FeatureStore
    items: dict[int, list[float]]  # item_id -> full, as published
    users: list[tuple[str, str]]  # (user_id, target_domain)
    dim: int

    def good_row(self, item_id: int, user: int = 0) -> dict[str, Any]:
        user_id, domain = self.users[user % len(self.users)]
        return {"item_id": item_id, "user_id": user_id, "target_domain": domain,
                names.REQUEST_VECTOR: [0.5] * self.dim, names.REQUEST_VERSION: self.version}

    def read(self, rows: Any) -> dict[str, list[Any]]:
        service = self.store.get_feature_service(names.RANKING_SERVICE)
        return self.store.get_online_features(features=service, entity_rows=rows).to_dict()


def feast_env(root: Path, *, backend: str = "sqlite", redis_url: str | None = None,
              n_items: int = 200, dim: int = 16) -> FeastEnv:
    feast: dict[str, Any] = {"online_store": backend, "project": f"rel{abs(hash(root)) % 10**6}"}
    if redis_url:
        feast["redis_url"] = redis_url
    cfg = XembConfig.model_validate({"build": {"root": str(root)}, "feast": feast})
    vstore = VersionStore(root)
    version = make_version(vstore, n_items=n_items, n_users=10, dim=dim)
    publish_to_feast(cfg, vstore, version)
    vstore.set_current(version)
    base = vstore.path(version)
    items = pq.read_table(base / layout.ITEMS, columns=["item_id", "full"]).to_pylist()
    users = pq.read_table(base / layout.USERS, columns=["user_id", "target_domain"]).to_pylist()
    return FeastEnv(root, version, get_feature_store(root),
                    {r["item_id"]: r["full"] for r in items},
                    [(u["user_id"], u["target_domain"]) for u in users], dim)
