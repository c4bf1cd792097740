"""`xemb build`: encode -> adapt -> intents -> compose -> publish, each stage cached and
resumable; publish writes an immutable version and switches CURRENT only after it verified.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from embedders.data import Dataset, load_dataset
from embedders.device import resolve_device
from embedders.distill import encode_with_student, student_key
from embedders.encode import (
    OnnxTextEncoder,
    TextEncoder,
    encode_items,
    load_encoder,
    semantic_file,
)
from embedders.evaluate import valid_score
from embedders.intents import IntentLibrary, build_intents
from embedders.models import Adapter, Composer
from embedders.stages import StageCache, stage_key
from embedders.train import ItemIntents, TrainInputs, train_adapter, train_composer
from embedders.validation import Validator
from xemb import layout
from xemb.composer_io import ItemArrays
from xemb.errors import FailedPrecondition, InvalidArgument
from xemb.lock import RootLock
from xemb.settings import XembConfig
from xemb.store import Manifest, VersionStore

__all__ = ["STAGES", "BuildContext", "adapter_outputs", "build", "log", "semantic_vectors"]

STAGES = ("describe", "encode", "adapt", "intents", "compose", "publish")
OPTIONAL = {"describe": lambda cfg: cfg.describe.enabled}  # off unless its config says so
CODE_VERSION = "3"  # bump when a change to the training code changes its output


def log(msg: str) -> None:
    print(f"[xemb] {msg}", file=sys.stderr, flush=True)


@dataclass
class BuildContext:
    cfg: XembConfig
    ds: Dataset
    cache: StageCache
    keys: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    encoder_fp: str = ""
    device: str = "cpu"  # build.device, resolved (cpu or cuda)

    @property
    def store(self) -> VersionStore:
        return VersionStore(self.cfg.build.root)

    def out(self, stage: str) -> Path:
        return self.cache.path(stage, self.keys[stage])

    @functools.cached_property
    def warm(self) -> np.ndarray:
        """Items seen in training behaviour (they carry a per-item vector)."""
        warm = np.zeros(len(self.ds.item_ids), bool)
        for _, s in self.ds.sequences["train"]:
            warm[s] = True
        return warm

    def descriptions(self) -> pa.Table | None:
        """The describe stage's output (item_id + description columns); None when off."""
        if "describe" not in self.keys:
            return None
        return pq.read_table(self.out("describe") / "descriptions.parquet")

    def encoder_texts(self) -> list[str]:
        """What the encoder reads per item: the item text, with its descriptions joined
        (``describe.use: concat``) when describe is on."""
        described = self.descriptions()
        if described is None:
            return self.ds.texts
        from embedders.describe import with_descriptions

        return with_descriptions(self.ds.texts, described)

    def semantic(self) -> np.ndarray:
        """The encode stage's output: one frozen-encoder vector per item row (memory-mapped,
        copy-on-write: pages are read as a stage touches them, and shared with the page
        cache)."""
        return np.load(self.out("encode") / "semantic.npy", mmap_mode="c")

    @functools.cached_property
    def validator(self) -> Validator | None:
        """The valid split as the build selects on it (None when there is none)."""
        e = self.cfg.eval
        v = Validator.for_dataset(self.ds, self.cfg.composer.max_len, e.negatives, e.seed)
        if v is None:
            log("no valid rows: training runs every epoch and keeps the last")
        return v

    def _stats(self, stage: str) -> dict:
        state = torch.load(self.out(stage) / f"{stage}.pt", weights_only=True)
        return dict(state.get("stats") or {})

    def training_record(self) -> dict:
        """Per-epoch loss and valid figures of adapt and compose, the kept epochs, and the
        prior weights tried (for the manifest and the report)."""
        adapt, compose = self._stats("adapt"), self._stats("compose")
        return {"adapt": adapt.get("epochs", []), "compose": compose.get("epochs", []),
                "best_epoch": {"adapt": adapt.get("best_epoch"),
                               "compose": compose.get("best_epoch")},
                "prior_scale": compose.get("prior_scale")}

    def prior_scale(self) -> float | None:
        """The user vector's last coordinate (None without the prior)."""
        if not self.cfg.adapter.prior:
            return None
        chosen = (self._stats("compose").get("prior_scale") or {}).get("chosen")
        return 1.0 if chosen is None else float(chosen)

    def train_inputs(self, semantic: np.ndarray) -> TrainInputs:
        seqs = [s for _, s in self.ds.sequences["train"]]
        return TrainInputs(torch.from_numpy(semantic), torch.from_numpy(self.ds.item_domain),
                           torch.from_numpy(self.warm), seqs, len(self.ds.domains))


