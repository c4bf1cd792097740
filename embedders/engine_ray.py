"""The Ray engine (``build.engine: ray``): the per-item stages as Ray Data pipelines over
Parquet shards, each a ``map_batches`` over an actor pool of model replicas, and training as
one Ray task per stage.

* encode: the driver looks the content keys up in the encode cache (as the local engine
  does) and writes the missing items as shards, one row per encoder batch, formed exactly as
  the local encoder forms them (length-sorted), so the vectors are the same bit for bit;
  encoder replicas (ONNX Runtime or torch, ``build.device``) run them;
* describe, profile: the generation batches the local generator would form, on an actor
  pool of causal-LM replicas (:class:`RayGenerator`); the driver caches each as it comes;
* encode with a student: the teacher's sample pass and the trained student's catalogue pass
  on encoder replicas (a copy of the student in each); training stays on the driver;
* adapt, compose: the local stage function in one Ray task (a GPU when the cluster has one);
* intents: k-means on the driver (its sample) over the transferable part the driver computes
  with the adapter, then assignment replicas put every item on its top-m intents;
* publish: replicas of the exported adapter ONNX materialize every item's vectors, and
  Feast writers put every row of the version into its online slot.

Every pipeline counts what came back (each item exactly once, every online row) and a
mismatch fails the build. Shards live in a temporary folder under ``<root>/work`` (the root
must be on storage every Ray node mounts at the same path). Ray is imported lazily; nothing
under ``serving/`` imports this module.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from xemb.errors import ConfigError, Unavailable, VersionIntegrityError
from xemb.settings.offline import BuildConfig

if TYPE_CHECKING:
    from xemb.embedders.context import BuildContext
    from xemb.embedders.intents import Assignment
    from xemb.settings import XembConfig
    from xemb.store import VersionStore

__all__ = ["ray_session", "cluster_address", "RayEncoder", "RayGenerator", "materialize",
           "materialize_items", "assign_intents", "assigner", "write_online_rows",
           "train_in_task", "runner"]

Batches = Iterator[tuple[np.ndarray, np.ndarray]]


# ---- the cluster ----------------------------------------------------------------------------
def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ConfigError("the Ray engine needs Ray: pip install 'xemb[ray]'",
                          field="build.engine") from exc
    return ray


@dataclass
class _Session:
    build: BuildConfig
    started: bool = False


_session: _Session | None = None


@contextlib.contextmanager
def ray_session(build: BuildConfig) -> Iterator[None]:
    """Ray for one build: the Ray this process is connected to, else the cluster at
    ``build.ray_address``, else a local Ray; joined or started when a stage first needs it
    (a build with nothing to do starts none), and only what was started here is shut down
    at the end."""
    global _session
    outer, _session = _session, _Session(build)
    try:
        yield
    finally:
        started, _session = _session.started, outer
        if started:
            _import_ray().shutdown()


def _ray(build: BuildConfig | None = None) -> Any:
    """The ``ray`` module, connected: inside :func:`ray_session` with its settings, else with
    ``build``'s (a Ray started outside a session lives until the process exits)."""
    ray = _import_ray()
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        _connect(ray, _session.build if _session else build or BuildConfig())
        _quiet(ray)
        if _session:
            _session.started = True
    return ray


def cluster_address() -> str:
    """The GCS address of the Ray cluster in use (another driver joins it with this)."""
    return str(_ray().get_runtime_context().gcs_address)


def _connect(ray: Any, build: BuildConfig) -> None:
    if build.ray_address is None:
        ray.init(num_cpus=build.ray.local_cpus, include_dashboard=False,
                 object_store_memory=build.ray.object_store_mb << 20)
        _log(f"ray: started a local Ray ({ray.cluster_resources().get('CPU', 0):g} CPUs)")
        return
    try:
        ray.init(address=build.ray_address)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise Unavailable(f"build.ray_address: cannot join the Ray cluster at "
                          f"{build.ray_address}: {exc} (a cluster with token authentication, "
                          f"the default of local clusters since Ray 2.59, needs "
                          f"RAY_AUTH_MODE=token and its token in RAY_AUTH_TOKEN or "
                          f"~/.ray/auth_token)") from exc
    _log(f"ray: joined the Ray cluster at {build.ray_address}")


