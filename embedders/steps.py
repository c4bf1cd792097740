"""What each cached stage of the build does: a function ``(ctx, out)`` that reads its inputs
through the :class:`~embedders.context.BuildContext` and writes its files into ``out`` (the
stage's cache folder). Which stage needs what, and how its key is formed, is declared in
embedders/graph.py.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch

from xemb import layout
from xemb.composer_io import ItemArrays
from xemb.embedders.context import (
    BuildContext,
    item_vectors,
    load_adapter,
    load_intents,
    log,
    new_composer,
    no_intents,
)
from xemb.embedders.distill import Remote, encode_with_student
from xemb.embedders.encode import (
    Encoder,
    OnnxTextEncoder,
    PublishedEncoder,
    TextEncoder,
    encode_items,
    load_encoder,
    semantic_file,
)
from xemb.embedders.evaluate import valid_score
from xemb.embedders.generate import TextGenerator
from xemb.embedders.intents import build_intents
from xemb.embedders.models import Adapter, Composer
from xemb.embedders.train import ItemIntents, train_adapter, train_composer
from xemb.embedders.validation import Validator

__all__ = ["adapt", "choose_prior_scale", "compose", "describe", "encode", "intents",
           "profile"]


def _remote(ctx: BuildContext) -> Remote | None:
    """``build.engine: ray``: what runs an encoder's batches on Ray replicas."""
    if ctx.cfg.build.engine != "ray":
        return None
    from xemb.embedders.engine_ray import RayEncoder

    return functools.partial(RayEncoder, ctx.cfg)


def _generator(ctx: BuildContext, section: str) -> TextGenerator | None:
    """``build.engine: ray``: the ``section`` generator's batches on Ray replicas (None: the
    stage loads its model here)."""
    if ctx.cfg.build.engine != "ray":
        return None
    from xemb.embedders.engine_ray import RayGenerator

    return RayGenerator(ctx.cfg, section)


def describe(ctx: BuildContext, out: Path) -> None:
    """Generated descriptions of every item (cached per model, prompt and item text under
    ``<root>/cache/describe``, so a rebuild generates only what is new)."""
    from xemb.embedders.describe import describe_table

    table = describe_table(ctx.cfg.describe, ctx.ds.items,
                           ctx.cfg.build.root / "cache" / "describe", ctx.device, log,
                           _generator(ctx, "describe"))
    pq.write_table(table, out / "descriptions.parquet", compression="zstd")


def profile(ctx: BuildContext, out: Path) -> None:
    """Hierarchical profiles of every training user (texts cached per model and prompt under
    ``<root>/cache/profile``), encoded by the build's item encoder (through the encode cache):
    with ``encoder.student`` on, by the published student graph the items and cold start
    use, so profile and item vectors share one space."""
    from xemb.embedders.profile import encode_profiles, histories, profile_table, profile_users

    cfg, root = ctx.cfg, ctx.cfg.build.root
    users = histories(ctx.ds, cfg.profile.recent_items)
    made = profile_users(cfg.profile, users, root / "cache" / "profile",
                         _generator(ctx, "profile"), device=ctx.device, log=log)
    vectors = encode_profiles(cfg.encoder, made.profiles, root / "cache" / "encode", ctx.device,
                              _profile_encoder(ctx))
    pq.write_table(profile_table(users, made, vectors), out / layout.USER_PROFILES,
                   compression="zstd")


def _profile_encoder(ctx: BuildContext) -> Encoder | None:
    """The encoder of the items' space (None: ``encode_profiles`` loads the configured one)."""
    cfg, remote = ctx.cfg, _remote(ctx)
    if cfg.encoder.student.enabled:  # the student is published; the teacher is not
        published = PublishedEncoder(ctx.out("encode") / layout.ENCODER_DIR,
                                     cfg.encoder.batch_size, cfg.build.threads or 0)
        return published if remote is None else remote(published, None, published)
    return None if remote is None else remote(load_encoder(cfg.encoder), None, None)


