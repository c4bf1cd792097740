"""The scale benchmark (issue 10): offline stages on the local and the Ray engine side by side,
publishing into SQLite and Redis, and serving at N items. One table.

    python benchmarks/bench_scale.py --items 1000000 [--no-ray] [--no-serving] [--out r.json]

Every figure comes from the functions of ``scale_offline`` (a synthetic catalogue: food-kitchen
vocabulary, Zipf popularity; each local stage in its own process), ``scale_ray`` (the Ray
engine's per-item stages and online writes, on a local Ray), ``bench_feast`` (a synthetic
version published through Feast: rows/s) and ``scale_serving`` (servers as processes on a
synthetic version with the default ``index:``). Times at 10M / 100M items are linear
extrapolations: t(N) = N / (items/s per replica x replicas).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _repo  # noqa: E402,F401
from _timing import emit  # noqa: E402
from scale_offline import STAGES, bench_config, make_catalogue, minilm_rate, run_stage  # noqa: E402

from xemb.settings import XembConfig  # noqa: E402

MiB = 1 << 20
SCALES = (10_000_000, 100_000_000)


def _say(what: str) -> None:
    print(f"[bench_scale] {what}", file=sys.stderr, flush=True)


def offline_local(folder: Path, cfg: XembConfig, n: int) -> dict[str, Any]:
    """Each local stage in its own process: wall s, items/s, peak RSS MiB."""
    out: dict[str, Any] = {}
    for name in STAGES:
        _say(f"local: {name}")
        wall, _start, peak = run_stage(name, folder, cfg)
        out[name] = {"wall_s": wall, "items_per_s": n / wall, "peak_rss_mb": peak}
    return out


def minilm(folder: Path, n: int, sample: int, threads: int) -> dict[str, Any]:
    """MiniLM (torch, CPU) on ``sample`` titles of the catalogue, extrapolated to ``n``. In
    this process: run it last, so no other figure carries torch's memory."""
    import torch
    from scale_offline import Catalogue

    _say(f"local: encode with MiniLM, {sample:,} titles")
    torch.set_num_threads(threads)
    rate = minilm_rate(Catalogue.load(folder).texts[:sample])
    return {"wall_s": n / rate, "items_per_s": rate, "sample": sample}


def publish(backend: str, redis_url: str | None, n: int, dim: int, root: Path
            ) -> dict[str, Any]:
    """A synthetic version (n items, n/10 users x 2 domains, 256 intents) published into a
    fresh ``root``'s Feast online store (``bench_feast``'s publish): rows/s and the peak
    RSS of this process (building the synthetic version included)."""
    from bench_feast import _publish
    from scale_ray import PeakRss

    _say(f"publish: {backend}")
    root.mkdir(parents=True)
    with PeakRss() as rss:
        _, version, m = _publish(root, backend, redis_url, argparse.Namespace(items=n, dim=dim))
    feast: dict[str, Any] = {"online_store": backend}
    if redis_url:
        feast["redis_url"] = redis_url
    cfg = XembConfig.model_validate({"build": {"root": str(root)}, "feast": feast})
    return {"root": str(root), "version": version, "rows": sum(m["rows"].values()),
            "wall_s": m["materialize_s"], "rows_per_s": m["rows_per_s"],
            "peak_rss_mb": rss.peak, "config": cfg}


