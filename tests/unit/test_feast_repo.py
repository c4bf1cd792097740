"""Feast repo pieces that need no online store: names, config, offline export, id checks."""

from __future__ import annotations

import os
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

import feature_repo
from feature_repo import names
from feature_repo.entities import check_entity_rows, join_key_types
from feature_repo.offline import export_version, publish_time
from feature_repo.repo_config import repo_config_dict
from tests.helpers.synthetic_feast import make_version
from xemb import layout
from xemb.errors import ConfigError, InvalidArgument
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
    code = "import sys, feature_repo, feature_repo.names; print('feast' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_definitions_have_stable_version_free_names(tmp_path: Path) -> None:
    from feature_repo.repo import build_definitions

    defs = build_definitions(tmp_path)
    assert [v.name for v in defs.views] == list(names.VIEWS)
    assert [s.name for s in defs.services] == [names.RANKING_SERVICE, names.ITEMS_SERVICE,
                                               names.USERS_SERVICE, names.INTENTS_SERVICE]
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

    from feature_repo.online_store import XembOnlineStoreConfig

    raw = repo_config_dict(tmp_path, FeastConfig(online_store="redis", redis_url="h:1"))
    assert raw["online_store"]["connection_string"] == "h:1"
    config = RepoConfig(**raw)
    assert isinstance(config.online_store, XembOnlineStoreConfig)
    assert config.online_store.backend == "redis"
    assert config.registry.path == str(names.registry_path(tmp_path.resolve()))


def test_store_for_builds_a_feature_store_from_the_xemb_config(tmp_path: Path) -> None:
    cfg = XembConfig.model_validate({"build": {"root": str(tmp_path)}})
    fs = feature_repo.store_for(cfg)
    assert fs.project == names.PROJECT
    assert fs.config.online_store.root == str(tmp_path.resolve())


def test_export_keeps_vectors_bit_identical_and_stamps_publish_time(tmp_path: Path) -> None:
    store = VersionStore(tmp_path)
    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    version = make_version(store, n_items=30, created_at=created)
    rows = export_version(store, version)
    assert rows == {"items": 30, "users": 80, "intents": 16}
    out = pq.read_table(names.offline_dir(tmp_path, "items") / f"{version}.parquet")
    src = pq.read_table(store.path(version) / layout.ITEMS)
    assert out.schema.field("full").type == pa.list_(pa.float32())
    for part in layout.VECTOR_PARTS:
        a = np.asarray(src.column(part).combine_chunks().flatten(), dtype=np.float32)
        b = np.asarray(out.column(part).combine_chunks().flatten(), dtype=np.float32)
        assert a.tobytes() == b.tobytes()
    assert set(out.column(names.EVENT_TS).to_pylist()) == {created}
    assert set(out.column(names.VERSION_FIELD).to_pylist()) == {version}
    assert publish_time(store.manifest(version)) == created
    export_version(store, version)  # idempotent, and leaves no temp files behind
    assert [p.name for p in names.offline_dir(tmp_path, "items").iterdir()] == [
        f"{version}.parquet"]


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


def test_pointer_follows_os_replace(tmp_path: Path) -> None:
    from feature_repo.online_store import _Pointer

    pointer = _Pointer(tmp_path)
    (tmp_path / "CURRENT").write_text("v1\n")
    assert pointer.read() == "v1"
    tmp = tmp_path / "tmp"
    tmp.write_text("v2\n")
    os.replace(tmp, tmp_path / "CURRENT")
    assert pointer.read() == "v2"


def test_cli_export_and_publish_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    import argparse
    import json

    from feature_repo.cli import main, register

    store = VersionStore(tmp_path)
    version = make_version(store, n_items=10)
    assert main(["export", "--root", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == {version: {"items": 10, "users": 80,
                                                             "intents": 16}}
    config = tmp_path / "xemb.yaml"
    config.write_text(f"build: {{root: {tmp_path}}}\n")
    assert main(["publish", "-c", str(config)]) == 4          # nothing is CURRENT yet
    assert "no published version" in capsys.readouterr().err
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["feast", "export", "--root", str(tmp_path)])
    assert args.func(args) == 0