def _log(msg: str) -> None:
    print(f"[xemb] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _timed(what: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    _log(f"ray: {what} in {time.perf_counter() - t0:.1f}s")


def _quiet(ray: Any) -> None:
    """Ray Data's per-pipeline progress output drowns the build's own log."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


@contextlib.contextmanager
def _scratch(root: Path, what: str) -> Iterator[Path]:
    """A temporary folder under ``<root>/work`` for shards, named like the stage cache's
    temporary folders, so the next build removes one a killed build left."""
    owner = f"{os.getpid()}@{socket.gethostname()}"
    path = root / "work" / f".ray-{what}.{owner}.{secrets.token_hex(4)}.tmp"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _write_shards(folder: Path, tables: Iterable[pa.Table]) -> list[dict[str, Any]]:
    """Each table as a Parquet shard; one work item (its path) per shard."""
    work = []
    for i, table in enumerate(tables):
        pq.write_table(table, folder / f"part-{i:06d}.parquet")
        work.append({"path": str(folder / f"part-{i:06d}.parquet")})
    return work


def _map(work: list[dict[str, Any]], udf: type, ctor: dict[str, Any], build: BuildConfig,
         pool: int | None = None, model: bool = True) -> Iterator[dict[str, np.ndarray]]:
    """``map_batches(udf)`` on a fixed-size actor pool over work items naming Parquet
    shards, one shard per call; the results stream back batch by batch. The replicas read
    their shards themselves: ``read_parquet``'s file-listing and read tasks would each need
    a worker process and a CPU beside the pool (on 2 cores they queue behind it).
    ``model``: the replicas hold a model and get ``build.ray.num_gpus`` each."""
    ray, r = _ray(build), build.ray
    ds = ray.data.from_items(work).map_batches(
        udf, fn_constructor_kwargs=ctor, batch_size=1, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=pool or r.pool_size),
        num_cpus=r.num_cpus, num_gpus=r.num_gpus if model else 0)
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")


class _ShardUDF:
    """A replica's call: read each named shard and process it (see ``shard``)."""

    def __call__(self, batch: pa.Table) -> dict[str, np.ndarray]:
        outs = [self.shard(pq.read_table(path)) for path in batch.column("path").to_pylist()]
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

    def shard(self, table: pa.Table) -> dict[str, np.ndarray]:
        raise NotImplementedError


class _Tally:
    """Every item row must come back exactly once."""

    def __init__(self, n: int) -> None:
        self.seen = np.zeros(n, np.int32)

    def add(self, rows: np.ndarray) -> None:
        np.add.at(self.seen, rows, 1)

    def check(self, stage: str) -> None:
        if not (self.seen == 1).all():
            missing, twice = int((self.seen == 0).sum()), int((self.seen > 1).sum())
            raise VersionIntegrityError(f"Ray {stage}: {missing} of {len(self.seen)} items "
                                        f"came back missing, {twice} more than once")


def _threads(build: BuildConfig) -> int:
    return max(1, int(build.ray.num_cpus))


def _actor_device(setting: str) -> str:
    """``build.device`` inside an actor: the GPU Ray gave it (``num_gpus``) decides."""
    from xemb.embedders.device import resolve_device

    return resolve_device(setting, cuda_available=bool(_import_ray().get_gpu_ids()))


# ---- encode -----------------------------------------------------------------------------------
class _EncodeActor(_ShardUDF):
    """One encoder replica; a row of its shards is one encoder batch."""

    def __init__(self, cfg: XembConfig, onnx: str | None, replica: Any = None) -> None:
        import torch

        from xemb.embedders.encode import OnnxTextEncoder, load_encoder

        threads = _threads(cfg.build)
        torch.set_num_threads(threads)
        device = _actor_device(cfg.build.device)
        encoder = (replica.to(device) if replica is not None
                   else load_encoder(cfg.encoder, device))
        self.encoder = (OnnxTextEncoder(encoder, Path(onnx), threads, device)  # type: ignore[arg-type]
                        if onnx else encoder)

    def shard(self, batch: pa.Table) -> dict[str, np.ndarray]:
        from xemb.embedders.encode import encode_batch

        rows = batch.column("rows").to_pylist()
        texts = batch.column("texts").to_pylist()
        images = (batch.column("images").to_pylist() if "images" in batch.column_names
                  else [None] * len(rows))
        vectors = [encode_batch(self.encoder, t, im) for t, im in zip(texts, images)]
        return {"row": np.concatenate(rows).astype(np.int64),
                "vector": np.concatenate(vectors).astype(np.float32)}


def _encode_shards(order: list[np.ndarray], texts: list[str], images: list[str | None] | None,
                   per_shard: int) -> Iterator[pa.Table]:
    for s in range(0, len(order), per_shard):
        chunk = order[s:s + per_shard]
        cols: dict[str, Any] = {
            "rows": pa.array([c.tolist() for c in chunk], pa.list_(pa.int64())),
            "texts": pa.array([[texts[i] for i in c] for c in chunk], pa.list_(pa.string()))}
        if images is not None:
            cols["images"] = pa.array([[images[i] for i in c] for c in chunk],
                                      pa.list_(pa.string()))
        yield pa.table(cols)


class RayEncoder:
    """The configured encoder with its batches run by an actor pool of replicas: the same
    length-sorted batches the local encoder forms, so the same vectors. Plugs into
    :func:`xemb.embedders.encode.encode_items` (cache look-ups stay on the driver).

    ``onnx``: the replicas run that graph behind the encoder's tokenizer. ``replica``: an
    encoder object the replicas get a copy of (a trained student, which no config can
    load), instead of loading the configured encoder."""

    def __init__(self, cfg: XembConfig, encoder: Any, onnx: Path | None,
                 replica: Any = None) -> None:
        self.cfg, self.onnx, self.replica = cfg, onnx, replica
        self.fingerprint, self.dim, self.path = encoder.fingerprint, encoder.dim, encoder.path

    def batches(self, texts: list[str], images: list[str | None] | None = None) -> Batches:
        from xemb.embedders.encode import _sorted_batches

        size = self.cfg.encoder.batch_size
        per_call = max(1, self.cfg.build.ray.batch_rows // size)
        order = _sorted_batches(texts, size)
        tally = _Tally(len(texts))
        with _scratch(self.cfg.build.root, "encode") as tmp, \
                _timed(f"encode: {len(texts):,} items"):
            work = _write_shards(tmp, _encode_shards(order, texts, images, per_call))
            ctor = {"cfg": self.cfg, "onnx": str(self.onnx) if self.onnx else None,
                    "replica": self.replica}
            for b in _map(work, _EncodeActor, ctor, self.cfg.build):
                tally.add(b["row"])
                yield b["row"], b["vector"]
        tally.check("encode")

    def encode(self, texts: list[str], images: list[str | None] | None = None) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for idx, vectors in self.batches(texts, images):
            out[idx] = vectors
        return out


# ---- generation (describe, profile) -----------------------------------------------------------
class _GenerateActor(_ShardUDF):
    """One causal-LM replica; a row of its shards is one generation batch."""

    def __init__(self, cfg: XembConfig, section: str) -> None:
        import torch

        from xemb.embedders.generate import Generator

        torch.set_num_threads(_threads(cfg.build))
        self.gen = Generator(getattr(cfg, section), _actor_device(cfg.build.device), section)

    def shard(self, batch: pa.Table) -> dict[str, np.ndarray]:
        rows = batch.column("rows").to_pylist()
        texts = [self.gen.generate(p) for p in batch.column("prompts").to_pylist()]
        return {"row": np.concatenate(rows).astype(np.int64),
                "text": np.asarray([t for ts in texts for t in ts], dtype=object)}


class RayGenerator:
    """The ``describe:`` or ``profile:`` generator with its batches run by an actor pool of
    replicas (``section``: which config section's model and settings). The driver forms
    the batches as the local generator would (so greedy decoding gives the same texts) and
    caches each batch as it comes back: a killed build resumes with what came back. The
    model is loaded by the replicas only."""

    def __init__(self, cfg: XembConfig, section: str) -> None:
        from xemb.embedders.generate import generator_fingerprint

        self.cfg, self.section = cfg, section
        self.fingerprint = generator_fingerprint(getattr(cfg, section), section)

    def run(self, batches: Sequence[list[str]]) -> Iterator[tuple[list[str], list[str]]]:
        """(prompts, texts) as the replicas return them: each text comes back with its
        prompt's position, so however Ray splits its output, every text meets its prompt."""
        if not batches:
            return
        flat = [p for b in batches for p in b]
        starts = np.cumsum([0] + [len(b) for b in batches])
        per_shard = max(1, self.cfg.build.ray.batch_rows // max(1, len(batches[0])))
        tally = _Tally(len(flat))
        with _scratch(self.cfg.build.root, self.section) as tmp, \
                _timed(f"{self.section}: {len(flat):,} texts generated"):
            work = _write_shards(tmp, (pa.table({
                "rows": pa.array([list(range(starts[i], starts[i + 1]))
                                  for i in range(s, min(s + per_shard, len(batches)))],
                                 pa.list_(pa.int64())),
                "prompts": pa.array(batches[s:s + per_shard], pa.list_(pa.string()))})
                for s in range(0, len(batches), per_shard)))
            ctor = {"cfg": self.cfg, "section": self.section}
            for out in _map(work, _GenerateActor, ctor, self.cfg.build):
                tally.add(out["row"])
                yield [flat[i] for i in out["row"]], [str(t) for t in out["text"]]
        tally.check(self.section)


# ---- per-item passes -------------------------------------------------------------------------
def _column(x: np.ndarray) -> pa.Array:
    if x.ndim == 1:
        return pa.array(x)
    x = np.ascontiguousarray(x)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])


def _item_shards(columns: dict[str, np.ndarray], rows: int) -> Iterator[pa.Table]:
    """Shards of ``rows`` items: a ``row`` column (the item's position) and ``columns``
    (2-D arrays become fixed-size lists; a memory-mapped array is read a shard at a time)."""
    n = len(next(iter(columns.values())))
    for s in range(0, n, rows):
        e = min(s + rows, n)
        cols = {"row": pa.array(np.arange(s, e, dtype=np.int64))}
        cols.update({k: _column(np.asarray(v[s:e])) for k, v in columns.items()})
        yield pa.table(cols)


def _arrays(batch: pa.Table) -> dict[str, np.ndarray]:
    """A shard batch back as NumPy (fixed-size lists as 2-D arrays)."""
    out = {}
    for name in batch.column_names:
        col = batch.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(col.type):
            out[name] = col.flatten().to_numpy().reshape(-1, col.type.list_size)
        else:
            out[name] = col.to_numpy()
    return out


def _item_pass(columns: dict[str, np.ndarray], build: BuildConfig, udf: type,
               ctor: dict[str, Any], what: str, names: tuple[str, ...]
               ) -> dict[str, np.ndarray]:
    """``udf`` over every item (shards of ``columns``); its ``names`` outputs gathered into
    [N, ...] arrays by ``row``, each item checked to come back exactly once."""
    n = len(next(iter(columns.values())))
    rows, tally = build.ray.batch_rows, _Tally(n)
    out: dict[str, np.ndarray] = {}
    with _scratch(build.root, what) as tmp, _timed(f"{what}: {n:,} items"):
        work = _write_shards(tmp, _item_shards(columns, rows))
        for b in _map(work, udf, ctor, build):
            tally.add(b["row"])
            for k in names:
                if k not in out:
                    out[k] = np.zeros((n, *b[k].shape[1:]), b[k].dtype)
                out[k][b["row"]] = b[k]
    tally.check(what)
    return out


class _AdapterOnnxActor(_ShardUDF):
    """One replica of the exported adapter (ONNX Runtime, on ``build.device``)."""

    def __init__(self, onnx: str, threads: int, device: str) -> None:
        from xemb.embedders.device import ort_session

        self.sess = ort_session(onnx, threads, _actor_device(device))

    def shard(self, batch: pa.Table) -> dict[str, np.ndarray]:
        from xemb.embedders.materialize import materialize_batch

        b = _arrays(batch)  # descriptions (describe.use: separate) come flattened [B, K*S]
        t, r, f = materialize_batch(self.sess, b["semantic"], b["domain"], b["item_row"],
                                    b.get("descriptions"), b.get("description_mask"))
        return {"row": b["row"], "t": t, "r": r, "f": f}


def materialize(onnx: Path, semantic: np.ndarray, domain: np.ndarray, warm: np.ndarray,
                build: BuildConfig, descriptions: tuple[np.ndarray, np.ndarray] | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(transferable, residual, full) of every item through the adapter's ONNX export
    (``descriptions``: vectors [N, K, S] and mask [N, K], with ``describe.use: separate``)."""
    from xemb.embedders.materialize import item_rows

    cols = {"semantic": semantic, "domain": np.asarray(domain, np.int64),
            "item_row": item_rows(warm)}
    if descriptions is not None:  # shards hold 2-D columns: K*S per item, reshaped there
        vectors, mask = descriptions
        cols.update(descriptions=vectors.reshape(len(vectors), -1), description_mask=mask)
    ctor = {"onnx": str(onnx), "threads": _threads(build), "device": build.device}
    got = _item_pass(cols, build, _AdapterOnnxActor, ctor, "materialize", ("t", "r", "f"))
    return got["t"], got["r"], got["f"]


def materialize_items(ctx: BuildContext, onnx: Path, semantic: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The Ray form of ``publish._materialize_items``: (t, r, f, warm)."""
    warm = ctx.warm
    t, r, f = materialize(onnx, semantic, ctx.ds.item_domain, warm, ctx.cfg.build,
                          ctx.description_vectors())
    return t, r, f, warm


class _AssignActor(_ShardUDF):
    """Holds the intent centroids; assigns a batch of transferable vectors to its top-m."""

    def __init__(self, centroids: np.ndarray, top_m: int, temperature: float,
                 threads: int) -> None:
        import faiss

        faiss.omp_set_num_threads(threads)
        self.centroids, self.top_m, self.temperature = centroids, top_m, temperature

    def shard(self, batch: pa.Table) -> dict[str, np.ndarray]:
        from xemb.embedders.intents import assign_batch

        b = _arrays(batch)
        a = assign_batch(b["vector"], self.centroids, self.top_m, self.temperature)
        return {"row": b["row"], "ids": a.ids, "sims": a.sims, "weights": a.weights}


def assign_intents(transferable: np.ndarray, centroids: np.ndarray, top_m: int,
                   temperature: float, build: BuildConfig) -> Assignment:
    """Every item's top-m intents (the Ray form of ``intents.assign_intents``)."""
    from xemb.embedders.intents import Assignment

    ctor = {"centroids": np.ascontiguousarray(centroids, np.float32), "top_m": top_m,
            "temperature": temperature, "threads": _threads(build)}
    got = _item_pass({"vector": transferable}, build, _AssignActor, ctor, "intents",
                     ("ids", "sims", "weights"))
    return Assignment(got["ids"], got["sims"], got["weights"])


def assigner(ctx: BuildContext, transferable: np.ndarray
             ) -> Callable[[np.ndarray], Assignment]:
    """``centroids -> Assignment`` of every item, on Ray (for ``intents.build_intents``)."""
    c = ctx.cfg
    return functools.partial(assign_intents, transferable, top_m=c.intents.top_m,
                             temperature=c.intents.temperature, build=c.build)


# ---- training and the stage hook ----------------------------------------------------------
Stage = Callable[["BuildContext", Path], None]


def _train(stage: Stage, ctx: BuildContext, out: str, threads: int) -> None:
    import torch

    from xemb.embedders.device import resolve_device

    torch.set_num_threads(threads)  # Ray gives a task one thread; match the local build
    ctx.device = resolve_device(ctx.cfg.build.device)  # this worker's GPU, if it got one
    stage(ctx, Path(out))


def train_in_task(stage: Stage, ctx: BuildContext, name: str) -> Callable[[Path], None]:
    """A training stage as one Ray task writing into the stage's output folder: on a GPU
    when ``build.ray.train_num_gpus`` asks for one or, unset, when the cluster has one."""

    def in_task(out: Path) -> None:
        import torch

        build = ctx.cfg.build
        ray = _ray(build)
        resources = ray.cluster_resources()
        gpus = build.ray.train_num_gpus
        if gpus is None:
            gpus = 1 if resources.get("GPU", 0) >= 1 else 0
        threads = build.threads or torch.get_num_threads()
        cpus = min(float(threads), float(resources.get("CPU", 1)))
        task = ray.remote(_train).options(num_cpus=cpus, num_gpus=gpus, name=f"xemb-{name}")
        ray.get(task.remote(stage, ctx, str(out), threads))

    return in_task


def runner(ctx: BuildContext, name: str, stage: Stage) -> Callable[[Path], None]:
    """How the Ray engine runs stage ``name`` (the local ``stage`` function): training in a
    task; encode and intents run their own function, whose per-item work goes to Ray through
    :class:`RayEncoder` and :func:`assigner`."""
    if name in ("adapt", "compose"):
        return train_in_task(stage, ctx, name)
    return functools.partial(stage, ctx)


# ---- online-store writes ----------------------------------------------------------------------
class _OnlineWriter:
    """One Feast writer: row groups of a version's tables -> its online slot, in writes of
    ``chunk_rows`` rows."""

    def __init__(self, root: str, version: str, at: datetime, chunk_rows: int) -> None:
        from xemb.feature_repo import get_feature_store

        self.fs = get_feature_store(root)
        self.version, self.at, self.chunk_rows = version, at, chunk_rows

    def __call__(self, batch: pa.Table) -> dict[str, np.ndarray]:
        from xemb.feature_repo import names

        views, counts = [], []
        for item in batch.to_pylist():
            views.append(names.VIEW_OF_TABLE[item["table"]])
            counts.append(self._write(item["table"], Path(item["path"]), item["row_group"]))
        return {"view": np.array(views, object), "rows": np.array(counts, np.int64)}

    def _write(self, table: str, path: Path, row_group: int) -> int:
        from xemb.feature_repo import names
        from xemb.feature_repo.offline import _table as feast_rows

        n = 0
        for b in pq.ParquetFile(path).iter_batches(self.chunk_rows, row_groups=[row_group]):
            rows = feast_rows(pa.Table.from_batches([b]), path, table, self.version, self.at)
            self.fs.write_to_online_store(names.VIEW_OF_TABLE[table], rows.to_pandas())
            n += rows.num_rows
        return n


def write_online_rows(store: VersionStore, version: str, at: datetime, chunk_rows: int,
                      build: BuildConfig, sqlite: bool) -> dict[str, int]:
    """Every row of ``version``'s tables into its online slot through a pool of Feast
    writers on Ray (one work item per Parquet row group); the rows written per view are
    then checked against the tables (a writer that lost rows fails the build: Feast's own
    Ray writers only log such errors). SQLite takes one writer at a time."""
    from xemb.feature_repo import names
    from xemb.feature_repo.offline import table_path
    from xemb.feature_repo.verify import expected_rows

    work = []
    for table in names.TABLES:
        path = table_path(store, version, table)  # None: an optional table not built
        work += [{"table": table, "path": str(path), "row_group": g}
                 for g in range(pq.ParquetFile(path).num_row_groups if path else 0)]
    ctor = {"root": str(store.root), "version": version, "at": at, "chunk_rows": chunk_rows}
    written = dict.fromkeys(names.VIEWS, 0)
    with _timed(f"online writes: {len(work)} row groups"):
        for b in _map(work, _OnlineWriter, ctor, build, pool=1 if sqlite else None,
                      model=False):
            for view, n in zip(b["view"], b["rows"]):
                written[str(view)] += int(n)
    want = expected_rows(store, version)
    bad = {v: (written[v], want[v]) for v in names.VIEWS if written[v] != want[v]}
    if bad:
        raise VersionIntegrityError(f"Ray online writes for version {version}: rows written "
                                    f"/ in the table per view {bad}")
    return written
