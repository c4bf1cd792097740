"""Latency and throughput of the gRPC service beside Feast's get_online_features.

One run prints one table: p50/p99 latency (sequential calls from one client) and throughput
(``--concurrency`` client threads) for GetItemEmbeddings with 1/100/1,000 ids, ComposeUserIntent
with a 50-item history, Retrieve with k=100, and Feast's get_online_features for the same
1/100/1,000 items from the online store the same version was published into; then faiss
recall@100 against exact search. The server runs in its own process (``xemb serve``), as in
production, so client and server do not share a GIL.

    python benchmarks/bench_serving.py -c examples/food-kitchen/xemb.yaml
    python benchmarks/bench_serving.py --synthetic          # no build needed (random vectors)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import yaml

from xemb.serving.client import XembClient
from xemb.serving.retrieval import SearchKnobs
from xemb.serving.version import LoadedVersion, load_version
from xemb.settings import XembConfig, load_config
from xemb.store import VersionStore


def latency(fn: Callable[[], object], seconds: float, max_calls: int = 5000) -> np.ndarray:
    for _ in range(20):
        fn()
    out: list[float] = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop and len(out) < max_calls:
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return np.array(out) * 1e3


def throughput(fn: Callable[[], object], seconds: float, threads: int) -> float:
    counts, stop = [0] * threads, time.perf_counter() + seconds

    def run(i: int) -> None:
        while time.perf_counter() < stop:
            fn()
            counts[i] += 1

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(counts) / seconds


def start_server(config_path: Path, root: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "xemb.cli", "serve", "-c", str(config_path),
                             "--root", str(root), "--port", "0", "--log-level", "WARNING"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, int(line.rsplit(":", 1)[1])


def feast_fetcher(cfg: XembConfig, root: Path, version: str
                  ) -> Callable[[np.ndarray], np.ndarray] | None:
    """get_online_features for item ``full`` vectors from the Feast online store the version
    was published into (publishing it first when needed); None when Feast is not set up."""
    try:
        from xemb.feature_repo import get_feature_store, names, publish_to_feast
    except ImportError:
        return None
    cfg = cfg.model_copy(update={"build": cfg.build.model_copy(update={"root": root})})
    if not names.yaml_path(root).is_file():
        publish_to_feast(cfg, VersionStore(root), version)
    fs = get_feature_store(root)
    feature = f"{names.ITEM_VIEW}:full"

    def fetch(ids: np.ndarray) -> np.ndarray:
        rows = [{names.ITEM_KEY: int(i)} for i in ids]
        got = fs.get_online_features(features=[feature], entity_rows=rows).to_dict()
        return np.asarray(got["full"], np.float32)

    return fetch


def recall_at(v: LoadedVersion, queries: np.ndarray, domain: int, k: int = 100) -> float:
    index = v.indexes[domain]
    exact_index = type(index)(index.ids, index.matrix, None, index.knobs)
    none, hits = np.empty(0, np.int64), 0
    for q in queries:
        got, _, _ = index.search(q, k, none)
        want, _, _ = exact_index.search(q, k, none)
        hits += len(np.intersect1d(got, want))
    return hits / (k * len(queries))


def _histories(v: LoadedVersion, rng: np.random.Generator, n: int, length: int) -> list:
    return [rng.choice(v.items.ids, length, replace=False) for _ in range(n)]


def _user_vectors(v: LoadedVersion, histories: list, domain: int) -> np.ndarray:
    out = []
    for h in histories:
        rows, _ = v.items.lookup(h)
        out.append(v.composer.run(v.composer.feed(rows, domain))[0])
    return np.stack(out).astype(np.float32)


Row = tuple[str, float, float, float | None, np.ndarray]  # name, p50, p99, calls/s, all ms


def _row(name: str, ms: np.ndarray, qps: float | None) -> Row:
    return name, float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), qps, ms


def write_json(path: Path, rows: list[Row], notes: list[str]) -> None:
    """The latency file ``xemb report --bench`` reads: every call's latency per case."""
    cases = [{"name": name, "latencies_ms": [round(float(x), 4) for x in ms],
              "throughput_per_s": qps} for name, _, _, qps, ms in rows]
    path.write_text(json.dumps({"cases": cases, "note": "; ".join(notes)}))


def _setup(args: argparse.Namespace, tmp: Path) -> tuple[XembConfig, Path, Path]:
    if args.synthetic:
        import _repo  # noqa: F401  (tests.helpers importable)

        from tests.helpers.synthetic_serving import publish_synthetic

        root = tmp / "root"
        publish_synthetic(root, n_items=36_298, d=64)
        cfg_path = tmp / "xemb.yaml"
        cfg_path.write_text(yaml.safe_dump({"feast": {"online_store": "sqlite"}}))
        return load_config(cfg_path), root, cfg_path
    if args.config is None:
        raise SystemExit("give -c CONFIG (with a published build) or --synthetic")
    cfg = load_config(args.config)
    return cfg, (args.root or cfg.build.root).resolve(), args.config


