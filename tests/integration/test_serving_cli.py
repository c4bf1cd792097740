"""`xemb query` against a real server: each method from the shell, JSON out."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers.synthetic_serving import publish_synthetic, running
from xemb.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    publish_synthetic(root, n_items=100)
    with running(root) as (server, _):
        yield f"127.0.0.1:{server.port}"


def _query(capsys, target, *args):
    assert main(["query", "--target", target, *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_every_method_from_the_shell(capsys, target, tmp_path):
    items = _query(capsys, target, "items", "1,2", "999999", "--part", "residual")
    assert items["found"] == [True, True, False] and items["vectors"]["shape"] == [3, 16]
    composed = _query(capsys, target, "compose", "--domain", "kitchen", "--history", "1,2,50")
    assert composed["source"] == "composed" and composed["items_used"] == 3
    stored = _query(capsys, target, "compose", "--domain", "kitchen", "--user", "u1")
    assert stored["source"] == "stored"
    by_item = _query(capsys, target, "retrieve", "--domain", "kitchen", "-k", "3", "--item", "60")
    assert len(by_item["item_ids"]) == 3 and 60 not in by_item["item_ids"]
    np.save(tmp_path / "q.npy", np.ones(16, np.float32))
    by_vec = _query(capsys, target, "retrieve", "--domain", "grocery", "--vector",
                    str(tmp_path / "q.npy"), "--exclude", "1,2")
    assert len(by_vec["item_ids"]) == 10
    encoded = _query(capsys, target, "encode", "--domain", "kitchen", "salt pepper", "mug")
    assert encoded["full"]["shape"] == [2, 16]
    assert _query(capsys, target, "version")["serving"] is True
    assert len(_query(capsys, target, "versions")["versions"]) == 1
    assert _query(capsys, target, "health") == {"status": "SERVING"}


def test_errors_exit_with_the_error_code(capsys, target):
    assert main(["query", "--target", target, "retrieve", "--domain", "toys", "--item", "1"]) == 2
    assert "domain: unknown domain 'toys'" in capsys.readouterr().err


def test_serve_without_a_published_version_fails_fast(capsys, tmp_path):
    cfg = tmp_path / "xemb.yaml"
    cfg.write_text("serving:\n  port: 0\n")
    assert main(["serve", "-c", str(cfg), "--root", str(tmp_path / "empty")]) == 4
    assert "no published version" in capsys.readouterr().err
