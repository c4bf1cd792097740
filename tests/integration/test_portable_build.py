"""A clone of the project at another path (data, model, root) rebuilds nothing (issue 7.3)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import write_config

pytestmark = pytest.mark.integration


def test_a_clone_at_another_path_rebuilds_nothing(tiny_build, tmp_path: Path) -> None:
    from xemb.embedders.pipeline import build, prepare
    from xemb.settings import load_config
    from xemb.store import VersionStore

    clone = tmp_path / "clone"
    shutil.copytree(Path(tiny_build.config.data.path).resolve(), clone / "data")
    shutil.copytree(tiny_build.config.encoder.model, clone / "model")
    shutil.copytree(tiny_build.root, clone / "root", symlinks=True)
    path = write_config(clone, {"encoder": {"model": "model"}})  # relative to the YAML
    cfg = load_config(path)
    assert prepare(cfg).keys == prepare(tiny_build.config).keys
    manifest = build(cfg)
    assert manifest.version == tiny_build.manifest.version
    assert VersionStore(cfg.build.root).list_ids() == [tiny_build.manifest.version]