def on_ray(folder: Path | None, base: XembConfig, published: dict[str, dict[str, Any]],
           args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """The Ray engine's per-item stages (over the local stages' files) and its online writes
    into each published version, on one local Ray."""
    from scale_ray import ray_config, ray_stage_timings

    def on(cfg: XembConfig, where: Path) -> XembConfig:
        cfg = ray_config(cfg, where, args.pool_size, args.batch_rows)
        ray = cfg.build.ray.model_copy(update={"local_cpus": args.ray_cpus})
        return cfg.model_copy(update={"build": cfg.build.model_copy(update={"ray": ray})})

    scratch = folder or scratch
    scratch.mkdir(parents=True, exist_ok=True)
    stages = ("encode", "intents", "materialize") if folder else ()
    online = [(b, on(p["config"], Path(p["root"])), p["version"]) for b, p in published.items()]
    _say("ray: starting a local Ray")
    start_s, timings = ray_stage_timings(scratch, on(base, scratch), stages, online)
    return {"start_s": start_s, **{t.stage: {"wall_s": t.wall_s, "items_per_s": t.items_per_s,
                                             "peak_rss_mb": t.peak_rss_mb, "items": t.items}
                                   for t in timings}}


def serving(n: int, dim: int, calls: int, root: Path) -> dict[str, Any]:
    from scale_serving import measure_serving, publish_scale_version

    _say(f"serving: publishing {n:,} synthetic items (tables, indexes, recall)")
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    publish_scale_version(root, n, dim)
    publish_s = time.perf_counter() - t0
    _say("serving: measuring (two server processes)")
    return {"publish_s": publish_s, **measure_serving(root, calls)}


# ---- the table ------------------------------------------------------------------------
def _cell(r: dict[str, Any] | None, unit: str = "items") -> str:
    if not r:
        return "-"
    rss = f" · {r['peak_rss_mb']:,.0f} MiB" if "peak_rss_mb" in r else ""
    return f"{r['wall_s']:,.1f} s · {r['items_per_s']:,.0f} {unit}/s{rss}"


def _hours(s: float) -> str:
    return f"{s / 3600:,.1f} h" if s >= 3600 else f"{s / 60:,.0f} min"


def _scaled(rate: float, per: float = 1.0) -> str:
    return " / ".join(_hours(n * per / rate) for n in SCALES)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table(res: dict[str, Any]) -> str:
    n = res["items"]
    local, ray, pub = res.get("local", {}), res.get("ray", {}), res.get("publish", {})
    lines = [f"xemb at {n:,} items ({res['machine']}; encoder: {res['encoder']}; "
             f"Ray: local, {res['ray_setup']}"
             + (f", started in {ray['start_s']:.1f} s" if ray else "") + ")", "",
             _row(["stage", "local engine: wall · rate · peak RSS",
                   "Ray engine: wall · rate · peak RSS (driver + workers)", "Ray / local rate",
                   "local at 10M / 100M items"]), _row(["---"] * 5)]
    for name in STAGES:
        if name not in local:
            continue
        lo, ry = local[name], ray.get("intents (assign)" if name == "intents" else name)
        ratio = f"{ry['items_per_s'] / lo['items_per_s']:.2f}x" if ry else \
            "- (training: one Ray task, the local code)" if name in ("adapt", "compose") else "-"
        label = "intents (local: k-means + assign + labels; Ray: assign)" \
            if name == "intents" else name
        lines.append(_row([label, _cell(lo), _cell(ry), ratio, _scaled(lo["items_per_s"])]))
    if "encode_minilm" in local:
        m = local["encode_minilm"]
        lines.append(_row([f"encode with MiniLM ({m['sample']:,} titles, extrapolated)",
                           f"{m['wall_s']:,.0f} s · {m['items_per_s']:,.0f} items/s", "-", "-",
                           _scaled(m["items_per_s"])]))
    for backend in ("sqlite", "redis"):
        if backend not in pub:
            continue
        p, label = pub[backend], f"publish into {backend} ({pub[backend].get('rows', 0):,} rows)"
        if "skipped" in p:
            lines.append(_row([f"publish into {backend}", p["skipped"], "-", "-", "-"]))
            continue
        ry = ray.get(f"online writes ({backend})")
        ratio = f"{ry['items_per_s'] / p['rows_per_s']:.2f}x" if ry else "-"
        lo = {"wall_s": p["wall_s"], "items_per_s": p["rows_per_s"],
              "peak_rss_mb": p["peak_rss_mb"]}
        lines.append(_row([label, _cell(lo, "rows"), _cell(ry, "rows"), ratio,
                           _scaled(p["rows_per_s"], p["rows"] / n)]))
    if "serving" in res:
        lines += _serving_rows(res["serving"])
    return "\n".join(lines)


def _serving_rows(r: dict[str, Any]) -> list[str]:
    vb, n = r["vector_bytes"], r["items"]
    one, second = r["one"], r["second"]
    idx = r["index"] or {}
    kinds = "; ".join(f"{d}: {x['type']}, {x['items']:,} items, "
                      f"{x.get('recall_at_100', float('nan')):.3f}" for d, x in idx.items())
    at = " / ".join(f"{vb * s / n / 2**30:,.1f} GiB" for s in SCALES)
    rows = [
        ("serving: publish the synthetic version (tables, indexes, recall tuning)",
         f"{r['publish_s']:,.0f} s", "-"),
        ("serving: vector bytes (3 parts, float32, d={})".format(r["dim"]),
         f"{vb / MiB:,.0f} MiB", at),
        ("serving: load_version / server start to serving",
         f"{r['load_s']:.2f} s / {r['start_s']:.2f} s", "-"),
        ("serving: one server USS / PSS (warm)",
         f"{one['uss'] / MiB:,.0f} / {one['pss'] / MiB:,.0f} MiB "
         f"(USS {one['uss'] / vb:.2f}x vectors; goal < 2x)", "-"),
        ("serving: second server on the same root, USS / PSS",
         f"{second['uss'] / MiB:,.0f} / {second['pss'] / MiB:,.0f} MiB "
         f"(USS {second['uss'] / vb:.2f}x vectors; goal < 1x)", "-"),
        ("serving: GetItemEmbeddings 100 ids p50 / p99", "{:.2f} / {:.2f} ms".format(*r["get100"]),
         "-"),
        (f"serving: Retrieve k=100 ({r['retrieve_domain']}) p50 / p99",
         "{:.2f} / {:.2f} ms".format(*r["retrieve"]), "-"),
        ("serving: recall@100 at publish per domain (index chosen by size)", kinds, "-"),
        ("serving: recall@100 through the server (50 noisy queries)",
         f"{r['served_recall']:.3f}", "-"),
    ]
    return [_row([a, b, "-", "-", c]) for a, b, c in rows]


# ---- main ------------------------------------------------------------------------------
def run(args: argparse.Namespace, folder: Path, tmp: Path) -> dict[str, Any]:
    """Every part not skipped; scratch roots under ``tmp``, the catalogue in ``folder``."""
    n = args.items
    folder.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {
        "items": n, "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU only, "
                               f"{args.threads} thread(s) per local stage",
        "encoder": str(args.encoder) if args.encoder else "tiny random BERT (2 layers, 32)",
        "ray_setup": f"pool {args.pool_size} x 1 CPU, {args.batch_rows:,} items per call"}
    base = None
    if not args.no_offline:
        if not (folder / "items.parquet").is_file():
            _say(f"catalogue: {n:,} items")
            make_catalogue(n, folder)
        encoder = args.encoder
        if encoder is None:
            from tests.conftest import make_tiny_bert

            encoder = folder / "tiny-bert"
            if not encoder.is_dir():
                make_tiny_bert(encoder)
        base = bench_config(encoder, args.batch_items, args.threads)
        res["local"] = offline_local(folder, base, n)
    with ExitStack() as stack:
        published: dict[str, dict[str, Any]] = {}
        if not args.no_publish:
            published["sqlite"] = publish("sqlite", None, n, args.dim, tmp / "sqlite")
            if not args.no_redis:
                from tests.helpers.services import redis_binary, redis_server

                if redis_binary():
                    url = stack.enter_context(redis_server())
                    published["redis"] = publish("redis", url, n, args.dim, tmp / "redis")
                else:
                    res.setdefault("publish", {})["redis"] = {
                        "skipped": "redis-server not installed"}
        res.setdefault("publish", {}).update(
            {b: {k: v for k, v in p.items() if k != "config"} for b, p in published.items()})
        if not args.no_ray and (base is not None or published):
            res["ray"] = on_ray(folder if base is not None else None,
                                base or XembConfig(), published, args, tmp / "ray")
    if not args.no_serving:
        res["serving"] = serving(n, args.dim, args.calls, tmp / "serving")
    if base is not None and args.minilm_sample:
        res["local"]["encode_minilm"] = minilm(folder, n, args.minilm_sample, args.threads)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--encoder", type=Path, default=None,
                    help="encoder model folder (default: a tiny random 2-layer BERT)")
    ap.add_argument("--minilm-sample", type=int, default=1000,
                    help="titles MiniLM encodes to extrapolate its encode time (0: skip)")
    ap.add_argument("--batch-items", type=int, default=65_536)
    ap.add_argument("--threads", type=int, default=1, help="torch/ORT threads, local stages")
    ap.add_argument("--dim", type=int, default=64, help="vector width of publish/serving")
    ap.add_argument("--pool-size", type=int, default=1, help="Ray actors per stage")
    ap.add_argument("--batch-rows", type=int, default=4096, help="items per Ray call")
    ap.add_argument("--ray-cpus", type=int, default=None, help="local Ray CPUs (default all)")
    ap.add_argument("--calls", type=int, default=500, help="calls per serving latency")
    for part in ("offline", "ray", "publish", "redis", "serving"):
        ap.add_argument(f"--no-{part}", action="store_true", help=f"skip {part}")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep the catalogue and local stage outputs here (a rerun reuses them)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="xemb-scale-") as tmp:  # removed at the end
        res = run(args, args.workdir or Path(tmp) / "catalogue", Path(tmp))
    emit(table(res), res, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
