"""Serving at N items: load time, memory of one and of two server processes on one root,
GetItemEmbeddings / Retrieve latency, recall@100 of the chosen index. One table.

    python benchmarks/scale_serving.py --items 200000          # synthetic version, d=64
    python benchmarks/scale_serving.py --root DIR              # an existing published root

Servers run as separate processes (``xemb serve``), each warmed by fetching every item's three
vectors once (so all vector pages are mapped in), then measured from /proc/PID/smaps_rollup:
USS (pages only this process maps) and PSS (shared pages split between their mappers). The
functions are what ``benchmarks/bench_scale.py`` imports: :func:`publish_scale_version`,
:func:`measure_serving`, :func:`format_table`.
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _repo  # noqa: F401  (tests.helpers importable)
import numpy as np
from _timing import percentiles

from xemb.serving.client import XembClient
from xemb.serving.retrieval import SearchKnobs
from xemb.serving.version import load_version
from xemb.store import VersionStore

__all__ = ["publish_scale_version", "memory", "start_server", "measure_serving", "format_table"]

MiB = 1 << 20


def publish_scale_version(root: Path, n_items: int, d: int = 64, seed: int = 0) -> str:
    """A synthetic version of ``n_items`` clustered items (two domains, 1:2), published with
    the .arrow tables and indexes chosen and tuned by the default ``index:`` config."""
    from tests.helpers.synthetic_serving import publish_synthetic
    from xemb.settings.index import IndexConfig

    return publish_synthetic(root, n_items=n_items, d=d, seed=seed, ipc=True,
                             index=IndexConfig(), clustered=True).version


def memory(pid: int) -> dict[str, int]:
    """Bytes of ``rss``, ``pss`` and ``uss`` (Private_Clean + Private_Dirty) of a process."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0]) * 1024
    return {"rss": fields["Rss"], "pss": fields["Pss"],
            "uss": fields["Private_Clean"] + fields["Private_Dirty"]}


def start_server(root: Path, config: Path) -> tuple[subprocess.Popen, int, float]:
    """``xemb serve`` on a free port; (process, port, seconds until it served)."""
    from bench_serving import start_server as start

    t0 = time.perf_counter()
    proc, port = start(config, root)
    return proc, port, time.perf_counter() - t0


def _warm(client: XembClient, ids: np.ndarray) -> None:
    for part in ("full", "transferable", "residual"):
        for s in range(0, len(ids), 10_000):
            client.get_item_embeddings(ids[s:s + 10_000], part, timeout=60)


def _served_recall(client: XembClient, matrix: np.ndarray, ids: np.ndarray, domain: str,
                   rng: np.random.Generator, n: int = 50) -> float:
    """recall@100 through the server, queries = item vectors plus noise (not items themselves)."""
    hits = 0
    for row in rng.choice(len(matrix), n, replace=False):
        q = (matrix[row] + rng.normal(0, 0.3, matrix.shape[1])).astype(np.float32)
        got = client.retrieve(domain, 100, vector=q).item_ids
        want = ids[np.argpartition(-(matrix @ q), 99)[:100]]
        hits += len(np.intersect1d(got, want))
    return hits / (100 * n)


