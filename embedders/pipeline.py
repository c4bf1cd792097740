"""`xemb build`: the runner. It walks the stage list of embedders/graph.py (describe ->
profile -> encode -> adapt -> intents -> compose -> publish; the optional describe and
profile only when the config turns them on), runs each cached stage unless its output for
this key exists, and ends with publish, which writes an immutable version and switches
CURRENT only after it verified.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from xemb.embedders import graph
from xemb.embedders.context import BuildContext, adapter_outputs, log
from xemb.embedders.data import Dataset, load_dataset
from xemb.embedders.device import resolve_device
from xemb.embedders.graph import KeyInputs, Stage
from xemb.embedders.stages import StageCache, stage_key
from xemb.errors import FailedPrecondition, InvalidArgument
from xemb.lock import RootLock
from xemb.settings import XembConfig
from xemb.store import Manifest

__all__ = ["BuildContext", "adapter_outputs", "build", "log", "prepare", "semantic_vectors",
           "stage_names"]


def stage_names() -> tuple[str, ...]:
    return tuple(s.name for s in graph.STAGES)


def _on(cfg: XembConfig) -> list[Stage]:
    return [s for s in graph.STAGES if s.enabled(cfg)]


def _keys(cfg: XembConfig, ds: Dataset, encoder_fp: str) -> dict[str, str]:
    """Every enabled stage's key, in build order (see graph.Stage.key)."""
    keys: dict[str, str] = {}
    for s in _on(cfg):
        up = {n: keys[n] for n in s.needs if n in keys}
        keys[s.name] = stage_key(*s.key(KeyInputs(cfg, ds.fingerprint, encoder_fp, up)))
    return keys


def _select(cfg: XembConfig, stages: Iterable[str] | None) -> list[Stage]:
    names, on = stage_names(), [s.name for s in _on(cfg)]
    chosen = list(stages) if stages else on
    bad = [s for s in chosen if s not in names]
    if bad:
        raise InvalidArgument(f"unknown stage {bad[0]!r} (stages: {', '.join(names)})",
                              field="--stages")
    off = [s for s in chosen if s not in on]
    if off:
        raise InvalidArgument(f"stage {off[0]!r} is off in the config ({off[0]}.enabled)",
                              field="--stages")
    return [s for s in graph.STAGES if s.name in chosen]


def _encoder_fingerprint(cfg: XembConfig) -> str:
    from xemb.embedders.encode import _model_fingerprint, default_model_path

    return _model_fingerprint(cfg.encoder.model or default_model_path(), cfg.encoder)


def prepare(cfg: XembConfig) -> BuildContext:
    if cfg.build.threads:
        torch.set_num_threads(cfg.build.threads)
    ds = load_dataset(cfg.data)
    ctx = BuildContext(cfg, ds, StageCache(cfg.build.root),
                       device=resolve_device(cfg.build.device))
    ctx.encoder_fp = _encoder_fingerprint(cfg)
    ctx.keys = _keys(cfg, ds, ctx.encoder_fp)
    return ctx


def build(cfg: XembConfig, stages: Iterable[str] | None = None, force: bool = False,
          wait: bool = False) -> Manifest | None:
    """Run the selected stages (default: all that are on) holding the root's build lock
    (``wait``: queue behind a running build instead of failing at once). Returns the
    published manifest, or None when no final stage (publish) was selected. With nothing
    changed (build key and Feast settings), the current version is returned."""
    from xemb.embedders.publish import collect_garbage

    chosen = _select(cfg, stages)
    final = next((s for s in chosen if s.final is not None), None)
    with RootLock(cfg.build.root, wait=wait), _engine(cfg):
        ctx = prepare(cfg)
        collect_garbage(ctx)  # what killed builds left: failed versions, staging, temp folders
        if final is not None and not force and (same := _up_to_date(ctx)) is not None:
            if cfg.gate.accept and same.version != ctx.store.current_or_none():
                from xemb.embedders.publish import make_current

                make_current(ctx, same.version)  # kept back by the gate; the user accepts
            return same
        manifest = None
        for stage in chosen:
            t0 = time.perf_counter()
            _require_upstream(ctx, stage)
            manifest = _run(ctx, stage) or manifest
            ctx.timings[stage.name] = round(time.perf_counter() - t0, 2)
            log(f"{stage.name}: done in {ctx.timings[stage.name]:.1f}s")
        if final is None:
            return None
        ctx.cache.prune({s.name: ctx.keys[s.name] for s in chosen if s.run is not None})
        return manifest


def _run(ctx: BuildContext, stage: Stage) -> Manifest | None:
    if stage.final is not None:
        return stage.final(ctx)
    ctx.cache.run(stage.name, ctx.keys[stage.name], _runner(ctx, stage))
    return None


def _engine(cfg: XembConfig) -> contextlib.AbstractContextManager:
    """``build.engine: ray``: the build's Ray (joined or started when a stage first needs it,
    left at the end); see embedders/engine_ray.py."""
    if cfg.build.engine != "ray":
        return contextlib.nullcontext()
    from xemb.embedders.engine_ray import ray_session

    return ray_session(cfg.build)


def _runner(ctx: BuildContext, stage: Stage) -> Callable[[Path], None]:
    assert stage.run is not None
    if ctx.cfg.build.engine != "ray":
        return functools.partial(stage.run, ctx)
    from xemb.embedders.engine_ray import runner

    return runner(ctx, stage.name, stage.run)


def _up_to_date(ctx: BuildContext) -> Manifest | None:
    """The version this very build key and Feast settings already published: the current one,
    or the newest published one that was never current (kept back, e.g. by a quality gate),
    so a rerun does not publish the same thing again."""
    from xemb.embedders.publish import feast_fingerprint

    store, key, feast = ctx.store, ctx.keys["publish"], feast_fingerprint(ctx.cfg)
    current = store.current_or_none()
    switched = {s.version for s in store.switches()}  # a rolled-back-from one is built anew
    never_current = [v for v in store.list_ids()[::-1] if v not in switched]
    for version in ([current] if current else []) + never_current:
        record = store.published_record(version) or {}
        if store.manifest(version).hashes.get("build") != key:
            continue
        if record.get("feast") != feast:
            log(f"Feast settings changed since {version} was published: publishing again")
            return None
        state = "current" if version == current else "published but not current"
        log(f"nothing changed: {version} is {state} and up to date")
        return store.manifest(version)
    return None


def _require_upstream(ctx: BuildContext, stage: Stage) -> None:
    """A stage run alone needs what it depends on done with this very config."""
    for up in graph.upstream(stage.name):
        if up in ctx.keys and not ctx.cache.has(up, ctx.keys[up]):
            raise FailedPrecondition(f"stage {stage.name!r} needs {up!r} first (run it, or "
                                     f"run all stages)")


def _run_through(ctx: BuildContext, name: str) -> None:
    """Run stage ``name`` and what it depends on, each unless already done."""
    for n in [*graph.upstream(name), name]:
        stage = graph.stage_named(n)
        if n in ctx.keys and stage.run is not None:
            ctx.cache.run(n, ctx.keys[n], _runner(ctx, stage))


def semantic_vectors(cfg: XembConfig) -> np.ndarray:
    """The frozen encoder's vectors for every item: the encode stage's output (run if absent,
    with describe before it when that is on)."""
    ctx = prepare(cfg)
    _run_through(ctx, "encode")
    return ctx.semantic()
