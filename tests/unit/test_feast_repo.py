"""Feast repo pieces that need no online store: names, config, offline export, id checks."""

from __future__ import annotations

import runpy
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from tests.helpers.synthetic_feast import make_version
from xemb import feature_repo, layout
from xemb.errors import ConfigError, FailedPrecondition, InvalidArgument
from xemb.feature_repo import names
from xemb.feature_repo.entities import check_entity_rows, join_key_types
from xemb.feature_repo.offline import export_version, history_rows, sync_history
from xemb.feature_repo.repo_config import repo_config_dict
from xemb.settings import XembConfig
from xemb.settings.feast import FeastConfig
from xemb.store import VersionStore

REPO = Path(feature_repo.__file__).parent


def test_feastignore_covers_every_module_but_definitions() -> None:
    ignored = {line.strip() for line in (REPO / ".feastignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    modules = {p.name for p in REPO.glob("*.py")} - {"__init__.py", "definitions.py"}
    assert modules == ignored


def test_importing_the_package_does_not_import_feast() -> None:
    code = "import sys, xemb.feature_repo, xemb.feature_repo.names; print('feast' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_definitions_have_stable_version_free_names(tmp_path: Path) -> None:
    from xemb.feature_repo.repo import build_definitions

    defs = build_definitions(tmp_path)
    assert [v.name for v in defs.views] == list(names.VIEWS)
    assert [s.name for s in defs.services] == [names.RANKING_SERVICE, names.ITEMS_SERVICE,
                                               names.USERS_SERVICE, names.INTENTS_SERVICE,
                                               names.PROFILES_SERVICE]
    assert [o.name for o in defs.on_demand] == [names.AFFINITY_VIEW]
    for view in defs.views:
        assert names.VERSION_FIELD in {f.name for f in view.features}
        assert Path(view.batch_source.path).parent == names.offline_dir(tmp_path.resolve(),
                                                                        "x").parent
    assert defs.views[1].entities == [names.USER, names.TARGET_DOMAIN]


def test_definitions_py_needs_xemb_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XEMB_ROOT", raising=False)
    with pytest.raises(ConfigError, match="XEMB_ROOT"):
        runpy.run_path(str(REPO / "definitions.py"))


def test_feast_config_forbids_unknown_fields() -> None:
    assert FeastConfig().online_store == "sqlite"
    with pytest.raises(ValidationError):
        FeastConfig(online_stor="redis")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        FeastConfig(online_store="dynamo")  # type: ignore[arg-type]


def test_repo_config_is_valid_feast_config(tmp_path: Path) -> None:
    from feast.repo_config import RepoConfig

    from xemb.feature_repo.online_store import XembOnlineStoreConfig

    raw = repo_config_dict(tmp_path, FeastConfig(online_store="redis", redis_url="h:1"))
    assert raw["online_store"]["connection_string"] == "h:1"
    config = RepoConfig(**raw)
    assert isinstance(config.online_store, XembOnlineStoreConfig)
    assert config.online_store.backend == "redis"
    # Issue 7.3: nothing written into a root holds an absolute path.
    assert config.registry.path == "registry.db" and config.online_store.root == ".."
    assert str(tmp_path) not in repr(raw)


def test_redis_reads_give_up_after_the_configured_retries(tmp_path: Path) -> None:
    import socket

    import redis
    from feast.repo_config import RepoConfig

    from xemb.feature_repo.online_store import XembOnlineStore

    with socket.socket() as s:  # a free port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    feast = FeastConfig(online_store="redis", redis_url=f"127.0.0.1:{port}", redis_retries=1,
                        redis_timeout_s=0.25)
    raw = repo_config_dict(tmp_path, feast)
    client = XembOnlineStore().slots(RepoConfig(**raw)).store_for("")._client  # type: ignore
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == 0.25
    assert client.get_retry()._retries == 1  # redis-py 8 alone would retry 10 times (~4 s)
    with pytest.raises(redis.exceptions.ConnectionError):  # Feast's store uses this client
        client.get("k")


def test_store_for_builds_a_feature_store_from_the_xemb_config(tmp_path: Path) -> None:
    cfg = XembConfig.model_validate({"build": {"root": str(tmp_path)}})
    fs = feature_repo.store_for(cfg)
    assert fs.project == names.PROJECT
    from xemb.feature_repo.online_store import root_of

    assert root_of(fs.config).resolve() == tmp_path.resolve()


def test_history_follows_the_switch_log_bit_identical(tmp_path: Path) -> None:
    """Issue 7.4: offline rows exist only for switches, stamped with the switch time; a
    rollback adds the rolled-back-to rows again; rows of a never-current build go."""
    store = VersionStore(tmp_path)
    v1 = make_version(store, n_items=30)
    v2 = make_version(store, n_items=30, seed=1)
    never = make_version(store, n_items=30, seed=2)
    export_version(store, never, datetime(2026, 1, 1, tzinfo=timezone.utc))  # old-style leak
    store.set_current(v1)
    store.set_current(v2)
    store.set_current(v1, reason="rollback")
    sync_history(store)
    switches = store.switches()
    assert [s.version for s in switches] == [v1, v2, v1]
    assert switches[-1].reason == "rollback"
    files = history_rows(store)["items"]
    assert len(files) == 3 and not any(never in f for f in files)
    for switch, name in zip(switches, files, strict=True):
        out = pq.read_table(names.offline_dir(tmp_path, "items") / name)
        assert set(out.column(names.EVENT_TS).to_pylist()) == {switch.time}
        assert set(out.column(names.VERSION_FIELD).to_pylist()) == {switch.version}
    out = pq.read_table(names.offline_dir(tmp_path, "items") / files[0])
    src = pq.read_table(store.path(v1) / layout.ITEMS)
    assert out.schema.field("full").type == pa.list_(pa.float32())
    for part in layout.VECTOR_PARTS:
        a = np.asarray(src.column(part).combine_chunks().flatten(), dtype=np.float32)
        b = np.asarray(out.column(part).combine_chunks().flatten(), dtype=np.float32)
        assert a.tobytes() == b.tobytes()
    assert sync_history(store) == {"added": [], "removed": []}  # idempotent


def _types() -> dict:
    from feast.value_type import ValueType

    ents = [SimpleNamespace(join_key="item_id", value_type=ValueType.INT64),
            SimpleNamespace(join_key="user_id", value_type=ValueType.STRING)]
    registry = SimpleNamespace(list_entities=lambda project, allow_cache=True: ents)
    return join_key_types(registry, "xemb")


@pytest.mark.parametrize(("rows", "field"), [
    ([{"item_id": "7"}], "item_id"),
    ([{"item_id": 7.0}], "item_id"),
    ([{"item_id": True}], "item_id"),
    ([{"item_id": 7, "user_id": 3}], "user_id"),
    ({"item_id": [1, 2, "x"]}, "item_id"),
])
def test_entity_ids_of_the_wrong_type_are_invalid_argument(rows: object, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        check_entity_rows(_types(), rows)
    assert err.value.field == field


def test_entity_ids_of_the_right_type_pass() -> None:
    check_entity_rows(_types(), [{"item_id": np.int64(7), "user_id": "u",
                                             "user_vector": [1.0]}])
    check_entity_rows(_types(), {"item_id": [1, 2]})


def test_switch_record_follows_os_replace_and_refusals(tmp_path: Path) -> None:
    from xemb.feature_repo.online_store import _SwitchRecord

    store = VersionStore(tmp_path)
    v1, v2 = make_version(store, n_items=5), make_version(store, n_items=5, seed=1)
    record = _SwitchRecord(tmp_path)
    store.set_current(v1)
    assert record.target() == v1
    store.set_current(v2)
    assert record.target() == v2 and record.live(v1)
    store.mark_refused(v2, "smoke test failed")  # a server refused v2: Feast serves v1 again
    assert record.target() == v1 and not record.live(v2)


def test_a_missing_root_says_so(tmp_path: Path) -> None:
    """Issue 7.3: a FeatureStore whose root is gone fails with a message that says so."""
    from xemb.feature_repo.online_store import _SwitchRecord

    with pytest.raises(FailedPrecondition, match="does not exist"):
        _SwitchRecord(tmp_path / "gone").target()


def test_cli_export_and_publish_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    import argparse
    import json

    from xemb.feature_repo.cli import main, register

    store = VersionStore(tmp_path)
    version = make_version(store, n_items=10)
    assert main(["export", "--root", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == {"added": [], "removed": []}
    store.set_current(version)
    assert main(["export", "--root", str(tmp_path)]) == 0
    assert len(json.loads(capsys.readouterr().out)["added"]) == 1
    (tmp_path / "CURRENT").unlink()
    config = tmp_path / "xemb.yaml"
    config.write_text(f"build: {{root: {tmp_path}}}\n")
    assert main(["publish", "-c", str(config)]) == 4          # nothing is CURRENT yet
    assert "no published version" in capsys.readouterr().err
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["feast", "export", "--root", str(tmp_path)])
    assert args.func(args) == 0


def test_a_yaml_from_before_the_xemb_namespace_gets_a_clear_error(tmp_path: Path) -> None:
    from xemb.feature_repo.repo_config import write_yaml

    path = write_yaml(tmp_path)
    path.write_text(path.read_text().replace("xemb.feature_repo.", "feature_repo."))
    with pytest.raises(FailedPrecondition, match="xemb feast publish"):
        feature_repo.get_feature_store(tmp_path)
