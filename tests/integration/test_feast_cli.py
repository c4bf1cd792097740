"""Feast's own CLI on feature_repo/ gives the same online state as ``xemb build``."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.helpers.synthetic_feast import derive_version, make_version
from xemb import feature_repo, layout
from xemb.feature_repo import names, publish_to_feast
from xemb.feature_repo.offline import sync_history
from xemb.settings import XembConfig
from xemb.store import VersionStore

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:On demand feature view:RuntimeWarning")]
REPO = Path(feature_repo.__file__).parent


def _feast(root: Path, *args: str) -> None:
    feast = Path(sys.executable).with_name("feast")
    env = {**os.environ, "XEMB_ROOT": str(root)}
    proc = subprocess.run([str(feast), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def _check_items(fs, store: VersionStore, version: str) -> None:  # type: ignore[no-untyped-def]
    items = pq.read_table(store.path(version) / layout.ITEMS).to_pylist()
    got = fs.get_online_features(features=fs.get_feature_service(names.ITEMS_SERVICE),
                                 entity_rows=[{"item_id": r["item_id"]} for r in items]
                                 ).to_dict()
    assert set(got[names.VERSION_FIELD]) == {version}
    for part in layout.VECTOR_PARTS:
        assert np.asarray(got[part], np.float32).tobytes() == \
            np.asarray([r[part] for r in items], np.float32).tobytes()


def test_feast_apply_and_materialize_incremental_match_xemb_publish(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from feast import FeatureStore

    store = VersionStore(tmp_path)
    v1 = make_version(store, n_items=60, n_users=10)
    store.set_current(v1)
    sync_history(store)                # `xemb feast export`: the offline rows of the switch
    _feast(tmp_path, "apply")
    _feast(tmp_path, "materialize-incremental",
           datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"))
    monkeypatch.setenv("XEMB_ROOT", str(tmp_path))
    reader = FeatureStore(repo_path=str(REPO))
    _check_items(reader, store, v1)

    # The build's own publishing then takes over on the same root and registry.
    cfg = XembConfig.model_validate({"build": {"root": str(tmp_path)}})
    v2 = derive_version(store, v1, seed=3)
    publish_to_feast(cfg, store, v2)
    _check_items(reader, store, v1)
    store.set_current(v2)
    _check_items(reader, store, v2)
    _check_items(feature_repo.get_feature_store(tmp_path), store, v2)
