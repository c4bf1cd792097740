"""The snippets in feature_repo/README.md run as written against a published root."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.helpers.synthetic_feast import derive_version, make_version
from xemb import feature_repo
from xemb.feature_repo import publish_to_feast
from xemb.feature_repo.publish import after_switch
from xemb.settings import XembConfig
from xemb.store import VersionStore

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:On demand feature view:RuntimeWarning")]


def test_readme_snippets_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "xemb-data"
    cfg = XembConfig.model_validate({"build": {"root": str(root)}})
    store = VersionStore(root)
    v1 = make_version(store, n_items=120, created_at=datetime(2026, 11, 19, tzinfo=timezone.utc))
    publish_to_feast(cfg, store, v1)
    store.set_current(v1)
    after_switch(store)
    v2 = derive_version(store, v1, created_at=datetime(2026, 11, 21, tzinfo=timezone.utc))
    publish_to_feast(cfg, store, v2)
    store.set_current(v2)
    after_switch(store)

    text = (Path(feature_repo.__file__).parent / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(block, namespace)  # noqa: S102
    out = capsys.readouterr().out
    assert v2 in out and v1 in out   # ranking read v2; the training row at v1's switch got v1
    assert sorted(namespace["training"]["xemb_version"]) == [v1, v2]
