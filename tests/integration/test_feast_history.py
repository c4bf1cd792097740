"""Point-in-time training data: each row gets the version that was current at its time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from feature_repo import get_feature_store, names, publish_to_feast
from tests.helpers.synthetic_feast import derive_version, make_version
from xemb import layout
from xemb.settings import XembConfig
from xemb.store import VersionStore

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:On demand feature view:RuntimeWarning")]


def _by_key(store: VersionStore, version: str, name: str, keys: tuple[str, ...]) -> dict:
    return {tuple(r[k] for k in keys): r
            for r in pq.read_table(store.path(version) / name).to_pylist()}


def test_historical_features_pick_the_version_current_at_each_row(tmp_path: Path) -> None:
    store = VersionStore(tmp_path)
    cfg = XembConfig.model_validate({"build": {"root": str(tmp_path)}})
    t1 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=3)
    t2 = t1 + timedelta(days=1)
    v1 = make_version(store, n_items=40, n_users=10, created_at=t1)
    publish_to_feast(cfg, store, v1)
    store.set_current(v1)
    v2 = derive_version(store, v1, seed=5, created_at=t2)
    publish_to_feast(cfg, store, v2)
    store.set_current(v2)

    items = {v: _by_key(store, v, layout.ITEMS, ("item_id",)) for v in (v1, v2)}
    users = {v: _by_key(store, v, layout.USERS, ("user_id", "target_domain")) for v in (v1, v2)}
    when = {t1 + timedelta(hours=1): v1, t2 - timedelta(seconds=1): v1, t2: v2,
            t2 + timedelta(hours=5): v2}
    item_ids, user_keys = list(items[v1])[:12], list(users[v1])[:12]
    rng = np.random.default_rng(0)
    rows = []
    for ts in when:
        for (item,), (user, domain) in zip(item_ids, user_keys, strict=True):
            rows.append({"row": len(rows), "item_id": item, "user_id": user,
                         "target_domain": domain, "event_timestamp": ts,
                         "user_vector": rng.standard_normal(16).astype(np.float32).tolist()})
    entity_df = pd.DataFrame(rows)

    fs = get_feature_store(tmp_path)
    out = fs.get_historical_features(
        entity_df=entity_df, features=fs.get_feature_service(names.RANKING_SERVICE)).to_df()
    assert len(out) == len(rows)
    for rec in out.to_dict("records"):
        src = rows[rec["row"]]
        version = when[src["event_timestamp"]]
        item = items[version][(src["item_id"],)]
        user = users[version][(src["user_id"], src["target_domain"])]
        assert rec[names.VERSION_FIELD] == version
        assert np.asarray(rec["full"], np.float32).tobytes() == \
            np.asarray(item["full"], np.float32).tobytes()
        assert np.asarray(rec["vector"], np.float32).tobytes() == \
            np.asarray(user["vector"], np.float32).tobytes()
        u = np.asarray(src["user_vector"], np.float32).astype(np.float64)
        f = np.asarray(item["full"], np.float32).astype(np.float64)
        assert abs(rec["affinity_dot"] - float(u @ f)) <= 1e-6
