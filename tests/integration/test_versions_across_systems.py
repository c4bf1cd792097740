"""One version per request across gRPC and Feast; one switch record both follow; roots that
can be copied (issue 7, items 1 and 3)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.helpers.synthetic_serving import clone_version, publish_synthetic, running
from xemb import layout
from xemb.errors import FailedPrecondition, InvalidArgument, NotPublished
from xemb.feature_repo import get_feature_store, names, publish_to_feast
from xemb.feature_repo.publish import after_switch
from xemb.settings import XembConfig
from xemb.store import VersionStore

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:On demand feature view:RuntimeWarning")]


def _switch(store: VersionStore, version: str, reason: str = "build") -> None:
    store.set_current(version, reason=reason)
    after_switch(store)


@pytest.fixture()
def two_versions(tmp_path: Path) -> tuple[VersionStore, str, str]:
    """v1 then v2 (different vectors: v2 = 3 x v1), both in Feast, v2 current."""
    store = VersionStore(tmp_path / "root")
    cfg = XembConfig.model_validate({"build": {"root": str(store.root)}})
    v1 = publish_synthetic(store.root, n_items=80, make_current=False).version
    v2 = clone_version(store.root, v1, scale=3.0).version
    for v in (v1, v2):
        publish_to_feast(cfg, store, v)
        _switch(store, v)
    return store, v1, v2


def _rank(fs: Any, item_ids: list[int], vector: np.ndarray, version: str | None
          ) -> dict[str, list]:
    rows = [{"item_id": int(i), names.REQUEST_VECTOR: vector.tolist(),
             **({names.REQUEST_VERSION: version} if version else {})} for i in item_ids]
    feats = ["item_embeddings:full", "item_embeddings:xemb_version",
             "item_user_affinity:affinity_dot"]
    return fs.get_online_features(features=feats, entity_rows=rows).to_dict()


def _versions(fs: Any, item_ids: list[int]) -> list[str]:
    return fs.get_online_features(features=["item_embeddings:xemb_version"],
                                  entity_rows=[{"item_id": i} for i in item_ids]
                                  ).to_dict()[names.VERSION_FIELD]


def test_a_grpc_vector_is_scored_in_feast_on_its_own_version(two_versions) -> None:
    """Issue 7.1: for 3.4 s gRPC composed on the new version while Feast scored the old one,
    and nothing noticed. The vector's version now travels with it and Feast answers from it."""
    store, v1, v2 = two_versions
    fs = get_feature_store(store.root)
    ids = pq.read_table(store.path(v1) / layout.ITEMS, columns=["item_id"]).column(
        "item_id").to_pylist()[:5]
    with running(store.root, keep_loaded=2) as (server, client):
        server.holder.switch_to(v1)  # a server that has not seen the switch yet
        user = client.compose_user_intent(ids[:3], target_domain="grocery", version=v1)
        assert user.version == v1    # the client result names the vector's version
        got = _rank(fs, ids, user.vector, user.version)
        assert set(got[names.VERSION_FIELD]) == {v1}
        full = client.get_item_embeddings(ids, version=v1).vectors
        np.testing.assert_allclose(got["affinity_dot"], full.astype(np.float64) @ user.vector,
                                   rtol=1e-5)
        assert set(_versions(fs, ids)) == {v2}  # no vector: the current version
        with pytest.raises(InvalidArgument) as err:     # scoring a vector needs its version
            _rank(fs, ids, user.vector, None)
        assert err.value.field == names.REQUEST_VERSION


def test_versions_feast_does_not_serve_are_refused_naming_both(two_versions) -> None:
    store, v1, v2 = two_versions
    cfg = XembConfig.model_validate({"build": {"root": str(store.root)}})
    v3 = clone_version(store.root, v1, scale=5.0).version  # published, never current
    publish_to_feast(cfg, store, v3)
    fs = get_feature_store(store.root)
    vec = np.ones(16, np.float32)
    with pytest.raises(FailedPrecondition, match=f"user_vector_version {v3} .*serving {v2}"):
        _rank(fs, [7], vec, v3)
    with pytest.raises(Exception, match="one request, one version"):
        fs.get_online_features(features=["item_embeddings:full"], entity_rows=[
            {"item_id": 7, names.REQUEST_VERSION: v1},
            {"item_id": 8, names.REQUEST_VERSION: v2}])


