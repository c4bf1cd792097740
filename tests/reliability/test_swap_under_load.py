"""Hot swaps and rollbacks between versions with different vectors, under concurrent gRPC
and Feast load: every response is checked against the tables of the version it names.

Failed = any error. Mixed = a response whose vectors are not exactly those of the one
version it names (or, for a gRPC user vector scored in Feast, rows of another version).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.helpers.synthetic_serving import clone_version, publish_synthetic, running
from tests.helpers.wait import wait_for
from xemb import layout
from xemb.feature_repo import get_feature_store, names, publish_to_feast
from xemb.feature_repo.publish import after_switch
from xemb.settings import XembConfig
from xemb.store import VersionStore

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:On demand feature view:RuntimeWarning")]

SWAPS = 24
IDS = np.arange(1, 41, dtype=np.int64) * 7  # ids of the synthetic catalogue (some unknown)


def _tables(store: VersionStore, versions: list[str]) -> dict[str, dict[int, np.ndarray]]:
    out = {}
    for v in versions:
        t = pq.read_table(store.path(v) / layout.ITEMS, columns=["item_id", "full"])
        full = np.stack(t.column("full").to_numpy(zero_copy_only=False)).astype(np.float32)
        out[v] = dict(zip(t.column("item_id").to_pylist(), full, strict=True))
    return out


class Tally:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def add(self, key: str, error: str | None = None) -> None:
        with self.lock:
            self.counts[key] += 1
            if error and len(self.errors) < 5:
                self.errors.append(error)


def _expected(tables: dict, version: str, ids: np.ndarray) -> np.ndarray:
    rows = tables[version]
    return np.stack([rows.get(int(i), np.zeros_like(next(iter(rows.values())))) for i in ids])


def _grpc_reads(client, tables, tally: Tally) -> None:  # type: ignore[no-untyped-def]
    r = client.get_item_embeddings(IDS)
    ok = r.vectors.tobytes() == _expected(tables, r.version, IDS).tobytes()
    tally.add("grpc" if ok else "mixed", None if ok else f"grpc {r.version}")


def _grpc_then_feast(client, fs, tables, tally: Tally) -> None:  # type: ignore[no-untyped-def]
    """The ranking path: a user vector from gRPC, scored in Feast on its version."""
    user = client.compose_user_intent(IDS[:3], target_domain="grocery")
    rows = [{"item_id": int(i), names.REQUEST_VECTOR: user.vector.tolist(),
             names.REQUEST_VERSION: user.version} for i in IDS[:8]]
    got = fs.get_online_features(features=["item_embeddings:full", "item_embeddings:xemb_version",
                                            "item_user_affinity:affinity_dot"],
                                 entity_rows=rows).to_dict()
    known = [i for i, v in enumerate(got[names.VERSION_FIELD]) if v is not None]
    same = {got[names.VERSION_FIELD][i] for i in known} == {user.version}
    want = _expected(tables, user.version, IDS[:8])[known]
    exact = np.asarray([got["full"][i] for i in known], np.float32).tobytes() == want.tobytes()
    tally.add("ranking" if same and exact else "mixed", None if same and exact else "ranking")


def _feast_reads(fs, tables, tally: Tally) -> None:  # type: ignore[no-untyped-def]
    got = fs.get_online_features(features=["item_embeddings:full", "item_embeddings:xemb_version"],
                                 entity_rows=[{"item_id": int(i)} for i in IDS]).to_dict()
    versions = {v for v in got[names.VERSION_FIELD] if v is not None}
    ok = len(versions) == 1
    if ok:
        (v,) = versions
        known = [i for i, x in enumerate(got["full"]) if x is not None]
        want = _expected(tables, v, IDS)[known]
        ok = np.asarray([got["full"][i] for i in known], np.float32).tobytes() == want.tobytes()
    tally.add("feast" if ok else "mixed", None if ok else f"feast {versions}")


def _loop(stop: threading.Event, tally: Tally, call: Callable[[], None]) -> None:
    while not stop.is_set():
        try:
            call()
        except Exception as exc:  # every failure is counted, none may happen
            tally.add("failed", f"{type(exc).__name__}: {exc}"[:300])


def test_swaps_and_rollbacks_under_grpc_and_feast_load(tmp_path: Path) -> None:
    store = VersionStore(tmp_path)
    cfg = XembConfig.model_validate({"build": {"root": str(tmp_path)}})
    v1 = publish_synthetic(tmp_path, n_items=300, make_current=False).version
    versions = [v1] + [clone_version(tmp_path, v1, scale=s).version for s in (3.0, -2.0)]
    for v in versions:
        publish_to_feast(cfg, store, v)
    store.set_current(v1)
    after_switch(store)
    tables = _tables(store, versions)
    tally, stop = Tally(), threading.Event()
    with running(tmp_path, poll_interval_s=0.02, keep_loaded=3) as (server, client):
        stores = [get_feature_store(tmp_path) for _ in range(2)]
        workers = [lambda: _grpc_reads(client, tables, tally),
                   lambda: _grpc_then_feast(client, stores[0], tables, tally),
                   lambda: _feast_reads(stores[1], tables, tally)]
        threads = [threading.Thread(target=_loop, args=(stop, tally, w)) for w in workers]
        start = time.monotonic()
        for t in threads:
            t.start()
        for n in range(SWAPS):
            target = versions[(n + 1) % len(versions)]
            store.set_current(target, reason="rollback" if n % 3 == 2 else "build")
            wait_for(lambda t=target: server.holder.current.version == t, timeout=10,
                     what=f"the server to follow the switch to {target}")
            seen = sum(tally.counts.values())
            wait_for(lambda s=seen: sum(tally.counts.values()) >= s + 6, timeout=10,
                     what="load on the new version")
        stop.set()
        for t in threads:
            t.join(timeout=30)
        elapsed = time.monotonic() - start
    calls = sum(tally.counts.values())
    print(f"\nswap under load: {SWAPS} switches ({SWAPS // 3} rollbacks) in {elapsed:.1f}s, "
          f"{calls} calls {dict(tally.counts)}, failed {tally.counts['failed']}, "
          f"mixed {tally.counts['mixed']}")
    assert tally.counts["failed"] == 0, tally.errors
    assert tally.counts["mixed"] == 0, tally.errors
    assert min(tally.counts[k] for k in ("grpc", "ranking", "feast")) > SWAPS
    assert [s.version for s in store.switches()][-1] == versions[SWAPS % len(versions)]
