"""The Ray engine's per-item stages at N items: wall time, items/s and peak RSS (this driver
plus every Ray worker and actor process, sampled), importable by ``bench_scale.py`` beside
``scale_offline``'s local-engine figures.

Inputs are the files ``scale_offline`` leaves in a catalogue folder (items.parquet,
semantic.npy, transferable.npy, intents.npz, adapter.onnx, tiny-bert/):

  encode        every title through replicas of the encoder (Ray Data actor pool)
  intents       every transferable vector assigned to its top-m intents (actor pool)
  materialize   every item through replicas of adapter.onnx (actor pool)

and, given a published version with Feast on, ``time_online_writes`` (Feast writers).
Each includes its actors' start (model load); the Ray cluster's own start is timed apart.

    python benchmarks/scale_ray.py --items 20000 [--pool-size 1] [--batch-rows 4096]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _repo  # noqa: E402,F401
import numpy as np  # noqa: E402
import psutil  # noqa: E402

from xemb.settings import XembConfig  # noqa: E402

__all__ = ["RayTiming", "PeakRss", "ray_config", "time_stage", "time_encode", "time_intents",
           "time_materialize", "time_online_writes", "ray_stage_timings"]


@dataclass
class RayTiming:
    stage: str
    items: int
    wall_s: float
    peak_rss_mb: float  # driver + Ray workers, summed at the sampled peak

    @property
    def items_per_s(self) -> float:
        return self.items / self.wall_s if self.wall_s > 0 else float("nan")


class PeakRss:
    """Peak of (this process's RSS + every descendant Ray worker's, ``ray::*``), sampled
    every ``interval`` s while the context is open. Shared pages (Ray's object store, a
    memory-mapped input) count once per process that touched them: an upper bound."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval, self.peak = interval, 0.0
        self._stop = threading.Event()
        self._me = psutil.Process()

    def _sample(self) -> float:
        total = self._me.memory_info().rss
        for p in self._me.children(recursive=True):
            try:
                if p.cmdline()[:1] and p.cmdline()[0].startswith("ray::"):
                    total += p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, IndexError):
                continue
        return total / 2**20

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._sample())

    def __enter__(self) -> PeakRss:
        self.peak = self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


def time_stage(stage: str, items: int, fn: Callable[[], Any]) -> RayTiming:
    with PeakRss() as rss:
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
    return RayTiming(stage, items, wall, rss.peak)


def ray_config(cfg: XembConfig, folder: Path, pool_size: int = 1, batch_rows: int = 4096,
               num_cpus: float = 1.0, address: str | None = None) -> XembConfig:
    """``cfg`` on the Ray engine, its scratch shards under ``folder``."""
    ray = cfg.build.ray.model_copy(update={"pool_size": pool_size, "batch_rows": batch_rows,
                                           "num_cpus": num_cpus})
    build = cfg.build.model_copy(update={"engine": "ray", "root": folder, "ray": ray,
                                         "ray_address": address})
    return cfg.model_copy(update={"build": build})


def time_encode(texts: list[str], cfg: XembConfig) -> RayTiming:
    """Every text through the encoder's replicas (no encode cache: pure encoding)."""
    from xemb.embedders.encode import load_encoder
    from xemb.embedders.engine_ray import RayEncoder

    encoder = load_encoder(cfg.encoder, "cpu")  # fingerprint and dim; the replicas load theirs
    return time_stage("encode", len(texts),
                      lambda: RayEncoder(cfg, encoder, None).encode(texts))


def time_intents(transferable: np.ndarray, centroids: np.ndarray, cfg: XembConfig
                 ) -> RayTiming:
    from xemb.embedders.engine_ray import assign_intents

    return time_stage("intents (assign)", len(transferable), lambda: assign_intents(
        transferable, centroids, cfg.intents.top_m, cfg.intents.temperature, cfg.build))


def time_materialize(onnx: Path, semantic: np.ndarray, domain: np.ndarray, warm: np.ndarray,
                     cfg: XembConfig) -> RayTiming:
    from xemb.embedders.engine_ray import materialize

    return time_stage("materialize", len(semantic),
                      lambda: materialize(onnx, semantic, domain, warm, cfg.build))


