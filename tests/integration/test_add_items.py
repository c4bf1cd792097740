"""``xemb add-items``: new items between builds, on a copy of the session's tiny build.

The derived version becomes current through the build's lifecycle; gRPC retrieves and
composes with the new items; Feast serves them; old items are untouched bit for bit; bad
input is refused naming the file, row and field, and leaves CURRENT where it was.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

from tests.helpers.synthetic_serving import running
from xemb import layout
from xemb.errors import DataValidationError
from xemb.feature_repo import names
from xemb.settings import load_config
from xemb.store import VersionStore

pytestmark = pytest.mark.integration

TITLES = ["stainless steel garlic press with silicone peeler", "nan",
          "organic dark roast whole bean coffee 2 lb", "cast iron skillet 12 inch pre-seasoned",
          "sea salt kettle chips family size"]


@pytest.fixture
def copied(tiny_build, tmp_path):
    """A private copy of the tiny root with Feast (SQLite) enabled, and its config."""
    root = tmp_path / "root"
    shutil.copytree(tiny_build.root, root, symlinks=True)
    raw = yaml.safe_load(tiny_build.config_path.read_text())
    raw["build"]["root"] = str(root)
    raw["data"]["path"] = str(tiny_build.config_path.parent / "data")
    raw["feast"] = {"enabled": True, "online_store": "sqlite"}
    path = tmp_path / "xemb.yaml"
    path.write_text(yaml.safe_dump(raw))
    return root, path


def _new_items_file(store: VersionStore, tmp_path, n: int = len(TITLES), **overrides) -> tuple:
    manifest = store.manifest(store.current())
    old = pq.read_table(store.path(manifest.version) / layout.ITEMS)
    start = int(old.column("item_id").to_numpy().max()) + 1
    cols = {"item_id": list(range(start, start + n)),
            "domain": [manifest.domains[i % len(manifest.domains)] for i in range(n)],
            "title": TITLES[:n]}
    cols.update(overrides)
    path = tmp_path / "new_items.csv"
    pacsv.write_csv(pa.table(cols), path)
    return path, np.array(cols["item_id"], np.int64), cols["domain"]


def _run_cli(capsys, config, file) -> dict:
    from xemb.cli import main

    assert main(["add-items", "-c", str(config), str(file)]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _vectors(table: pa.Table, column: str) -> np.ndarray:
    col = table.column(column).combine_chunks()
    return col.flatten().to_numpy().reshape(len(col), -1)


def test_add_items_end_to_end(copied, tmp_path, capsys):
    root, config = copied
    store = VersionStore(root)
    base = store.current()
    file, new_ids, new_domains = _new_items_file(store, tmp_path)

    out = _run_cli(capsys, config, file)

    version = out["version"]
    assert store.current() == version != base and out["derived_from"] == base
    assert store.state(version) == "current"
    assert store.is_live(version) and version in store.list_ids()
    manifest, old_m = store.manifest(version), store.manifest(base)
    assert manifest.params["derived_from"] == base
    assert manifest.counts["items"] == old_m.counts["items"] + len(new_ids)
    assert "not evaluated" in manifest.metrics["quality"]["note"]
    for rel in (layout.COMPOSER_ONNX, layout.ADAPTER_ONNX, layout.ENCODER_ONNX,
                layout.INTENTS, layout.USERS):
        assert manifest.files[rel] == old_m.files[rel]

    old = pq.read_table(store.path(base) / layout.ITEMS)
    new = pq.read_table(store.path(version) / layout.ITEMS)
    assert new.schema == old.schema
    ids = new.column("item_id").to_numpy()
    assert (np.diff(ids) > 0).all()
    kept = new.filter(pc.is_in(new["item_id"], old["item_id"]))
    for col in (*layout.VECTOR_PARTS, "intent_ids", "intent_weights", "warm", "text"):
        assert kept.column(col).equals(old.column(col)), col  # old items bit for bit
    added = new.filter(pc.is_in(new["item_id"], pa.array(new_ids)))
    assert added.column("warm").to_pylist() == [False] * len(new_ids)
    assert "nan" in added.column("text").to_pylist()  # a title that reads nan stays text
    w = _vectors(added, "intent_weights")
    assert w.shape[1] == manifest.params["top_m"] and np.allclose(w.sum(1), 1, atol=1e-5)

    # the published encoder + adapter's text path, as the server's EncodeItems computes it
    full = _vectors(added, "full")
    with running(root) as (_, client):
        for i, item_id in enumerate(added.column("item_id").to_pylist()):
            dom = added.column("domain")[i].as_py()
            hit = client.retrieve(dom, k=5, vector=full[i])
            assert hit.version == version and hit.item_ids[0] == item_id
            assert client.retrieve(dom, k=5, item_id=item_id).version == version
        olds = old.column("item_id").to_numpy()[:3].tolist()
        user = client.compose_user_intent([*olds, int(new_ids[0]), int(new_ids[1])],
                                          target_domain=new_domains[0])
        assert user.version == version and user.items_used == 5
        assert not len(user.unknown_item_ids) and np.isfinite(user.vector).all()
        assert client.get_item_embeddings(new_ids).found.all()

    got = _feast(root, added.column("item_id").to_numpy(), ["full", names.VERSION_FIELD])
    assert np.asarray(got["full"], np.float32).tobytes() == full.astype(np.float32).tobytes()
    assert set(got[names.VERSION_FIELD]) == {version}


def _feast(root, ids, features) -> dict:
    from xemb.feature_repo import get_feature_store

    fs = get_feature_store(root)
    return fs.get_online_features(features=[f"{names.ITEM_VIEW}:{f}" for f in features],
                                  entity_rows=[{names.ITEM_KEY: int(i)} for i in ids]).to_dict()


def test_add_items_again_builds_on_the_derived_version(copied, tmp_path, capsys):
    root, config = copied
    store = VersionStore(root)
    file, _, _ = _new_items_file(store, tmp_path, n=2)
    first = _run_cli(capsys, config, file)["version"]
    file, ids, _ = _new_items_file(store, tmp_path, n=3)
    out = _run_cli(capsys, config, file)
    version = out["version"]
    assert out["derived_from"] == first and store.current() == version
    assert store.manifest(version).counts["items"] == store.manifest(first).counts["items"] + 3
    # the first derived version's ready slot seeded this one: only the new rows were written
    metrics = json.loads((root / "feast" / "metrics" / f"{version}.json").read_text())
    assert metrics["derived_from"] == first and metrics["rows_written"] == 3
    table = pq.read_table(store.path(version) / layout.ITEMS)
    some = np.concatenate([ids, table.column("item_id").to_numpy()[:5]])
    want = table.take(pc.index_in(pa.array(some), table.column("item_id")))
    got = _feast(root, some, ["full", names.VERSION_FIELD])
    assert np.asarray(got["full"], np.float32).tobytes() == _vectors(want, "full").tobytes()
    assert set(got[names.VERSION_FIELD]) == {version}


@pytest.mark.parametrize("case,row,field", [
    ("existing", 2, "item_id"), ("repeated", 3, "item_id"), ("domain", 2, "domain"),
    ("empty", 3, "title")])
def test_bad_input_is_refused_with_file_row_field(copied, tmp_path, case, row, field):
    from xemb.add_items import add_items

    root, config = copied
    store = VersionStore(root)
    base = store.current()
    old_ids = pq.read_table(store.path(base) / layout.ITEMS).column("item_id").to_pylist()
    file, ids, domains = _new_items_file(store, tmp_path, n=3)
    ids, domains, titles = ids.tolist(), list(domains), TITLES[:3]
    if case == "existing":
        ids[1] = old_ids[0]
    elif case == "repeated":
        ids[2] = ids[0]
    elif case == "domain":
        domains[1] = "garden"
    else:
        titles[2] = "   "
    file, _, _ = _new_items_file(store, tmp_path, n=3, item_id=ids, domain=domains,
                                 title=titles)
    with pytest.raises(DataValidationError) as err:
        add_items(load_config(config), file)
    assert err.value.file == str(file) and err.value.row == row and field in err.value.field
    assert store.current() == base and store.list_ids()[-1] == base
    assert not (root / "staging").exists() or not any((root / "staging").iterdir())