# ---- stages -----------------------------------------------------------------------------
def _describe(ctx: BuildContext, out: Path) -> None:
    """Generated descriptions of every item (cached per model, prompt and item text under
    ``<root>/cache/describe``, so a rebuild generates only what is new)."""
    from embedders.describe import describe_table

    table = describe_table(ctx.cfg.describe, ctx.ds.items,
                           ctx.cfg.build.root / "cache" / "describe", ctx.device, log)
    pq.write_table(table, out / "descriptions.parquet", compression="zstd")


def _encode(ctx: BuildContext, out: Path) -> None:
    """Export the encoder first: with ``backend: onnx`` the bulk encoding runs through the
    very graph that encodes cold-start items online."""
    cfg, texts = ctx.cfg.encoder, ctx.encoder_texts()
    if cfg.student.enabled:  # teacher on a sample, the distilled student on the rest
        encode_with_student(cfg, texts, out, ctx.cfg.build.root / "cache" / "encode",
                            ctx.cfg.build.parity_tol, ctx.cfg.build.threads, log,
                            device=ctx.device, vectors_path=out / "semantic.npy")
        return
    encoder = load_encoder(cfg)  # on CPU for the export; then on build.device
    if cfg.export_onnx:
        from embedders.export import export_encoder

        diff = export_encoder(encoder, out, texts[:64], ctx.cfg.build.parity_tol,
                              cfg.max_length)
        log(f"encode: encoder exported to ONNX, parity max abs diff {diff:.2e}")
        if cfg.backend == "onnx" and isinstance(encoder, TextEncoder):
            encoder = OnnxTextEncoder(encoder, out / layout.ENCODER_ONNX, ctx.cfg.build.threads,
                                      ctx.device)
    if not isinstance(encoder, OnnxTextEncoder):
        encoder.to(ctx.device)  # type: ignore[attr-defined]
    if ctx.cfg.build.engine == "ray":  # the same batches, run by an actor pool of replicas
        from embedders.engine_ray import RayEncoder

        encoder = RayEncoder(ctx.cfg, encoder, out / layout.ENCODER_ONNX
                             if isinstance(encoder, OnnxTextEncoder) else None)
    images = (ctx.ds.items.column("image_path").to_pylist()
              if "image_path" in ctx.ds.items.column_names else None)
    vectors = semantic_file(out / "semantic.npy", len(texts), encoder.dim)
    _, n_new = encode_items(encoder, texts, images, ctx.cfg.build.root / "cache" / "encode",
                            out=vectors, flush_items=ctx.cfg.build.batch_items)
    vectors.flush()
    log(f"encode: {n_new} of {len(vectors)} items encoded, the rest from cache")


def _adapt(ctx: BuildContext, out: Path) -> None:
    semantic = ctx.semantic()
    data = ctx.train_inputs(semantic)
    validator = ctx.validator

    def evaluate(adapter: Adapter, composer: Composer) -> dict:
        assert validator is not None
        adapter.eval()
        _, _, full = item_vectors(ctx, adapter, semantic)
        adapter.train()
        return validator.evaluate(composer, _no_intents(full, ctx.ds.item_domain))

    adapter, composer, fit = train_adapter(data, ctx.cfg.adapter, ctx.cfg.composer,
                                           evaluate if validator else None, ctx.device)
    torch.save({"adapter": adapter.state_dict(), "composer": composer.state_dict(),
                "stats": fit.as_dict()}, out / "adapt.pt")


def _no_intents(full: np.ndarray, domain: np.ndarray) -> ItemArrays:
    zeros = np.zeros((len(full), 1))
    return ItemArrays(full, domain, zeros.astype(np.int64), zeros.astype(np.float32))


def new_adapter(ctx: BuildContext, semantic_dim: int) -> Adapter:
    a = ctx.cfg.adapter
    n_items = len(ctx.ds.item_ids) if a.id_embedding else 0
    return Adapter(semantic_dim, a.dim, a.hidden, len(ctx.ds.domains), n_items, a.dropout,
                   a.residual, a.prior)


def load_adapter(ctx: BuildContext, semantic_dim: int) -> tuple[Adapter, dict]:
    state = torch.load(ctx.out("adapt") / "adapt.pt", weights_only=True)
    adapter = new_adapter(ctx, semantic_dim)
    adapter.load_state_dict(state["adapter"])
    return adapter.eval(), state