def time_online_writes(cfg: XembConfig, version: str) -> RayTiming:
    """Every row of a published ``version`` (under ``cfg.build.root``, Feast set up by its
    build) rewritten into its online slot by Feast writers on Ray (rows are upserted, so
    the slot's values stay the same)."""
    from xemb.embedders.engine_ray import write_online_rows
    from xemb.feature_repo.verify import expected_rows
    from xemb.store import VersionStore

    store = VersionStore(cfg.build.root)
    rows = sum(expected_rows(store, version).values())
    return time_stage("online writes", rows, lambda: write_online_rows(
        store, version, datetime.now(timezone.utc), 10 * cfg.feast.write_batch_size, cfg.build,
        sqlite=cfg.feast.online_store == "sqlite"))


@contextmanager
def _cluster(cfg: XembConfig) -> Iterator[float]:
    from xemb.embedders.engine_ray import _ray, ray_session

    with ray_session(cfg.build):
        t0 = time.perf_counter()
        _ray()  # start (or join) now, so no stage's figure includes it
        yield time.perf_counter() - t0


def _progress(stage: str) -> None:
    print(f"ray: {stage}", file=sys.stderr, flush=True)


def ray_stage_timings(folder: Path, cfg: XembConfig,
                      stages: tuple[str, ...] = ("encode", "intents", "materialize"),
                      online: Sequence[tuple[str, XembConfig, str]] = ()
                      ) -> tuple[float, list[RayTiming]]:
    """(seconds to start the cluster, a timing per stage) over ``scale_offline``'s files in
    ``folder``; ``cfg`` from :func:`ray_config`. ``online``: (label, config, version) of
    published versions whose rows :func:`time_online_writes` rewrites, on the same cluster
    (the timing is named ``online writes (<label>)``)."""
    from scale_offline import Catalogue

    from xemb.embedders.intents import IntentLibrary

    out: list[RayTiming] = []
    with _cluster(cfg) as start_s:
        if stages:
            cat = Catalogue.load(folder)
        if "encode" in stages:
            _progress("encode")
            out.append(time_encode(cat.texts, cfg))
        if "intents" in stages:
            _progress("intents")
            lib = IntentLibrary.load(folder / "intents.npz")
            trans = np.load(folder / "transferable.npy", mmap_mode="r")
            out.append(time_intents(trans, lib.vectors, cfg))
        if "materialize" in stages:
            _progress("materialize")
            sem = np.load(folder / "semantic.npy", mmap_mode="r")
            out.append(time_materialize(folder / "adapter.onnx", sem, cat.domain, cat.warm,
                                        cfg))
        for label, online_cfg, version in online:
            _progress(f"online writes ({label})")
            timing = time_online_writes(online_cfg, version)
            timing.stage = f"online writes ({label})"
            out.append(timing)
    return start_s, out


def main() -> None:
    from scale_offline import bench_config, make_catalogue, run_stage

    from tests.conftest import make_tiny_bert

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--pool-size", type=int, default=1)
    ap.add_argument("--batch-rows", type=int, default=4096)
    ap.add_argument("--cpus", type=int, default=None, help="local Ray CPUs (default: all)")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    folder = args.workdir or Path(tempfile.mkdtemp(prefix="xemb-scale-ray-"))
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "items.parquet").is_file():
        make_catalogue(args.items, folder)
    if not (folder / "tiny-bert").is_dir():
        make_tiny_bert(folder / "tiny-bert")
    base = bench_config(folder / "tiny-bert", 65_536, 1)
    for name in ("encode", "adapt", "item_vectors", "intents", "materialize"):
        if name == "encode" and (folder / "semantic.npy").is_file():
            continue
        run_stage(name, folder, base)  # the local engine's outputs are the Ray stages' inputs
    cfg = ray_config(base, folder, args.pool_size, args.batch_rows)
    if args.cpus:
        ray = cfg.build.ray.model_copy(update={"local_cpus": args.cpus})
        cfg = cfg.model_copy(update={"build": cfg.build.model_copy(update={"ray": ray})})
    start_s, rows = ray_stage_timings(folder, cfg)
    print(f"\nxemb Ray engine, per-item stages at {args.items:,} items "
          f"({platform.machine()}, {os.cpu_count()} cores, local Ray started in "
          f"{start_s:.1f}s; pool {args.pool_size} x {cfg.build.ray.num_cpus:g} CPU, "
          f"{args.batch_rows:,} items per call; encoder: tiny random BERT, torch)\n")
    print("| stage | wall s | items/s | peak RSS MiB (driver + workers) |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r.stage} | {r.wall_s:.1f} | {r.items_per_s:,.0f} | {r.peak_rss_mb:,.0f} |")


if __name__ == "__main__":
    main()
