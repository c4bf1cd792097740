"""Online reads through Feast on SQLite and on a real Redis: exact vectors, affinity, errors,
and no mixed versions when a materialization is killed half-way."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.helpers.services import redis_binary, redis_server
from tests.helpers.synthetic_feast import copy_version, derive_version, make_version
from xemb import layout
from xemb.errors import FailedPrecondition, InvalidArgument
from xemb.feature_repo import get_feature_store, names, publish_to_feast
from xemb.feature_repo.verify import expected_rows
from xemb.settings import XembConfig
from xemb.store import VersionStore

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:On demand feature view:RuntimeWarning")]
BACKENDS = ["sqlite", pytest.param("redis", marks=pytest.mark.redis)]
_projects = itertools.count()


@pytest.fixture(scope="module")
def redis_url() -> Any:
    if redis_binary() is None:
        pytest.skip("redis-server not installed (CI installs it in .ci/run)")
    with redis_server() as url:
        yield url


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[VersionStore, str]:
    store = VersionStore(tmp_path_factory.mktemp("synthetic"))
    return store, make_version(store, n_items=300, n_users=60)


@pytest.fixture(scope="module")
def source(request: pytest.FixtureRequest, synthetic: tuple[VersionStore, str]
           ) -> tuple[VersionStore, str]:
    """The session's real small build (``tiny_build``) where the suite has one."""
    try:
        build = request.getfixturevalue("tiny_build")
    except pytest.FixtureLookupError:
        return synthetic
    return build.store, build.manifest.version


def new_root(backend: str, source: tuple[VersionStore, str], tmp: Path,
             request: pytest.FixtureRequest) -> SimpleNamespace:
    feast: dict[str, Any] = {"online_store": backend, "project": f"t{next(_projects)}",
                             "write_batch_size": 50}
    if backend == "redis":
        feast["redis_url"] = request.getfixturevalue("redis_url")
    cfg = XembConfig.model_validate({"build": {"root": str(tmp)}, "feast": feast})
    store = VersionStore(tmp)
    version = copy_version(source[0], source[1], store)
    return SimpleNamespace(cfg=cfg, store=store, root=tmp, version=version)


