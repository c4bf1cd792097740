"""Stable names and paths of the Feast integration (no Feast import: cheap for readers).

The feature references a ranking model uses (``item_embeddings:full``,
``item_user_affinity:affinity_cosine``, the ``xemb_ranking`` service, ...) are built from
these constants and are the same for every version.
"""

from __future__ import annotations

from pathlib import Path

PROJECT = "xemb"

ITEM, USER, TARGET_DOMAIN, INTENT = "item", "user", "target_domain", "intent"
ITEM_KEY, USER_KEY, TARGET_DOMAIN_KEY, INTENT_KEY = (
    "item_id", "user_id", "target_domain", "intent_id")

ITEM_VIEW = "item_embeddings"
USER_VIEW = "user_intents"
INTENT_VIEW = "atomic_intents"
PROFILE_VIEW = "user_profiles"
"""LLM user profiles (text + vector) per training user; rows only from versions built with
``profile.enabled`` (no rows for the others)."""
AFFINITY_VIEW = "item_user_affinity"
REQUEST_SOURCE = "user_vector_request"
REQUEST_VECTOR = "user_vector"
REQUEST_VERSION = "user_vector_version"
"""Request field: the version the ``user_vector`` came from (gRPC responses name it)."""

RANKING_SERVICE = "xemb_ranking"
ITEMS_SERVICE = "xemb_items"
USERS_SERVICE = "xemb_users"
INTENTS_SERVICE = "xemb_intents"
PROFILES_SERVICE = "xemb_user_profiles"

VERSION_FIELD = "xemb_version"
"""Feature in every view: the version a row belongs to (also routes online writes)."""
EVENT_TS = "event_timestamp"
CREATED_TS = "created"

ITEMS_TABLE, USERS_TABLE, INTENTS_TABLE = "items", "users", "intents"
PROFILES_TABLE = "user_profiles"
TABLES = (ITEMS_TABLE, USERS_TABLE, INTENTS_TABLE, PROFILES_TABLE)
OPTIONAL_TABLES = (PROFILES_TABLE,)
"""Tables a version may lack (it then has no rows in their views)."""
VIEW_OF_TABLE = {ITEMS_TABLE: ITEM_VIEW, USERS_TABLE: USER_VIEW, INTENTS_TABLE: INTENT_VIEW,
                 PROFILES_TABLE: PROFILE_VIEW}
VIEWS = tuple(VIEW_OF_TABLE.values())


def feast_dir(root: str | Path) -> Path:
    """Everything Feast-specific of a root lives here (never inside versions/)."""
    return Path(root) / "feast"


def offline_dir(root: str | Path, table: str) -> Path:
    """One Parquet file per published version: the history the offline store reads."""
    return feast_dir(root) / "offline" / table


def registry_path(root: str | Path) -> Path:
    return feast_dir(root) / "registry.db"


def online_dir(root: str | Path) -> Path:
    """SQLite online store: one database file per version (a slot)."""
    return feast_dir(root) / "online"


def yaml_path(root: str | Path) -> Path:
    return feast_dir(root) / "feature_store.yaml"
