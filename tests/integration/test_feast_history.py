"""Point-in-time training data: each row gets the version that was current at its time."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.helpers.synthetic_feast import derive_version, make_version
from xemb import layout
from xemb.errors import FailedPrecondition
from xemb.feature_repo import get_feature_store, names, publish_to_feast
from xemb.feature_repo.publish import after_switch
from xemb.settings import XembConfig
from xemb.store import VersionStore

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:On demand feature view:RuntimeWarning")]


def _by_key(store: VersionStore, version: str, name: str, keys: tuple[str, ...]) -> dict:
    return {tuple(r[k] for k in keys): r
            for r in pq.read_table(store.path(version) / name).to_pylist()}


def _served(store: VersionStore, switches: list, t: datetime) -> str:
    return [s.version for s in switches if s.time <= t][-1]


def test_history_is_what_served_at_each_time_rollbacks_included(tmp_path: Path) -> None:
    """Issue 7.4: rows were stamped with the build time, written before the Feast publish
    succeeded, and rollbacks were ignored. Now each row gets the version CURRENT named at its
    time (switch log), a rollback included, and a build that never served has no rows."""
    store = VersionStore(tmp_path)
    cfg = XembConfig.model_validate({"build": {"root": str(tmp_path)}})
    v1 = make_version(store, n_items=40, n_users=10)
    v2 = derive_version(store, v1, seed=5)
    never = derive_version(store, v1, seed=6)
    for v in (v1, v2, never):
        publish_to_feast(cfg, store, v)
    for v, reason in ((v1, "build"), (v2, "build"), (v1, "rollback")):
        store.set_current(v, reason=reason)
        after_switch(store)
    switches = store.switches()
    assert [s.version for s in switches] == [v1, v2, v1]

    items = {v: _by_key(store, v, layout.ITEMS, ("item_id",)) for v in (v1, v2)}
    users = {v: _by_key(store, v, layout.USERS, ("user_id", "target_domain")) for v in (v1, v2)}
    tick = timedelta(microseconds=1)
    times = [switches[0].time, switches[1].time - tick, switches[1].time,
             switches[2].time - tick, switches[2].time, switches[2].time + timedelta(days=1)]
    item_ids, user_keys = list(items[v1])[:6], list(users[v1])[:6]
    rng = np.random.default_rng(0)
    rows = []
    for ts in times:
        for (item,), (user, domain) in zip(item_ids, user_keys, strict=True):
            rows.append({"row": len(rows), "item_id": item, "user_id": user,
                         "target_domain": domain, "event_timestamp": ts,
                         "user_vector": rng.standard_normal(16).astype(np.float32).tolist(),
                         names.REQUEST_VERSION: _served(store, switches, ts)})
    entity_df = pd.DataFrame(rows)

    fs = get_feature_store(tmp_path)
    service = fs.get_feature_service(names.RANKING_SERVICE)
    out = fs.get_historical_features(entity_df=entity_df, features=service).to_df()
    assert len(out) == len(rows)
    for rec in out.to_dict("records"):
        src = rows[rec["row"]]
        version = src[names.REQUEST_VERSION]
        item = items[version][(src["item_id"],)]
        user = users[version][(src["user_id"], src["target_domain"])]
        assert rec[names.VERSION_FIELD] == version != never
        assert np.asarray(rec["full"], np.float32).tobytes() == \
            np.asarray(item["full"], np.float32).tobytes()
        assert np.asarray(rec["vector"], np.float32).tobytes() == \
            np.asarray(user["vector"], np.float32).tobytes()
        u = np.asarray(src["user_vector"], np.float32).astype(np.float64)
        f = np.asarray(item["full"], np.float32).astype(np.float64)
        assert abs(rec["affinity_dot"] - float(u @ f)) <= 1e-6

    entity_df[names.REQUEST_VERSION] = v2  # a user vector of another version than served
    with pytest.raises(FailedPrecondition, match=f"version '{v2}' but Feast answers from "
                                                 f"version '{v1}'"):
        fs.get_historical_features(entity_df=entity_df, features=service).to_df()
