"""``xemb add-items``: make new items retrievable between builds, without retraining.

New items go through the CURRENT version's published models (``encoder/`` and
``adapter.onnx``, text path: ``item_row`` -1), get their atomic intents exactly as the
intents stage assigns them (nearest intents in the transferable space, ``top_m`` from the
manifest, softmax at ``intents.temperature``), and are written into a NEW version derived
from the current one: ``items.parquet`` gains the rows (``warm`` false), the faiss indexes of
the affected domains gain the vectors, every other file is hard-linked unchanged. That
version goes through the build's own life (staged -> committed -> published: verified,
loaded like the server loads it, its Feast slot ready -> current), under the root's build
lock. Pure ONNX Runtime + NumPy + pyarrow + faiss: no torch.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from xemb import layout
from xemb.errors import DataValidationError, FailedPrecondition
from xemb.ipc_tables import items_for_serving, write_ipc
from xemb.lock import RootLock
from xemb.settings import XembConfig, config_hash
from xemb.store import Manifest, VersionStore, link_or_copy

__all__ = ["add_items", "NewItems", "read_new_items"]

ENCODE_BATCH = 64


def _log(msg: str) -> None:
    print(f"[xemb] {msg}", flush=True)


@dataclass
class NewItems:
    """Validated new items, in file order."""

    ids: np.ndarray  # int64 [n]
    domain: np.ndarray  # int64 [n], index into the manifest's domains
    texts: list[str]
    extra: dict[str, pa.Array]  # optional input columns kept as given (image_path)


def read_new_items(file: Path, text_fields: list[str], domains: list[str],
                   existing: np.ndarray) -> NewItems:
    """Read and validate ``file`` (CSV/TSV/Parquet); errors name the file, row and field."""
    from xemb.embedders.data import _image_paths, _int_ids, _item_text, read_table

    table = read_table(file)
    where = str(file)
    for name in ("item_id", "domain"):
        if name not in table.column_names:
            raise DataValidationError("missing column", file=where, field=name)
    if table.num_rows == 0:
        raise DataValidationError("no items to add", file=where)
    ids = _int_ids(table, "item_id", file)
    _refuse_duplicates(ids, existing, where)
    codes = _domain_codes(table, domains, where)
    texts = _item_text(table, text_fields, file)
    extra = {"image_path": _image_paths(table, file)} \
        if "image_path" in table.column_names else {}
    return NewItems(ids, codes, texts, extra)


def _refuse_duplicates(ids: np.ndarray, existing: np.ndarray, where: str) -> None:
    seen: dict[int, int] = {}
    for row, i in enumerate(ids.tolist(), start=1):
        if i in seen:
            raise DataValidationError(f"duplicate item_id {i} (also row {seen[i]})",
                                      file=where, row=row, field="item_id")
        seen[i] = row
    clash = np.flatnonzero(np.isin(ids, existing))
    if clash.size:
        row = int(clash[0])
        raise DataValidationError(f"item_id {ids[row]} is already in the catalogue",
                                  file=where, row=row + 1, field="item_id")


def _domain_codes(table: pa.Table, domains: list[str], where: str) -> np.ndarray:
    index = {d: i for i, d in enumerate(domains)}
    out = []
    for row, d in enumerate(table.column("domain").to_pylist(), start=1):
        if d not in index:
            raise DataValidationError(f"unknown domain {d!r} (known: {domains})", file=where,
                                      row=row, field="domain")
        out.append(index[d])
    return np.asarray(out, np.int64)


# ---- vectors -------------------------------------------------------------------------
def _encode(base: Path, items: NewItems, threads: int) -> dict[str, np.ndarray]:
    """transferable/residual/full per new item through the published encoder + adapter
    (the encoder on ``threads`` intra-op threads: this is a batch job, not a server call)."""
    from xemb.serving.models import ColdStartEncoder

    enc = ColdStartEncoder(base / layout.ENCODER_DIR, base / layout.ADAPTER_ONNX, threads)
    parts: dict[str, np.ndarray] = {}
    order = np.argsort([len(t) for t in items.texts], kind="stable")  # less padding
    for code in np.unique(items.domain):
        rows = order[items.domain[order] == code]
        for s in range(0, len(rows), ENCODE_BATCH):
            batch = rows[s:s + ENCODE_BATCH]
            out = enc.adapt(enc.semantic([items.texts[i] for i in batch]), int(code))
            for name, x in out.items():
                parts.setdefault(name, np.zeros((len(items.ids), x.shape[1]), np.float32))
                parts[name][batch] = x
    return parts


def _assign_intents(base: Path, transferable: np.ndarray, top_m: int, temperature: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The intents stage's assignment (embedders/intents.py::build_intents) against the
    published centroids: unit-normalise, nearest top_m by inner product, softmax."""
    from xemb.embedders.intents import _softmax, _unit

    table = pq.read_table(base / layout.INTENTS, columns=["intent_id", "vector"])
    table = table.sort_by("intent_id")
    width = table.schema.field("vector").type.list_size
    col = table.column("vector").combine_chunks()
    centroids = np.ascontiguousarray(col.flatten().to_numpy().reshape(-1, width), np.float32)
    index = faiss.IndexFlatIP(width)
    index.add(centroids)
    sims, ids = index.search(_unit(transferable), min(top_m, len(centroids)))
    return ids.astype(np.int64), _softmax(sims, temperature)


