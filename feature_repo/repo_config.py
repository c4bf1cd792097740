"""The Feast configuration for one xemb root, as a dict, a RepoConfig or a YAML file.

``xemb build`` writes ``<root>/feast/feature_store.yaml`` from the xemb config, so a ranking
model needs only the root (``get_feature_store(root)``) and ``feast -f`` works on it too.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import yaml

from xemb.feature_repo import names
from xemb.settings.feast import FeastConfig

__all__ = ["repo_config_dict", "write_yaml", "ONLINE_STORE_TYPE", "REGISTRY_STORE_TYPE"]

ONLINE_STORE_TYPE = "xemb.feature_repo.online_store.XembOnlineStore"
REGISTRY_STORE_TYPE = "xemb.feature_repo.registry_store.AtomicFileRegistryStore"


def repo_config_dict(root: str | Path, feast: FeastConfig | None = None) -> dict[str, Any]:
    """``feature_store.yaml`` content for ``root``. Paths are relative to the folder the
    file lives in (``<root>/feast``), so a root copied elsewhere reads itself, not the
    original."""
    feast = feast or FeastConfig()
    online: dict[str, Any] = {"type": ONLINE_STORE_TYPE, "root": "..",
                              "backend": feast.online_store,
                              "write_batch_size": feast.write_batch_size}
    if feast.online_store == "redis":
        online.update(connection_string=feast.redis_url, redis_retries=feast.redis_retries,
                      redis_timeout_s=feast.redis_timeout_s)
    return {
        "project": feast.project,
        "provider": "local",
        "registry": {"path": names.registry_path(".").relative_to(names.feast_dir(".")).as_posix(),
                     "registry_store_type": REGISTRY_STORE_TYPE,
                     "cache_ttl_seconds": feast.registry_cache_ttl_seconds},
        "online_store": online,
        "offline_store": {"type": "dask"},
        "entity_key_serialization_version": 3,
    }


def write_yaml(root: str | Path, feast: FeastConfig | None = None) -> Path:
    """Write ``<root>/feast/feature_store.yaml`` atomically; return its path."""
    path = names.yaml_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(repo_config_dict(root, feast), sort_keys=False)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
