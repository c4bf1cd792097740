"""Loading a version: verified, complete and smoke-tested, or refused with a reason."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.helpers.synthetic_serving import publish_synthetic
from xemb import layout
from xemb.errors import VersionIntegrityError, VersionNotFound
from xemb.serving.retrieval import SearchKnobs
from xemb.serving.version import load_version
from xemb.store import VersionStore


@pytest.fixture()
def published(tmp_path):
    manifest = publish_synthetic(tmp_path, n_items=120)
    return VersionStore(tmp_path), manifest


def test_loads_tables_bit_identical(published):
    store, manifest = published
    v = load_version(store, manifest.version, SearchKnobs())
    table = pq.read_table(store.path(manifest.version) / layout.ITEMS)
    for part in layout.VECTOR_PARTS:
        want = np.stack(table.column(part).to_pylist()).astype(np.float32)
        assert v.items.parts[part].tobytes() == want.tobytes()
    assert v.items.parts["full"].flags.writeable is False
    rows, found = v.items.lookup(np.array([3, 10**9, 1], np.int64))
    assert found.tolist() == [True, False, True] and v.items.ids[rows[[0, 2]]].tolist() == [3, 1]


def test_corrupted_file_is_refused(published):
    store, manifest = published
    with open(store.path(manifest.version) / layout.ITEMS, "r+b") as f:
        f.seek(100)
        f.write(b"\xff\xff")
    with pytest.raises(VersionIntegrityError, match="checksum"):
        load_version(store, manifest.version, SearchKnobs())


def test_missing_file_is_refused(published):
    store, manifest = published
    (store.path(manifest.version) / layout.COMPOSER_ONNX).unlink()
    with pytest.raises(VersionIntegrityError, match="missing file"):
        load_version(store, manifest.version, SearchKnobs())


def test_version_missing_required_parts_is_refused(tmp_path):
    store = VersionStore(tmp_path)
    version, stage = store.new_staging()
    (stage / layout.ITEMS).write_bytes(b"not parquet")
    from tests.helpers.synthetic_serving import SYNTH_DOMAINS
    from xemb.store import Manifest

    store.commit(stage, Manifest(version=version, created_at="now", domains=SYNTH_DOMAINS,
                                 dims={"embedding": 4}, counts={}))
    with pytest.raises(VersionIntegrityError, match="incomplete"):
        load_version(store, version, SearchKnobs())


def test_unknown_version(published):
    store, _ = published
    with pytest.raises(VersionNotFound):
        load_version(store, "v0-nope", SearchKnobs())
