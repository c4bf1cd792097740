"""Feast objects for one xemb root: entities, file sources, feature views, services.

Names here are the stable contract a ranking model codes against; they never carry a
version id. Which version a read returns is decided by the online store (see
``online_store.py``), not by these names. File sources are relative to the Feast repo path
``<root>/feast`` (Feast resolves them against it), so a root copied elsewhere reads its own
history; ``feast apply`` from ``feature_repo/`` (driven by ``$XEMB_ROOT``, a different repo
path) registers absolute ones instead.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import FunctionType
from typing import cast

from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.types import Array, Bool, Float32, Float64, Int64, String
from feast.value_type import ValueType

from xemb.feature_repo import affinity, names
from xemb.settings.offline import DESCRIPTION_COLUMNS

__all__ = ["Definitions", "build_definitions"]

# Versions never expire by age: a version is valid until the next one replaces it. Ten years
# (not 0) so `feast materialize-incremental` on a fresh registry looks back far enough.
TTL = timedelta(days=3650)


@dataclass(frozen=True)
class Definitions:
    entities: list[Entity]
    views: list[FeatureView]
    on_demand: list[OnDemandFeatureView]
    services: list[FeatureService]

    def objects(self) -> list:
        return [*self.entities, *self.views, *self.on_demand, *self.services]


def _source(root: Path | None, table: str) -> FileSource:
    """``root`` None: relative to the repo path ``<root>/feast`` (portable)."""
    path = names.offline_dir(root, table) if root else \
        names.offline_dir(".", table).relative_to(names.feast_dir("."))
    return FileSource(name=f"xemb_{table}", path=path.as_posix(),
                      timestamp_field=names.EVENT_TS, created_timestamp_column=names.CREATED_TS)


def _entities() -> dict[str, Entity]:
    return {
        "item": Entity(name=names.ITEM, join_keys=[names.ITEM_KEY], value_type=ValueType.INT64,
                       description="A catalogue item of any domain."),
        "user": Entity(name=names.USER, join_keys=[names.USER_KEY], value_type=ValueType.STRING,
                       description="A user with behaviour history."),
        "target_domain": Entity(name=names.TARGET_DOMAIN, join_keys=[names.TARGET_DOMAIN_KEY],
                                value_type=ValueType.STRING,
                                description="The domain a user-intent vector ranks items of."),
        "intent": Entity(name=names.INTENT, join_keys=[names.INTENT_KEY],
                         value_type=ValueType.INT64, description="An atomic intent."),
    }


def _views(root: Path | None, ent: dict[str, Entity]) -> dict[str, FeatureView]:
    vec = Array(Float32)
    version = Field(name=names.VERSION_FIELD, dtype=String)
    items = FeatureView(
        name=names.ITEM_VIEW, entities=[ent["item"]], ttl=TTL,
        source=_source(root, names.ITEMS_TABLE), online=True,
        schema=[Field(name="full", dtype=vec), Field(name="transferable", dtype=vec),
                Field(name="residual", dtype=vec), Field(name="domain", dtype=String),
                Field(name="intent_ids", dtype=Array(Int64)),
                Field(name="intent_weights", dtype=vec), Field(name="warm", dtype=Bool),
                *(Field(name=c, dtype=String) for c in DESCRIPTION_COLUMNS), version],
        description="Item embeddings: full = transferable + residual; generated "
                    "descriptions (null unless the version was built with describe on).")
    users = FeatureView(
        name=names.USER_VIEW, entities=[ent["user"], ent["target_domain"]], ttl=TTL,
        source=_source(root, names.USERS_TABLE), online=True,
        schema=[Field(name="vector", dtype=vec), Field(name="top_intent_ids", dtype=Array(Int64)),
                Field(name="top_intent_weights", dtype=vec), version],
        description="User-intent vector per (user, target domain) of training users.")
    intents = FeatureView(
        name=names.INTENT_VIEW, entities=[ent["intent"]], ttl=TTL,
        source=_source(root, names.INTENTS_TABLE), online=True,
        schema=[Field(name="vector", dtype=vec), Field(name="label", dtype=String),
                Field(name="support", dtype=Int64), Field(name="domain_support", dtype=String),
                Field(name="domain_labels", dtype=String),
                Field(name="top_terms", dtype=Array(String)), version],
        description="Atomic intent library (centroids in the transferable space).")
    return {"items": items, "users": users, "intents": intents,
            "profiles": _profile_view(root, ent, version)}


def _profile_view(root: Path | None, ent: dict[str, Entity], version: Field) -> FeatureView:
    return FeatureView(
        name=names.PROFILE_VIEW, entities=[ent["user"]], ttl=TTL,
        source=_source(root, names.PROFILES_TABLE), online=True,
        schema=[Field(name="profile", dtype=String), Field(name="domain_summaries", dtype=String),
                Field(name="vector", dtype=Array(Float32)), version],
        description="LLM user profile per training user (LLM4CDSR: per-domain summaries, "
                    "JSON, combined into one profile) and the profile's vector by the item "
                    "encoder; rows only for versions built with profile on.")


def _affinity_view(items: FeatureView) -> OnDemandFeatureView:
    request = RequestSource(name=names.REQUEST_SOURCE,
                            schema=[Field(name=names.REQUEST_VECTOR, dtype=Array(Float32)),
                                    Field(name=names.REQUEST_VERSION, dtype=String)])
    udf = cast(FunctionType, affinity.item_user_affinity)
    return OnDemandFeatureView(
        name=names.AFFINITY_VIEW, sources=[items[["full", names.VERSION_FIELD]], request],
        mode="python",
        schema=[Field(name="affinity_dot", dtype=Float64),
                Field(name="affinity_cosine", dtype=Float64)],
        udf=udf, udf_string=inspect.getsource(udf),
        description="dot and cosine of the request user vector with the item's full vector.")


def _services(views: dict[str, FeatureView], odfv: OnDemandFeatureView) -> list[FeatureService]:
    items, users = views["items"], views["users"]
    ranking = FeatureService(
        name=names.RANKING_SERVICE,
        features=[items[["full", "domain", "intent_ids", "intent_weights", names.VERSION_FIELD]],
                  users[["vector", "top_intent_ids", "top_intent_weights"]], odfv],
        description="What a ranking model reads per (user, target domain, candidate item).")
    return [
        ranking,
        FeatureService(name=names.ITEMS_SERVICE, features=[items],
                       description="Every item feature (all three vectors)."),
        FeatureService(name=names.USERS_SERVICE, features=[users],
                       description="User-intent vectors and top intents."),
        FeatureService(name=names.INTENTS_SERVICE, features=[views["intents"]],
                       description="The atomic intent library."),
        FeatureService(name=names.PROFILES_SERVICE, features=[views["profiles"]],
                       description="LLM user profiles: text, domain summaries, vector."),
    ]


def build_definitions(root: str | Path | None = None) -> Definitions:
    """All Feast objects; file sources relative to ``<root>/feast`` unless ``root`` is given
    (then absolute, for a repo path elsewhere such as ``feature_repo/``)."""
    ent = _entities()
    views = _views(Path(root).resolve() if root is not None else None, ent)
    odfv = _affinity_view(views["items"])
    return Definitions(entities=list(ent.values()), views=list(views.values()),
                       on_demand=[odfv], services=_services(views, odfv))