# ---- the new version's files -----------------------------------------------------------
def _column(name: str, field: pa.Field, n: int, values: dict[str, Any]) -> pa.Array:
    if name not in values:
        return pa.nulls(n, field.type)  # a column this code does not know: null for new rows
    v = values[name]
    if isinstance(v, np.ndarray) and v.ndim == 2:
        flat = pa.array(np.ascontiguousarray(v).reshape(-1), field.type.value_type)
        if pa.types.is_fixed_size_list(field.type):
            return pa.FixedSizeListArray.from_arrays(flat, v.shape[1])
        offsets = pa.array(np.arange(0, v.size + 1, v.shape[1], dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, flat).cast(field.type)
    return pa.array(v, field.type) if not isinstance(v, pa.Array) else v.cast(field.type)


def _write_items(base: Path, out: Path, domains: list[str], items: NewItems,
                 parts: dict[str, np.ndarray], intent_ids: np.ndarray,
                 intent_w: np.ndarray) -> None:
    old = pq.read_table(base / layout.ITEMS)
    n = len(items.ids)
    values: dict[str, Any] = {
        "item_id": items.ids, "domain": [domains[c] for c in items.domain],
        "text": items.texts, "intent_ids": intent_ids, "intent_weights": intent_w,
        "warm": np.zeros(n, bool), **parts, **items.extra}
    new = pa.table({f.name: _column(f.name, f, n, values) for f in old.schema},
                   schema=old.schema)
    merged = pa.concat_tables([old, new])
    order = np.argsort(merged.column("item_id").to_numpy(), kind="stable")
    merged = merged.take(pa.array(order))
    pq.write_table(merged, out / layout.ITEMS, compression="zstd")
    write_ipc(items_for_serving(merged, domains, intent_ids.shape[1]),  # the serving copy
              out / layout.ITEMS_ARROW)


def _write_indexes(base: Path, out: Path, domains: list[str], items: NewItems,
                   full: np.ndarray, manifest: Manifest) -> list[str]:
    """Add the new vectors to a copy of each affected domain's index (ids = item ids)."""
    changed = []
    for code in np.unique(items.domain):
        rel = layout.index_file(domains[int(code)])
        if rel not in manifest.files:
            continue  # a version without that index: the server searches exactly
        index = faiss.read_index(str(base / rel))
        sel = items.domain == code
        index.add_with_ids(np.ascontiguousarray(full[sel]), items.ids[sel])
        faiss.write_index(index, str(out / rel))
        changed.append(rel)
    return changed


def _new_manifest(base: Manifest, version: str, items: NewItems, seconds: dict[str, float]
                  ) -> Manifest:
    counts = dict(base.counts)
    counts["items"] = base.counts.get("items", 0) + len(items.ids)
    metrics = json.loads(json.dumps(base.metrics))
    note = (f"carried over from {base.version}: the {len(items.ids)} items added by "
            f"`xemb add-items` were not evaluated")
    if isinstance(metrics.get("quality"), dict):
        metrics["quality"]["note"] = note
    added = {base.domains[int(c)]: int(k) for c, k in
             zip(*np.unique(items.domain, return_counts=True), strict=True)}
    metrics["add_items"] = {"derived_from": base.version, "items_added": len(items.ids),
                            "per_domain": added, "timings_s": seconds}
    return base.model_copy(update={
        "version": version, "created_at": datetime.now(timezone.utc).isoformat(),
        "counts": counts, "files": {}, "metrics": metrics,
        "params": {**base.params, "derived_from": base.version}})


# ---- the lifecycle ---------------------------------------------------------------------
def feast_fingerprint(cfg: XembConfig) -> str | None:
    """Same as ``xemb.embedders.publish.feast_fingerprint`` (that module needs torch)."""
    if not cfg.feast.enabled:
        return None
    return config_hash(cfg, ("feast",), include={"online_store", "redis_url", "project"})


def _stage(store: VersionStore, cfg: XembConfig, base_version: str, file: Path,
           clock: Callable[[str], None], timings: dict[str, float]
           ) -> tuple[str, np.ndarray]:
    base = store.path(base_version)
    manifest = store.manifest(base_version)
    if layout.ENCODER_ONNX not in manifest.files or layout.ADAPTER_ONNX not in manifest.files:
        raise FailedPrecondition(f"version {base_version} has no published encoder/adapter "
                                 f"(build with encoder.export_onnx: true)")
    existing = pq.read_table(base / layout.ITEMS, columns=["item_id"]).column(0).to_numpy()
    items = read_new_items(file, cfg.data.text_fields, manifest.domains, existing)
    clock("read")
    parts = _encode(base, items, cfg.build.threads or os.cpu_count() or 1)
    clock("encode")
    ids, w = _assign_intents(base, parts["transferable"], int(manifest.params["top_m"]),
                             cfg.intents.temperature)
    clock("intents")
    version, out = store.new_staging()
    try:
        _write_items(base, out, manifest.domains, items, parts, ids, w)
        changed = _write_indexes(base, out, manifest.domains, items, parts["full"], manifest)
        for rel in manifest.files:
            if rel not in (layout.ITEMS, layout.ITEMS_ARROW) and rel not in changed:
                link_or_copy(base / rel, out / rel)
        clock("write")
        new = _new_manifest(manifest, version, items, dict(timings))
        store.commit(out, new)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    clock("commit")
    return version, items.ids


def _publish(store: VersionStore, cfg: XembConfig, version: str, base_version: str,
             new_ids: np.ndarray) -> None:
    """verify -> loadable like the server loads it -> Feast slot -> ledger (published)."""
    from xemb.serving.retrieval import SearchKnobs
    from xemb.serving.version import load_version

    try:
        load_version(store, version, SearchKnobs())  # verifies every checksum first
        if cfg.feast.enabled:  # SQLite: the base's slot + the new rows; else everything
            from xemb.feature_repo.derive import publish_derived

            publish_derived(cfg, store, version, base_version, new_ids)
        record = store.published_record(base_version) or {}
        store.mark_published(version, {"build": record.get("build"),
                                       "feast": feast_fingerprint(cfg),
                                       "derived_from": base_version})
    except BaseException:
        _discard(store, cfg, version)
        raise


def _discard(store: VersionStore, cfg: XembConfig, version: str) -> None:
    try:
        store.discard(version)
        if cfg.feast.enabled:
            from xemb.feature_repo.publish import collect_garbage as feast_gc

            feast_gc(store)
    except Exception as exc:  # the original failure matters more; the next build cleans up
        _log(f"add-items: could not remove failed {version} yet ({exc})")


def _after_switch(store: VersionStore, cfg: XembConfig) -> None:
    """Offline history and garbage, best effort (the switch itself is done and recorded)."""
    store.gc(cfg.build.keep_versions)
    if not cfg.feast.enabled:
        return
    try:
        from xemb.feature_repo.publish import collect_garbage as feast_gc

        feast_gc(store)  # brings the offline history up to the switch log, drops old slots
    except Exception as exc:
        _log(f"add-items: Feast history/cleanup not done this time ({type(exc).__name__}: "
             f"{exc}); the next build or `xemb feast export` does it")


def add_items(cfg: XembConfig, file: Path, *, wait: bool = False) -> dict[str, Any]:
    """Add the items of ``file`` to a new version derived from CURRENT and make it current.
    Returns what was done (version, derived_from, counts, timings)."""
    store = VersionStore(cfg.build.root)
    t0 = last = time.perf_counter()
    timings: dict[str, float] = {}

    def clock(step: str) -> None:
        nonlocal last
        now = time.perf_counter()
        timings[step], last = round(now - last, 3), now

    with RootLock(cfg.build.root, wait=wait, what="add-items"):
        base_version = store.current()
        store.require_selectable(base_version)
        version, new_ids = _stage(store, cfg, base_version, file, clock, timings)
        _publish(store, cfg, version, base_version, new_ids)
        clock("publish")
        store.set_current(version, reason="add-items")
        _after_switch(store, cfg)
        clock("switch")
    timings["total"] = round(time.perf_counter() - t0, 3)
    manifest = store.manifest(version)
    return {"version": version, "derived_from": base_version,
            "items_added": manifest.metrics["add_items"]["items_added"],
            "items": manifest.counts["items"], "timings_s": timings}

