"""The generated stubs match proto/, and serving imports without torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from xemb.serving import _gen


def test_regenerating_stubs_gives_identical_files(tmp_path):
    pytest.importorskip("grpc_tools")
    for fresh in _gen.generate(tmp_path):
        committed = _gen.REPO / fresh.relative_to(tmp_path)
        assert committed.read_bytes() == fresh.read_bytes(), \
            f"{committed} is stale: run `python -m xemb.serving._gen`"


def test_serving_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import xemb.serving, xemb.serving.server, xemb.serving.client, xemb.serving.cli\n"
            "assert 'transformers' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_proto_package_is_versioned():
    from xemb.v1 import xemb_pb2

    assert xemb_pb2.DESCRIPTOR.package == "xemb.v1"
    methods = {m.name for m in xemb_pb2.DESCRIPTOR.services_by_name["EmbeddingService"].methods}
    assert methods == {"GetItemEmbeddings", "ComposeUserIntent", "Retrieve", "EncodeItems",
                       "GetVersion", "ListVersions", "ComposeUserIntentBatch", "RetrieveBatch"}
