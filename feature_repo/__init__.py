"""xemb's Feast feature repository and the code that publishes builds into it.

Public API (Feast is imported lazily, so importing this package stays cheap):

* :func:`get_feature_store` — a ready ``feast.FeatureStore`` for an xemb root;
* :func:`store_for` — the same from an :class:`~xemb.settings.XembConfig`;
* :func:`publish_to_feast` — the build step (see ``publish.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from xemb.feature_repo import names

if TYPE_CHECKING:
    from feast import FeatureStore

    from xemb.settings import XembConfig
    from xemb.store import VersionStore

__all__ = ["get_feature_store", "store_for", "publish_to_feast", "names"]


def get_feature_store(root: str | Path) -> FeatureStore:
    """The FeatureStore a ranking model uses for the builds under ``root``.

    Reads ``<root>/feast/feature_store.yaml``, written by ``xemb build``. The instance
    follows version switches by itself: keep one per process.
    """
    from feast import FeatureStore

    from xemb.errors import FailedPrecondition

    path = names.yaml_path(root)
    if not path.is_file():
        raise FailedPrecondition(f"{path} not found: nothing was published into Feast under "
                                 f"{root} (run `xemb build` with feast.enabled)")
    if "type: feature_repo." in path.read_text(encoding="utf-8"):  # before the xemb namespace
        raise FailedPrecondition(f"{path} names the store classes as feature_repo.*, which "
                                 "this xemb installs as xemb.feature_repo.*: run `xemb feast "
                                 "publish -c CONFIG` once to rewrite it")
    return FeatureStore(repo_path=str(path.parent), fs_yaml_file=path)


def store_for(cfg: XembConfig) -> FeatureStore:
    """A FeatureStore built from the xemb config alone (no YAML file needed)."""
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    from xemb.feature_repo.repo_config import repo_config_dict

    root = Path(cfg.build.root)
    config = RepoConfig(**repo_config_dict(root, cfg.feast))
    config.repo_path = names.feast_dir(root)
    return FeatureStore(repo_path=str(config.repo_path), config=config)


def publish_to_feast(cfg: XembConfig, store: VersionStore, version: str) -> dict[str, Any]:
    from xemb.feature_repo.publish import publish_to_feast as publish

    return publish(cfg, store, version)