def item_vectors(ctx: BuildContext, adapter: Adapter, semantic: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Published-width (transferable, residual, full) of every item, as torch computes them
    (``build.batch_items`` at a time on ``build.device``; the adapter is moved there)."""
    adapter.to(ctx.device)
    return adapter_outputs(adapter, semantic, ctx.ds.item_domain, ctx.warm,
                           ctx.cfg.build.batch_items, ctx.device)


@torch.inference_mode()
def adapter_outputs(adapter: Adapter, semantic: np.ndarray, domain: np.ndarray,
                    warm: np.ndarray, batch: int, device: str = "cpu"
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(transferable, residual, full) [N, width] of every item through the adapter (on
    ``device``), ``batch`` items at a time into preallocated arrays."""
    n = len(semantic)
    out = [np.zeros((n, adapter.width), np.float32) for _ in range(3)]
    for s in range(0, n, batch):
        e = min(s + batch, n)
        parts = adapter.items(torch.from_numpy(np.array(semantic[s:e], np.float32)).to(device),
                              torch.from_numpy(domain[s:e]).to(device),
                              torch.arange(s, e, device=device),
                              torch.from_numpy(warm[s:e]).to(device))
        for acc, x in zip(out, parts):
            acc[s:e] = x.cpu().numpy()
    return out[0], out[1], out[2]


def _intents(ctx: BuildContext, out: Path) -> None:
    semantic = ctx.semantic()
    adapter, _ = load_adapter(ctx, semantic.shape[1])
    trans, _, _ = item_vectors(ctx, adapter, semantic)
    assign = None
    if ctx.cfg.build.engine == "ray":  # item -> intent assignment on an actor pool
        from embedders.engine_ray import assigner

        assign = assigner(ctx, trans)
    lib = build_intents(trans, ctx.ds.texts, ctx.ds.item_domain, ctx.ds.domains,
                        ctx.cfg.intents, ctx.cfg.build.batch_items, assign)
    lib.save(out / "intents.npz")


def load_intents(ctx: BuildContext) -> IntentLibrary:
    return IntentLibrary.load(ctx.out("intents") / "intents.npz")


def _compose(ctx: BuildContext, out: Path) -> None:
    semantic = ctx.semantic()
    adapter, state = load_adapter(ctx, semantic.shape[1])
    _, _, full = item_vectors(ctx, adapter, semantic)
    lib = load_intents(ctx)
    composer = new_composer(ctx, lib)
    warm_start = {k: v for k, v in state["composer"].items() if k != "intents"}
    composer.load_state_dict(warm_start, strict=False)  # the intent library is new
    items = ItemArrays(full, ctx.ds.item_domain, lib.item_ids, lib.item_weights)
    validator = ctx.validator
    fit = train_composer(composer, ctx.train_inputs(semantic), torch.from_numpy(full),
                         ItemIntents.from_arrays(lib.item_ids, lib.item_weights,
                                                 len(lib.vectors)),
                         ctx.cfg.composer, ctx.cfg.adapter.logq,
                         (lambda: validator.evaluate(composer, items)) if validator else None,
                         ctx.device)
    stats = fit.as_dict()
    if composer.prior and validator is not None:
        stats["prior_scale"] = choose_prior_scale(composer, validator, items,
                                                  ctx.cfg.composer.prior_scales)
    torch.save({"composer": composer.state_dict(), "stats": stats}, out / "compose.pt")


def choose_prior_scale(composer: Composer, validator: Validator, items: ItemArrays,
                       scales: list[float]) -> dict:
    """The prior's weight in the served score, chosen on valid (the first best wins, and
    candidates are tried in the configured order)."""
    tried: list[dict[str, Any]] = []
    for s in scales:
        composer.prior_scale.fill_(float(s))
        m = validator.evaluate(composer, items)
        tried.append({"scale": float(s), "valid": m, "valid_score": round(valid_score(m), 5)})
    best = max(tried, key=lambda t: float(t["valid_score"]))  # max keeps the first of equals
    composer.prior_scale.fill_(float(best["scale"]))
    log("prior weight on valid: " + ", ".join(
        f"{t['scale']:g} -> {t['valid_score']:.4f}" for t in tried) + f"; kept {best['scale']:g}")
    return {"chosen": best["scale"], "tried": tried}


def new_composer(ctx: BuildContext, lib: IntentLibrary) -> Composer:
    c = ctx.cfg.composer
    return Composer(ctx.cfg.adapter.dim, len(ctx.ds.domains), torch.from_numpy(lib.vectors),
                    c.heads, c.dropout, ctx.cfg.adapter.prior, c.recency, c.intents)


_RUNNERS: dict[str, Callable[[BuildContext, Path], None]] = {
    "describe": _describe, "encode": _encode, "adapt": _adapt, "intents": _intents,
    "compose": _compose}


def _keys(cfg: XembConfig, ds: Dataset, encoder_fp: str) -> dict[str, str]:
    k: dict[str, str] = {}
    described: list[str] = []  # describe off: the encode key of builds before describe
    if cfg.describe.enabled:
        from embedders.describe import generator_fingerprint

        k["describe"] = stage_key(generator_fingerprint(cfg.describe), ds.fingerprint,
                                  cfg.describe.prompts)
        described = [k["describe"], cfg.describe.use]
    k["encode"] = stage_key(encoder_fp, ds.fingerprint, cfg.encoder.export_onnx,
                            cfg.encoder.backend, cfg.build.parity_tol,
                            *student_key(cfg.encoder), *described)
    k["adapt"] = stage_key(k["encode"], cfg.adapter, cfg.composer.max_len,
                           cfg.composer.heads, cfg.composer.dropout, CODE_VERSION)
    k["intents"] = stage_key(k["adapt"], cfg.intents)
    k["compose"] = stage_key(k["intents"], cfg.composer, CODE_VERSION)
    k["publish"] = stage_key(k["compose"], cfg.build.parity_tol,  # index: only when not default
                             *([cfg.index] if cfg.index != type(cfg.index)() else []))
    return k


def _select(cfg: XembConfig, stages: Iterable[str] | None) -> list[str]:
    on = [s for s in STAGES if s not in OPTIONAL or OPTIONAL[s](cfg)]
    chosen = list(stages) if stages else on
    bad = [s for s in chosen if s not in STAGES]
    if bad:
        raise InvalidArgument(f"unknown stage {bad[0]!r} (stages: {', '.join(STAGES)})",
                              field="--stages")
    off = [s for s in chosen if s not in on]
    if off:
        raise InvalidArgument(f"stage {off[0]!r} is off in the config ({off[0]}.enabled)",
                              field="--stages")
    return [s for s in STAGES if s in chosen]


def _encoder_fingerprint(cfg: XembConfig) -> str:
    from embedders.encode import _model_fingerprint, default_model_path

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
    """Run the selected stages (default: all) holding the root's build lock (``wait``: queue
    behind a running build instead of failing at once). Returns the published manifest, or
    None when ``publish`` was not selected. With nothing changed (build key and Feast
    settings), the current version is returned."""
    from embedders.publish import collect_garbage, publish

    chosen = _select(cfg, stages)
    with RootLock(cfg.build.root, wait=wait), _engine(cfg):
        ctx = prepare(cfg)
        collect_garbage(ctx)  # what killed builds left: failed versions, staging, temp folders
        if "publish" in chosen and not force and (same := _up_to_date(ctx)) is not None:
            if cfg.gate.accept and same.version != ctx.store.current_or_none():
                from embedders.publish import make_current

                make_current(ctx, same.version)  # kept back by the gate; the user accepts
            return same
        for stage in chosen:
            t0 = time.perf_counter()
            _require_upstream(ctx, stage)
            if stage == "publish":
                manifest = publish(ctx)
            else:
                ctx.cache.run(stage, ctx.keys[stage], _runner(ctx, stage))
            ctx.timings[stage] = round(time.perf_counter() - t0, 2)
            log(f"{stage}: done in {ctx.timings[stage]:.1f}s")
        if "publish" not in chosen:
            return None
        ctx.cache.prune({s: ctx.keys[s] for s in chosen if s != "publish"})
        return manifest



def _engine(cfg: XembConfig) -> contextlib.AbstractContextManager:
    """``build.engine: ray``: the build's Ray (joined or started when a stage first needs it,
    left at the end); see embedders/engine_ray.py."""
    if cfg.build.engine != "ray":
        return contextlib.nullcontext()
    from embedders.engine_ray import ray_session

    return ray_session(cfg.build)


def _runner(ctx: BuildContext, stage: str) -> Callable[[Path], None]:
    if ctx.cfg.build.engine != "ray":
        return functools.partial(_RUNNERS[stage], ctx)
    from embedders.engine_ray import runner

    return runner(ctx, stage, _RUNNERS[stage])

def _up_to_date(ctx: BuildContext) -> Manifest | None:
    """The version this very build key and Feast settings already published: the current one,
    or the newest published one that was never current (kept back, e.g. by a quality gate),
    so a rerun does not publish the same thing again."""
    from embedders.publish import feast_fingerprint

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


def _require_upstream(ctx: BuildContext, stage: str) -> None:
    """A later stage run alone needs the earlier ones done with this very config."""
    for up in STAGES[: STAGES.index(stage)]:
        if up in ctx.keys and not ctx.cache.has(up, ctx.keys[up]):
            raise FailedPrecondition(f"stage {stage!r} needs {up!r} first (run it, or run "
                                     f"all stages)")


def semantic_vectors(cfg: XembConfig) -> np.ndarray:
    """The frozen encoder's vectors for every item: the encode stage's output (run if absent)."""
    ctx = prepare(cfg)
    if "describe" in ctx.keys:
        ctx.cache.run("describe", ctx.keys["describe"], lambda out: _describe(ctx, out))
    ctx.cache.run("encode", ctx.keys["encode"], lambda out: _encode(ctx, out))
    return ctx.semantic()
