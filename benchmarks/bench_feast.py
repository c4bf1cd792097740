"""Feast layer benchmark: online latency through the ranking service, materialization speed.

    python benchmarks/bench_feast.py [--items 10000] [--dim 64] [--requests 300]

One run publishes a synthetic version into SQLite and into a throwaway redis-server on a
free loopback port, then prints one table. Not a test.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
from contextlib import ExitStack
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import _repo  # noqa: F401  (tests.helpers importable)
import numpy as np
import pyarrow.parquet as pq

from tests.helpers.services import redis_server
from tests.helpers.synthetic_feast import make_version
from xemb import layout
from xemb.feature_repo import get_feature_store, names, publish_to_feast
from xemb.settings import XembConfig
from xemb.store import VersionStore


def _publish(root: Path, backend: str, redis_url: str | None, args: argparse.Namespace
             ) -> tuple[VersionStore, str, dict[str, Any]]:
    feast: dict[str, Any] = {"online_store": backend}
    if redis_url:
        feast["redis_url"] = redis_url
    cfg = XembConfig.model_validate({"build": {"root": str(root)}, "feast": feast})
    store = VersionStore(root)
    version = make_version(store, n_items=args.items, n_users=args.items // 10, dim=args.dim,
                           n_intents=256)
    metrics = publish_to_feast(cfg, store, version)
    store.set_current(version)
    return store, version, metrics


def _feast_materialize_rate(root: Path, version: str, store: VersionStore) -> float:
    """Feast's own `materialize` (dask scan of the offline history) into a fresh slot."""
    fs = get_feature_store(root)
    online = fs._get_provider().online_store
    online.drop_slot(fs.config, version)
    ts = datetime.fromisoformat(store.manifest(version).created_at)
    rows = sum(pq.ParquetFile(store.path(version) / f).metadata.num_rows
               for f in (layout.ITEMS, layout.USERS, layout.INTENTS))
    start = time.perf_counter()
    fs.materialize(ts - timedelta(seconds=1), ts + timedelta(seconds=1), list(names.VIEWS))
    return rows / (time.perf_counter() - start)


def _latency(root: Path, store: VersionStore, version: str, k: int, n: int) -> list[float]:
    fs = get_feature_store(root)
    service = fs.get_feature_service(names.RANKING_SERVICE)
    items = pq.read_table(store.path(version) / layout.ITEMS, columns=["item_id"])
    ids = items.column("item_id").to_numpy()
    users = pq.read_table(store.path(version) / layout.USERS).to_pylist()
    rng = np.random.default_rng(k)
    out = []
    for i in range(n + 20):
        user = users[int(rng.integers(len(users)))]
        rows = [{"item_id": int(x), "user_id": user["user_id"],
                 "target_domain": user["target_domain"], "user_vector": user["vector"],
                 names.REQUEST_VERSION: version}
                for x in rng.choice(ids, size=k, replace=False)]
        start = time.perf_counter()
        fs.get_online_features(features=service, entity_rows=rows)
        if i >= 20:  # warm-up excluded
            out.append((time.perf_counter() - start) * 1e3)
    return out


def _bench(backend: str, redis_url: str | None, args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"bench-feast-{backend}-"))
    try:
        store, version, metrics = _publish(root, backend, redis_url, args)
        res: dict[str, Any] = {"publish": metrics["rows_per_s"]}
        for k in (1, 10, 100):
            lat = _latency(root, store, version, k, args.requests)
            res[k] = (np.percentile(lat, 50), np.percentile(lat, 99))
        res["materialize"] = _feast_materialize_rate(root, version, store)
        return res
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    warnings.filterwarnings("ignore")
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--items", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--backends", default="sqlite,redis")
    args = p.parse_args()
    results = {}
    with ExitStack() as stack:
        for backend in args.backends.split(","):
            url = stack.enter_context(redis_server()) if backend == "redis" else None
            results[backend] = _bench(backend, url, args)
    print(f"\nFeast layer, {args.items} items x dim {args.dim}, {args.requests} requests/size, "
          f"ranking service ({names.RANKING_SERVICE}: item + user features + affinity ODFV)")
    print(f"{'store':8} {'k=1 p50/p99 ms':>16} {'k=10 p50/p99 ms':>17} {'k=100 p50/p99 ms':>18}"
          f" {'publish rows/s':>15} {'feast materialize rows/s':>25}")
    for backend, r in results.items():
        lat = [f"{r[k][0]:.2f}/{r[k][1]:.2f}" for k in (1, 10, 100)]
        print(f"{backend:8} {lat[0]:>16} {lat[1]:>17} {lat[2]:>18} {r['publish']:>15.0f}"
              f" {r['materialize']:>25.0f}")


if __name__ == "__main__":
    main()
