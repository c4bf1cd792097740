"""Synthetic versions with the published layout, for tests and benchmarks of the Feast layer.

Feast only reads the three Parquet tables, so a version with random vectors of the right
schema exercises it fully without training anything.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from xemb import layout
from xemb.store import Manifest, VersionStore, new_version_id

__all__ = ["make_version", "derive_version", "copy_version"]

DOMAINS = ("food", "kitchen")


def _vectors(rng: np.random.Generator, n: int, dim: int) -> pa.FixedSizeListArray:
    flat = rng.standard_normal(n * dim).astype(np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float32()), dim)


def _lists(values: np.ndarray, type_: pa.DataType) -> pa.ListArray:
    n, m = values.shape
    offsets = pa.array(np.arange(0, n * m + 1, m, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.ravel(), type=type_))


def _weights(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    w = rng.random((n, m)).astype(np.float32) + 0.1
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def _items(rng: np.random.Generator, n: int, dim: int, k: int, m: int) -> pa.Table:
    trans, resid = _vectors(rng, n, dim), _vectors(rng, n, dim)
    full_flat = (trans.flatten().to_numpy() + resid.flatten().to_numpy()).astype(np.float32)
    full = pa.FixedSizeListArray.from_arrays(pa.array(full_flat), dim)
    return pa.table({
        "item_id": pa.array(np.arange(1, n + 1, dtype=np.int64) * 7),
        "domain": pa.array([DOMAINS[i % 2] for i in range(n)]),
        "text": pa.array([f"item {i}" for i in range(n)]),
        "full": full, "transferable": trans, "residual": resid,
        "intent_ids": _lists(rng.integers(0, k, size=(n, m)).astype(np.int64), pa.int64()),
        "intent_weights": _lists(_weights(rng, n, m), pa.float32()),
        "warm": pa.array([i % 3 != 0 for i in range(n)]),
    })


def _intents(rng: np.random.Generator, k: int, dim: int) -> pa.Table:
    return pa.table({
        "intent_id": pa.array(np.arange(k, dtype=np.int64)),
        "vector": _vectors(rng, k, dim),
        "label": pa.array([f"intent {i}" for i in range(k)]),
        "support": pa.array(rng.integers(1, 50, size=k).astype(np.int64)),
        "domain_support": pa.array(['{"food": 1, "kitchen": 2}'] * k),
    })


def _users(rng: np.random.Generator, n: int, dim: int, k: int) -> pa.Table:
    rows = n * len(DOMAINS)
    return pa.table({
        "user_id": pa.array([f"u{i // len(DOMAINS)}" for i in range(rows)]),
        "target_domain": pa.array([DOMAINS[i % len(DOMAINS)] for i in range(rows)]),
        "vector": _vectors(rng, rows, dim),
        "top_intent_ids": _lists(rng.integers(0, k, size=(rows, 3)).astype(np.int64),
                                 pa.int64()),
        "top_intent_weights": _lists(_weights(rng, rows, 3), pa.float32()),
    })


def make_version(store: VersionStore, *, n_items: int = 200, n_users: int = 40,
                 n_intents: int = 16, dim: int = 16, seed: int = 0,
                 created_at: datetime | None = None) -> str:
    """Commit a version of random vectors; returns its id (not made current)."""
    created_at = created_at or datetime.now(timezone.utc)
    rng = np.random.default_rng(seed)
    version, staging = store.new_staging(new_version_id(created_at))
    pq.write_table(_items(rng, n_items, dim, n_intents, 4), staging / layout.ITEMS)
    pq.write_table(_intents(rng, n_intents, dim), staging / layout.INTENTS)
    pq.write_table(_users(rng, n_users, dim, n_intents), staging / layout.USERS)
    manifest = Manifest(version=version, created_at=created_at.isoformat(),
                        domains=list(DOMAINS), dims={"embedding": dim, "semantic": dim},
                        counts={"items": n_items, "users": n_users * len(DOMAINS),
                                "intents": n_intents})
    store.commit(staging, manifest)
    store.mark_published(version)  # a synthetic version counts as fully published
    return version


def derive_version(store: VersionStore, source: str, *, seed: int = 1,
                   created_at: datetime | None = None) -> str:
    """A new version with ``source``'s ids and schema but different vectors."""
    created_at = created_at or datetime.now(timezone.utc)
    rng = np.random.default_rng(seed)
    version, staging = store.new_staging(new_version_id(created_at))
    base = store.path(source)
    for name in (layout.ITEMS, layout.INTENTS, layout.USERS):
        table = pq.read_table(base / name)
        for i, field in enumerate(table.schema):
            if pa.types.is_fixed_size_list(field.type):
                n, dim = table.num_rows, field.type.list_size
                table = table.set_column(i, field.name, _vectors(rng, n, dim))
        pq.write_table(table, staging / name)
    old = store.manifest(source)
    manifest = old.model_copy(update={"version": version, "created_at": created_at.isoformat(),
                                      "files": {}})
    store.commit(staging, manifest)
    store.mark_published(version)  # a synthetic version counts as fully published
    return version


def copy_version(source: VersionStore, version: str, dest: VersionStore) -> str:
    """Copy a committed version into another root (e.g. a real build into a test root)."""
    import shutil

    dest.versions_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source.path(version), dest.versions_dir / version)
    dest.verify(version)
    dest.mark_published(version)
    return version