Case = tuple[str, Callable[[], object]]


def _grpc_cases(c: XembClient, v: LoadedVersion, rng: np.random.Generator,
                args: argparse.Namespace) -> tuple[list, dict[int, np.ndarray]]:
    ids = {n: rng.choice(v.items.ids, n, replace=False) for n in (1, 100, 1000)}
    hist = _histories(v, rng, 64, 50)
    target = v.domains[-1]
    users = _user_vectors(v, hist, len(v.domains) - 1)
    it = iter(range(10**9))
    cases: list[Case] = [(f"GetItemEmbeddings {n:,} ids", partial(c.get_item_embeddings, ids[n]))
                         for n in (1, 100, 1000)]
    cases.append(("ComposeUserIntent 50-item history",
                  lambda: c.compose_user_intent(hist[next(it) % 64], target_domain=target)))
    cases.append(("Retrieve k=100 (user vector)",
                  lambda: c.retrieve(target, 100, vector=users[next(it) % 64])))
    rows = []
    for name, fn in cases:
        ms = latency(fn, args.seconds)
        rows.append(_row(name, ms, throughput(fn, args.seconds, args.concurrency)))
        print(f"  measured {name}", file=sys.stderr)
    return rows, ids


def _feast_rows(fetch, c: XembClient, ids: dict, args) -> tuple[list, str]:
    same = np.array_equal(fetch(ids[100]), c.get_item_embeddings(ids[100]).vectors)
    rows = []
    for n in (1, 100, 1000):
        call = partial(fetch, ids[n])
        ms = latency(call, args.seconds, max_calls=2000)
        rows.append(_row(f"Feast get_online_features {n:,} items", ms,
                         throughput(call, args.seconds, args.concurrency)))
        print(f"  measured Feast {n}", file=sys.stderr)
    return rows, "identical" if same else "DIFFERENT"


def _print(rows: list, notes: list[str]) -> None:
    print("| case | p50 ms | p99 ms | throughput (calls/s) |")
    print("| --- | ---: | ---: | ---: |")
    for name, p50, p99, qps, _ in rows:
        print(f"| {name} | {p50:.3f} | {p99:.3f} | {qps:,.0f} |" if qps is not None else
              f"| {name} | {p50:.3f} | {p99:.3f} | - |")
    print()
    for note in notes:
        print(f"- {note}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-c", "--config", type=Path)
    p.add_argument("--root", type=Path)
    p.add_argument("--synthetic", action="store_true", help="random version, no build needed")
    p.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    p.add_argument("--concurrency", type=int, default=4, help="client threads for throughput")
    p.add_argument("--no-feast", action="store_true")
    p.add_argument("--json-out", type=Path, default=None,
                   help="also write every call's latency as JSON (for xemb report --bench)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cfg, root, cfg_path = _setup(args, Path(tmp))
        store = VersionStore(root)
        version = store.current()
        s = cfg.serving
        v = load_version(store, version, SearchKnobs(s.ef_search, s.nprobe, s.ann_max_k))
        rng = np.random.default_rng(0)
        proc, port = start_server(cfg_path, root)
        try:
            with XembClient(f"127.0.0.1:{port}", timeout=30) as c:
                rows, ids = _grpc_cases(c, v, rng, args)
                fetch = None if args.no_feast else feast_fetcher(cfg, root, version)
                feast, same = _feast_rows(fetch, c, ids, args) if fetch else ([], "n/a")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        notes = _notes(v, rows, feast, same, rng, args)
        _print(rows + feast, notes)
        if args.json_out:
            write_json(args.json_out, rows + feast, notes)
    return 0


def _notes(v: LoadedVersion, rows: list, feast: list, same: str, rng, args) -> list[str]:
    notes = [f"version {v.version}: {len(v.items):,} items, d={v.dim}, domains "
             f"{v.domains}; composer reads {v.composer.max_len} items; {os.cpu_count()} cores; "
             f"server in its own process; throughput with {args.concurrency} client threads"]
    for code, name in enumerate(v.domains):
        q = _user_vectors(v, _histories(v, rng, 200, 50), code)
        notes.append(f"faiss recall@100 vs exact, {name} ({len(v.indexes[code].ids):,} items, "
                     f"200 composed user vectors): {recall_at(v, q, code):.3f}")
    if feast:
        ratio = feast[1][1] / rows[1][1]
        notes.append(f"p50 at 100 items: Feast / gRPC = {ratio:.1f}x; Feast and gRPC vectors "
                     f"for the same 100 ids: {same}")
    notes.append(f"ComposeUserIntent p99 {rows[3][2]:.3f} ms (goal < 2 ms)")
    return notes


if __name__ == "__main__":
    sys.exit(main())
