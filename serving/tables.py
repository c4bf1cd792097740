"""The published Parquet tables, held in memory as NumPy arrays for id lookups.

Loaded once per version; every array is read-only afterwards, so request threads share them
without locks. Vectors are kept exactly as stored (float32), so what the service returns is
bit-identical to the tables.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from xemb.errors import VersionIntegrityError
from xemb.layout import VECTOR_PARTS

__all__ = ["ItemTable", "IntentTable", "UserTable", "read_items", "read_intents", "read_users"]


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr = np.ascontiguousarray(arr)
    arr.setflags(write=False)
    return arr


def _vectors(table: pa.Table, column: str, width: int, where: str) -> np.ndarray:
    """A fixed_size_list<float32>[width] column as a [rows, width] float32 array."""
    col = table.column(column).combine_chunks()
    flat = col.flatten().to_numpy(zero_copy_only=False)
    if flat.dtype != np.float32 or flat.size != len(col) * width:
        raise VersionIntegrityError(f"{where}: column {column!r} is not float32[{width}]")
    return _frozen(flat.reshape(len(col), width))


def _ragged(table: pa.Table, column: str, width: int, dtype: type) -> np.ndarray:
    """A list column as a [rows, width] array, short rows padded with zeros (weight 0)."""
    col = table.column(column).combine_chunks()
    lengths = pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False)
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    out: np.ndarray = np.zeros((len(col), width), dtype=dtype)
    take = np.minimum(lengths, width)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    for j in range(width):
        has = take > j
        out[has, j] = flat[starts[has] + j]
    return _frozen(out)


def _domain_codes(values: pa.ChunkedArray, domains: list[str], where: str) -> np.ndarray:
    idx = pc.index_in(pc.cast(values, pa.string()), value_set=pa.array(domains, pa.string()))
    if idx.null_count:
        raise VersionIntegrityError(f"{where}: a domain outside the manifest's {domains}")
    return _frozen(idx.to_numpy(zero_copy_only=False).astype(np.int64))


@dataclass(frozen=True)
class ItemTable:
    ids: np.ndarray
    """int64 [n], ascending and unique (searchsorted lookups)."""
    domain: np.ndarray
    """int64 [n], index into the manifest's domains."""
    parts: dict[str, np.ndarray]
    """``full``/``transferable``/``residual`` -> float32 [n, d]."""
    intent_ids: np.ndarray
    """int64 [n, m]: each item's top-m atomic intents (padded with 0, weight 0)."""
    intent_w: np.ndarray
    """float32 [n, m]."""

    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row of each id and whether it was found (rows of missing ids are 0, not valid)."""
        rows = np.searchsorted(self.ids, ids)
        rows[rows >= len(self.ids)] = 0
        found = self.ids[rows] == ids if len(self.ids) else np.zeros(len(ids), bool)
        rows[~found] = 0
        return rows, found


def read_items(path: Path, domains: list[str], d: int, m: int) -> ItemTable:
    where = path.name
    table = pq.read_table(path)
    ids = table.column("item_id").to_numpy().astype(np.int64)
    order = np.argsort(ids, kind="stable")
    if len(ids) and (np.diff(ids[order]) == 0).any():
        raise VersionIntegrityError(f"{where}: duplicate item_id")
    if not (order == np.arange(len(ids))).all():
        table = table.take(pa.array(order))
    return ItemTable(
        ids=_frozen(table.column("item_id").to_numpy().astype(np.int64)),
        domain=_domain_codes(table.column("domain"), domains, where),
        parts={p: _vectors(table, p, d, where) for p in VECTOR_PARTS},
        intent_ids=_ragged(table, "intent_ids", m, np.int64),
        intent_w=_ragged(table, "intent_weights", m, np.float32),
    )


@dataclass(frozen=True)
class IntentTable:
    labels: list[str]
    """Label of intent i at position i (the composer's output order)."""
    vectors: np.ndarray
    """float32 [K, d]."""
    domain_labels: list[dict[str, str]] = field(default_factory=list)
    """Label of intent i per domain (empty dicts for versions published before them)."""


def read_intents(path: Path, d: int) -> IntentTable:
    table = pq.read_table(path).sort_by("intent_id")
    ids = table.column("intent_id").to_numpy()
    if not (ids == np.arange(len(ids))).all():
        raise VersionIntegrityError(f"{path.name}: intent ids are not 0..K-1")
    per_domain = (table.column("domain_labels").to_pylist()
                  if "domain_labels" in table.column_names else ["{}"] * len(ids))
    return IntentTable(labels=table.column("label").to_pylist(),
                       vectors=_vectors(table, "vector", d, path.name),
                       domain_labels=[json.loads(s or "{}") for s in per_domain])


@dataclass(frozen=True)
class UserTable:
    rows: dict[int, dict[str, int]]
    """Target domain index -> {user_id: row} (str keys: nothing for the GC to scan)."""
    vectors: np.ndarray
    """float32 [rows, d]."""
    top_ids: np.ndarray
    """int64 [rows, t]: stored top intents, padded."""
    top_w: np.ndarray
    """float32 [rows, t]."""
    top_len: np.ndarray
    """int64 [rows]: how many of ``top_ids`` are real."""

    def get(self, user_id: str, domain: int) -> int | None:
        return self.rows.get(domain, {}).get(user_id)


def read_users(path: Path, domains: list[str], d: int) -> UserTable:
    if not path.is_file():
        empty = np.zeros((0, 1), np.int64)
        return UserTable({}, np.zeros((0, d), np.float32), empty, empty.astype(np.float32),
                         np.zeros(0, np.int64))
    table = pq.read_table(path)
    codes = _domain_codes(table.column("target_domain"), domains, path.name)
    rows: dict[int, dict[str, int]] = {code: {} for code in range(len(domains))}
    for i, (user, code) in enumerate(zip(table.column("user_id").to_pylist(), codes.tolist(),
                                         strict=True)):
        rows[code][user] = i
    lengths = pc.list_value_length(table.column("top_intent_ids")).fill_null(0)
    lengths = _frozen(lengths.to_numpy(zero_copy_only=False).astype(np.int64))
    width = max(1, int(lengths.max(initial=0)))
    return UserTable(rows=rows, vectors=_vectors(table, "vector", d, path.name),
                     top_ids=_ragged(table, "top_intent_ids", width, np.int64),
                     top_w=_ragged(table, "top_intent_weights", width, np.float32),
                     top_len=lengths)