def encode(ctx: BuildContext, out: Path) -> None:
    """Export the encoder first: with ``backend: onnx`` the bulk encoding runs through the
    very graph that encodes cold-start items online. With ``describe.use: separate`` the
    same encoder then encodes each description column apart (``descriptions.npy``)."""
    cfg, texts = ctx.cfg.encoder, ctx.encoder_texts()
    if cfg.student.enabled:  # teacher on a sample, the distilled student on the rest
        _, student = encode_with_student(cfg, texts, out, ctx.cfg.build.root / "cache" /
                                         "encode", ctx.cfg.build.parity_tol,
                                         ctx.cfg.build.threads, log, device=ctx.device,
                                         vectors_path=out / "semantic.npy",
                                         remote=_remote(ctx))
        _encode_descriptions(ctx, student, out)  # by the student, as cold start would
        return
    encoder = load_encoder(cfg)  # on CPU for the export; then on build.device
    if cfg.export_onnx:
        from xemb.embedders.export import export_encoder

        diff = export_encoder(encoder, out, texts[:64], ctx.cfg.build.parity_tol,
                              cfg.max_length)
        log(f"encode: encoder exported to ONNX, parity max abs diff {diff:.2e}")
        if cfg.backend == "onnx" and isinstance(encoder, TextEncoder):
            encoder = OnnxTextEncoder(encoder, out / layout.ENCODER_ONNX, ctx.cfg.build.threads,
                                      ctx.device)
    if not isinstance(encoder, OnnxTextEncoder):
        encoder.to(ctx.device)  # type: ignore[attr-defined]
    remote = _remote(ctx)
    if remote is not None:  # the same batches, run by an actor pool of replicas
        encoder = remote(encoder, out / layout.ENCODER_ONNX
                         if isinstance(encoder, OnnxTextEncoder) else None, None)
    images = (ctx.ds.items.column("image_path").to_pylist()
              if "image_path" in ctx.ds.items.column_names else None)
    vectors = semantic_file(out / "semantic.npy", len(texts), encoder.dim)
    _, n_new = encode_items(encoder, texts, images, ctx.cfg.build.root / "cache" / "encode",
                            out=vectors, flush_items=ctx.cfg.build.batch_items)
    vectors.flush()
    log(f"encode: {n_new} of {len(vectors)} items encoded, the rest from cache")
    _encode_descriptions(ctx, encoder, out)


def _encode_descriptions(ctx: BuildContext, encoder: Encoder, out: Path) -> None:
    """``describe.use: separate``: each description column encoded apart by the encoder that
    encoded the titles (the distilled student, when on, for every item)."""
    described = ctx.descriptions()
    if not ctx.separate or described is None:
        return
    from xemb.embedders.describe import encode_descriptions

    n_new = encode_descriptions(encoder, described, out, ctx.cfg.build.root / "cache" /
                                "encode", ctx.cfg.build.batch_items)
    log(f"encode: {n_new} of {described.num_rows * (described.num_columns - 1)} "
        f"descriptions encoded apart (describe.use: separate), the rest from cache")


def adapt(ctx: BuildContext, out: Path) -> None:
    semantic = ctx.semantic()
    data = ctx.train_inputs(semantic)
    validator = ctx.validator

    def evaluate(adapter: Adapter, composer: Composer) -> dict:
        assert validator is not None
        adapter.eval()
        _, _, full = item_vectors(ctx, adapter, semantic)
        adapter.train()
        return validator.evaluate(composer, no_intents(full, ctx.ds.item_domain))

    adapter, composer, fit = train_adapter(data, ctx.cfg.adapter, ctx.cfg.composer,
                                           evaluate if validator else None, ctx.device,
                                           ctx.cfg.describe.dropout if ctx.separate else 0.0)
    torch.save({"adapter": adapter.state_dict(), "composer": composer.state_dict(),
                "stats": fit.as_dict()}, out / "adapt.pt")


def intents(ctx: BuildContext, out: Path) -> None:
    semantic = ctx.semantic()
    adapter, _ = load_adapter(ctx, semantic.shape[1])
    trans, _, _ = item_vectors(ctx, adapter, semantic)
    assign = None
    if ctx.cfg.build.engine == "ray":  # item -> intent assignment on an actor pool
        from xemb.embedders.engine_ray import assigner

        assign = assigner(ctx, trans)
    lib = build_intents(trans, ctx.ds.texts, ctx.ds.item_domain, ctx.ds.domains,
                        ctx.cfg.intents, ctx.cfg.build.batch_items, assign)
    lib.save(out / "intents.npz")


def compose(ctx: BuildContext, out: Path) -> None:
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
                         ctx.device, ctx.cfg.adapter.prior_in_training)
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