def test_a_version_the_server_refuses_is_not_one_feast_serves(two_versions) -> None:
    """Issue 7.1: when the server refused a version, Feast failed every read (or served
    it) while gRPC kept the old one. Now the refusal is recorded and both follow it."""
    store, v1, v2 = two_versions
    fs = get_feature_store(store.root)
    vec = np.ones(16, np.float32)
    with running(store.root) as (server, client):
        assert client.get_version().version == v2
        (store.path(v2) / layout.ITEMS).write_bytes(b"corrupt")  # breaks after publishing
        server.holder.refused.clear()
        server.holder._loaded.clear()
        server.holder._current = None
        with pytest.raises(Exception, match="checksum mismatch"):
            server.holder.refresh()       # nothing loaded: the refusal is raised
        assert store.is_refused(v2) and store.serving_target() == v1
        server.holder.refresh()
        assert client.get_item_embeddings([7]).version == v1
    assert set(_versions(fs, [7, 14])) == {v1}
    with pytest.raises(FailedPrecondition, match=f"{v2} is not served by Feast"):
        _rank(fs, [7], vec, v2)
    from xemb.cli import main

    assert main(["rollback", "--root", str(store.root), "--to", v2]) == NotPublished.exit_code


def test_rollback_accepts_only_fully_published_versions(two_versions, capsys) -> None:
    """Issue 7.1/7.2: `xemb rollback --to` a killed build's version exited 0."""
    from xemb.cli import main

    store, v1, v2 = two_versions
    failed = clone_version(store.root, v1, scale=2.0).version
    store.ledger_dir.joinpath(f"{failed}.published.json").unlink()  # as a killed build leaves
    assert main(["rollback", "--root", str(store.root), "--to", failed]) == 4
    assert "never fully published" in capsys.readouterr().err
    unready = clone_version(store.root, v1, scale=4.0).version       # published, no Feast slot
    assert main(["rollback", "--root", str(store.root), "--to", unready]) == 4
    assert "no ready Feast online slot" in capsys.readouterr().err
    assert main(["rollback", "--root", str(store.root)]) == 0
    assert json.loads(capsys.readouterr().out) == {"current": v1}
    assert store.current() == v1 and store.switches()[-1].reason == "rollback"
    assert main(["versions", "--root", str(store.root)]) == 0
    listed = {r["version"] for r in json.loads(capsys.readouterr().out)}
    assert failed not in listed and {v1, v2} <= listed


def test_a_root_copied_with_cp_a_serves_from_the_copy(two_versions, tmp_path: Path) -> None:
    """Issue 7.3: a copied root still answered from the original; with the original gone,
    Feast made an empty registry and said "Feature service ... does not exist"."""
    store, v1, v2 = two_versions
    original = store.root
    copy = tmp_path / "elsewhere" / "root"
    copy.parent.mkdir()
    subprocess.run(["cp", "-a", str(original), str(copy)], check=True)
    leaked = [str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file()
              and str(original).encode() in p.read_bytes()]
    assert leaked == []                 # nothing in the root names where it was built
    shutil.rmtree(original)
    copied = VersionStore(copy)
    ids = [7, 14, 21]
    fs = get_feature_store(copy)
    got = fs.get_online_features(features=["item_embeddings:full"],
                                 entity_rows=[{"item_id": i} for i in ids]).to_dict()
    with running(copy) as (_, client):
        served = client.get_item_embeddings(ids)
        assert served.version == v2
        assert np.asarray(got["full"], np.float32).tobytes() == served.vectors.tobytes()
    _switch(copied, v1, "rollback")     # the copy's own switch, followed by its own Feast
    got = _rank(fs, ids, np.ones(16, np.float32), v1)
    assert set(got[names.VERSION_FIELD]) == {v1}
    entity_df = pd.DataFrame({"item_id": ids, "event_timestamp": [pd.Timestamp.now(tz="UTC")]
                              * len(ids)})
    hist = fs.get_historical_features(entity_df=entity_df,
                                      features=["item_embeddings:xemb_version"]).to_df()
    assert set(hist[names.VERSION_FIELD]) == {v1}
    shutil.rmtree(copy)
    with pytest.raises(FailedPrecondition, match="does not exist"):
        fs.get_online_features(features=["item_embeddings:full"], entity_rows=[{"item_id": 7}])
    code = ("from feast import FeatureStore; import sys; "
            f"FeatureStore(repo_path={str(copy / 'feast')!r}).get_feature_service('xemb_items')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0 and "feature_store.yaml" in out.stderr.splitlines()[-1]
    with pytest.raises(FailedPrecondition, match="not found: nothing was published"):
        get_feature_store(copy)