def measure_serving(root: Path, calls: int = 500) -> dict[str, Any]:
    """Every serving figure of the scale benchmark for the current version under ``root``."""
    store = VersionStore(root)
    version = store.current()
    manifest = store.manifest(version)
    t0 = time.perf_counter()
    v = load_version(store, version, SearchKnobs())
    load_s = time.perf_counter() - t0
    n, d = len(v.items), v.dim
    vector_bytes = sum(a.nbytes for a in v.items.parts.values())
    rng = np.random.default_rng(0)
    sizes = {c: len(ix.ids) for c, ix in v.indexes.items()}
    big = max(sizes, key=lambda c: sizes[c])
    # private copies, then drop the version: pages this process maps would be shared with
    # the servers and leave their USS (and a third of their PSS) under-reported
    all_ids, name = np.array(v.items.ids), v.domains[big]
    ids, matrix = np.array(v.indexes[big].ids), np.array(v.indexes[big].matrix)
    del v
    gc.collect()
    out: dict[str, Any] = {"items": n, "dim": d, "version": version, "load_s": load_s,
                           "vector_bytes": vector_bytes, "index": manifest.metrics.get("index"),
                           "search": manifest.params.get("search")}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "xemb.yaml"
        config.write_text("serving:\n  poll_interval_s: 0\n  max_ids: 10000\n")
        first, port, out["start_s"] = start_server(root, config)
        second = None
        try:
            with XembClient(f"127.0.0.1:{port}", timeout=30) as client:
                _warm(client, all_ids)
                out["one"] = memory(first.pid)
                ids100 = rng.choice(all_ids, 100, replace=False)
                out["get100"] = percentiles(lambda: client.get_item_embeddings(ids100), calls)
                q = matrix[0] + np.float32(0.1)
                out["retrieve"] = percentiles(lambda: client.retrieve(name, 100, vector=q), calls)
                out["served_recall"] = _served_recall(client, matrix, ids, name, rng)
                out["retrieve_domain"] = name
            second, port2, _ = start_server(root, config)
            with XembClient(f"127.0.0.1:{port2}", timeout=30) as client2:
                _warm(client2, all_ids)
            out["first_after"], out["second"] = memory(first.pid), memory(second.pid)
        finally:
            for proc in (first, second):
                if proc is not None:
                    proc.terminate()
                    proc.wait(30)
    return out


def format_table(r: dict[str, Any]) -> str:
    vb = r["vector_bytes"]
    idx = r["index"] or {}
    kinds = ", ".join(f"{dom}: {x['type']} ({x['items']:,} items, recall@100 "
                      f"{x.get('recall_at_100', float('nan')):.3f}, "
                      f"{ {k: x[k] for k in ('ef_search', 'nprobe', 'rerank') if k in x} })"
                      for dom, x in idx.items())
    pss_two = r["first_after"]["pss"] + r["second"]["pss"]
    rows = [
        ("items / dim", f"{r['items']:,} / {r['dim']}"),
        ("vector bytes (3 parts, float32)", f"{vb / MiB:,.0f} MiB"),
        ("load_version (verify checksums + map + smoke)", f"{r['load_s']:.2f} s"),
        ("server start to serving (process)", f"{r['start_s']:.2f} s"),
        ("one server: USS / PSS / RSS (warm)",
         " / ".join(f"{r['one'][k] / MiB:,.0f} MiB" for k in ("uss", "pss", "rss"))),
        ("one server USS / vector bytes", f"{r['one']['uss'] / vb:.2f}x (goal < 2x)"),
        ("second server: USS (its own pages)", f"{r['second']['uss'] / MiB:,.0f} MiB "
         f"({r['second']['uss'] / vb:.2f}x vectors; goal < 1x)"),
        ("two servers: PSS sum / one server's PSS before",
         f"{pss_two / MiB:,.0f} / {r['one']['pss'] / MiB:,.0f} MiB "
         f"(+{(pss_two - r['one']['pss']) / MiB:,.0f} MiB)"),
        ("GetItemEmbeddings 100 ids p50 / p99", "{:.2f} / {:.2f} ms".format(*r["get100"])),
        (f"Retrieve k=100 ({r['retrieve_domain']}) p50 / p99",
         "{:.2f} / {:.2f} ms".format(*r["retrieve"])),
        ("index per domain (recall measured at publish)", kinds),
        ("recall@100 through the server (50 noisy item queries)", f"{r['served_recall']:.3f}"),
    ]
    lines = ["| serving at N items | value |", "| --- | --- |"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--root", type=Path, help="an existing published root (no synthetic build)")
    p.add_argument("--calls", type=int, default=500)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp)
        if args.root is None:
            t0 = time.perf_counter()
            publish_scale_version(root, args.items, args.dim)
            print(f"published {args.items:,} synthetic items in {time.perf_counter() - t0:.1f} s",
                  file=sys.stderr)
        print(format_table(measure_serving(root, args.calls)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