@pytest.fixture(scope="module", params=BACKENDS)
def published(request: pytest.FixtureRequest, source: tuple[VersionStore, str],
              tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    env = new_root(request.param, source, tmp_path_factory.mktemp(request.param), request)
    env.metrics = publish_to_feast(env.cfg, env.store, env.version)
    env.store.set_current(env.version)
    env.fs = get_feature_store(env.root)
    return env


def table(store: VersionStore, version: str, name: str) -> list[dict[str, Any]]:
    return pq.read_table(store.path(version) / name).to_pylist()


def f32(values: Any) -> bytes:
    return np.asarray(values, dtype=np.float32).tobytes()


def ranking_rows(items: list[dict], users: list[dict], n: int, version: str
                 ) -> list[dict[str, Any]]:
    return [{"item_id": items[i % len(items)]["item_id"],
             "user_id": users[i % len(users)]["user_id"],
             "target_domain": users[i % len(users)]["target_domain"],
             "user_vector": users[i % len(users)]["vector"],
             names.REQUEST_VERSION: version} for i in range(n)]


def test_publish_reports_rows_and_timings(published: SimpleNamespace) -> None:
    m = published.metrics
    assert m["rows"] == {k: v for k, v in zip(names.TABLES, expected_rows(
        published.store, published.version).values(), strict=True)}
    assert m["materialize_s"] > 0 and m["rows_per_s"] > 0
    saved = names.feast_dir(published.root) / "metrics" / f"{published.version}.json"
    assert json.loads(saved.read_text())["rows"] == m["rows"]


def test_ranking_service_returns_published_vectors_bit_for_bit(published: SimpleNamespace
                                                               ) -> None:
    items = table(published.store, published.version, layout.ITEMS)
    users = table(published.store, published.version, layout.USERS)
    service = published.fs.get_feature_service(names.RANKING_SERVICE)
    rows = ranking_rows(items, users, max(len(items), len(users)), published.version)
    for start in range(0, len(rows), 200):
        batch = rows[start:start + 200]
        got = published.fs.get_online_features(features=service, entity_rows=batch).to_dict()
        for i, row in enumerate(batch, start=start):
            item, user = items[i % len(items)], users[i % len(users)]
            assert f32(got["full"][i - start]) == f32(item["full"]), row
            assert got["intent_ids"][i - start] == item["intent_ids"]
            assert f32(got["intent_weights"][i - start]) == f32(item["intent_weights"])
            assert got["domain"][i - start] == item["domain"]
            assert got[names.VERSION_FIELD][i - start] == published.version
            assert f32(got["vector"][i - start]) == f32(user["vector"]), row
            assert got["top_intent_ids"][i - start] == user["top_intent_ids"]
            u = np.asarray(user["vector"], dtype=np.float32).astype(np.float64)
            f = np.asarray(item["full"], dtype=np.float32).astype(np.float64)
            assert abs(got["affinity_dot"][i - start] - float(u @ f)) <= 1e-6
            cos = float(u @ f / (np.linalg.norm(u) * np.linalg.norm(f)))
            assert abs(got["affinity_cosine"][i - start] - cos) <= 1e-6


def test_item_and_intent_services_return_every_vector(published: SimpleNamespace) -> None:
    fs = published.fs
    items = table(published.store, published.version, layout.ITEMS)
    got = fs.get_online_features(features=fs.get_feature_service(names.ITEMS_SERVICE),
                                 entity_rows=[{"item_id": r["item_id"]} for r in items]).to_dict()
    for part in layout.VECTOR_PARTS:
        assert f32(got[part]) == f32([r[part] for r in items])
    assert got["warm"] == [r["warm"] for r in items]
    intents = table(published.store, published.version, layout.INTENTS)
    got = fs.get_online_features(features=fs.get_feature_service(names.INTENTS_SERVICE),
                                 entity_rows=[{"intent_id": r["intent_id"]} for r in intents]
                                 ).to_dict()
    assert f32(got["vector"]) == f32([r["vector"] for r in intents])
    assert got["label"] == [r["label"] for r in intents]
    assert got["support"] == [r["support"] for r in intents]
    assert got["domain_labels"] == [r.get("domain_labels", "{}") for r in intents]
    assert [t or [] for t in got["top_terms"]] == [r.get("top_terms") or [] for r in intents]


def test_unknown_ids_come_back_empty(published: SimpleNamespace) -> None:
    got = published.fs.get_online_features(
        features=["item_embeddings:full", "user_intents:vector"],
        entity_rows=[{"item_id": -1, "user_id": "nobody", "target_domain": "food"}]).to_dict()
    assert got["full"] == [None] and got["vector"] == [None]


def _one_row(published: SimpleNamespace, **override: Any) -> dict[str, Any]:
    item = table(published.store, published.version, layout.ITEMS)[0]
    user = table(published.store, published.version, layout.USERS)[0]
    row = {"item_id": item["item_id"], "user_id": user["user_id"],
           "target_domain": user["target_domain"], "user_vector": user["vector"],
           names.REQUEST_VERSION: published.version}
    return {**row, **override}


@pytest.mark.parametrize(("features", "override", "field"), [
    (["item_embeddings:no_such_feature"], {}, "features"),
    (["no_such_view:full"], {}, "features"),
    (["item_embeddings:full"], {"item_id": "1"}, "item_id"),
    (["item_embeddings:full"], {"item_id": 1.5}, "item_id"),
    (["user_intents:vector"], {"user_id": 17}, "user_id"),
    ([names.RANKING_SERVICE], {"user_vector": [0.5, 0.5]}, "user_vector"),
    ([names.RANKING_SERVICE], {"user_vector": "NaN"}, "user_vector"),
    ([names.RANKING_SERVICE], {"user_vector": "absent"}, "user_vector"),
])
def test_bad_inputs_are_clear_errors(published: SimpleNamespace, features: list[str],
                                     override: dict[str, Any], field: str) -> None:
    fs = published.fs
    row = _one_row(published, **override)
    if row["user_vector"] == "NaN":
        row["user_vector"] = [float("nan")] * len(_one_row(published)["user_vector"])
    if row["user_vector"] == "absent":
        del row["user_vector"]
    refs: Any = (fs.get_feature_service(features[0]) if features == [names.RANKING_SERVICE]
                 else features)
    with pytest.raises(InvalidArgument) as err:
        fs.get_online_features(features=refs, entity_rows=[row])
    assert err.value.field == field


def _read_all_items(fs: Any, items: list[dict]) -> dict[str, list]:
    return fs.get_online_features(features=fs.get_feature_service(names.ITEMS_SERVICE),
                                  entity_rows=[{"item_id": r["item_id"]} for r in items]
                                  ).to_dict()


def _assert_exactly(fs: Any, store: VersionStore, version: str) -> None:
    items = table(store, version, layout.ITEMS)
    got = _read_all_items(fs, items)
    assert set(got[names.VERSION_FIELD]) == {version}
    assert f32(got["full"]) == f32([r["full"] for r in items])
    users = table(store, version, layout.USERS)
    got = fs.get_online_features(
        features=["user_intents:vector", f"user_intents:{names.VERSION_FIELD}"],
        entity_rows=[{"user_id": r["user_id"], "target_domain": r["target_domain"]}
                     for r in users]).to_dict()
    assert set(got[names.VERSION_FIELD]) == {version}
    assert f32(got["vector"]) == f32([r["vector"] for r in users])


@pytest.mark.parametrize("backend", BACKENDS)
def test_killed_materialization_leaves_old_version_and_rerun_switches(
        backend: str, synthetic: tuple[VersionStore, str], tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    env = new_root(backend, synthetic, tmp_path, request)
    publish_to_feast(env.cfg, env.store, env.version)
    env.store.set_current(env.version)
    reader = get_feature_store(env.root)
    _assert_exactly(reader, env.store, env.version)

    new = derive_version(env.store, env.version, seed=7)
    code = ("import sys; from tests.helpers.faults import publish_until_killed; "
            "publish_until_killed(sys.argv[1], sys.argv[2], 0.5)")
    proc = subprocess.run([sys.executable, "-c", code, env.cfg.model_dump_json(), new],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == -9, proc.stderr[-2000:]

    online = reader._get_provider().online_store
    written = sum(online.slots(reader.config).count(reader.config, new, v)
                  for v in reader.list_feature_views())
    total = sum(expected_rows(env.store, new).values())
    assert 0 < written < total, (written, total)     # really died half-way
    assert online.slots(reader.config).ready_info(new) is None
    _assert_exactly(reader, env.store, env.version)  # readers: the old version only

    env.store.set_current(new)                       # even a premature flip never mixes:
    with pytest.raises(FailedPrecondition, match="not materialized"):
        _read_all_items(reader, table(env.store, new, layout.ITEMS))
    env.store.set_current(env.version)

    publish_to_feast(env.cfg, env.store, new)        # the rerun completes the slot
    _assert_exactly(reader, env.store, env.version)  # ...and still serves the old one
    env.store.set_current(new)                       # until CURRENT moves
    _assert_exactly(reader, env.store, new)
    env.store.set_current(env.version)               # rollback: the kept slot serves at once
    _assert_exactly(reader, env.store, env.version)


@pytest.mark.parametrize("backend", BACKENDS)
def test_slots_of_garbage_collected_versions_are_dropped(
        backend: str, synthetic: tuple[VersionStore, str], tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    env = new_root(backend, synthetic, tmp_path, request)
    first = env.version
    publish_to_feast(env.cfg, env.store, first)
    env.store.set_current(first)
    second = derive_version(env.store, first, seed=2)
    publish_to_feast(env.cfg, env.store, second)
    env.store.set_current(second)
    assert env.store.gc(keep=1) == [first]
    third = derive_version(env.store, second, seed=3)
    assert publish_to_feast(env.cfg, env.store, third)["dropped_slots"] == [first]
    fs = get_feature_store(env.root)
    online = fs._get_provider().online_store
    assert online.slots(fs.config).list() == sorted([second, third])
    assert all(online.slots(fs.config).count(fs.config, first, v) == 0
               for v in fs.list_feature_views())
    _assert_exactly(fs, env.store, second)


@pytest.mark.redis
@pytest.mark.parametrize("published", ["redis"], indirect=True)
def test_unreachable_redis_is_unavailable(published: SimpleNamespace, tmp_path: Path) -> None:
    from tests.helpers.services import free_port
    from xemb.errors import Unavailable
    from xemb.feature_repo import store_for

    assert published.cfg.feast.online_store == "redis"
    feast = published.cfg.feast.model_copy(update={"redis_url": f"127.0.0.1:{free_port()}"})
    fs = store_for(published.cfg.model_copy(update={"feast": feast}))
    with pytest.raises(Unavailable, match="unreachable"):
        fs.get_online_features(features=["item_embeddings:full"], entity_rows=[{"item_id": 1}])
