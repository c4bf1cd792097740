"""The published tables as read-only NumPy arrays, memory-mapped where the version allows.

A version with ``items.arrow``/``users.arrow`` (see :mod:`xemb.ipc_tables`) is served from
zero-copy views over the mapped files: the vectors live once in the page cache, shared by
every server process on the host and by kept versions that hard-link the same file. Older
versions are read from Parquet and converted to the same layout in memory. Either way the
vectors are exactly as stored (float32), so responses are bit-identical to the tables, and
no lookup keeps a Python object per item or per user: ids are found with ``searchsorted``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from xemb import layout
from xemb.errors import VersionIntegrityError
from xemb.ipc_tables import (
    as_matrix,
    items_for_serving,
    one_chunk,
    read_ipc,
    user_keys,
    users_for_serving,
)
from xemb.layout import VECTOR_PARTS

__all__ = ["ItemTable", "IntentTable", "UserTable", "read_items", "load_items", "read_intents",
           "load_users"]


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr = np.ascontiguousarray(arr)
    arr.setflags(write=False)
    return arr


def _column(table: pa.Table, name: str) -> np.ndarray:
    """A primitive column as a read-only array (a view over a one-chunk mapped column)."""
    return _frozen(one_chunk(table.column(name)).to_numpy(zero_copy_only=False))


def _bounds(codes: np.ndarray, n_domains: int, where: str) -> np.ndarray:
    """Row bounds of each domain (codes must be sorted): domain c is rows [b[c], b[c+1])."""
    if len(codes) and (codes.min() < 0 or codes.max() >= n_domains or
                       (np.diff(codes) < 0).any()):
        raise VersionIntegrityError(f"{where}: rows are not ordered by a known domain")
    return np.searchsorted(codes, np.arange(n_domains + 1)).astype(np.int64)


@dataclass(frozen=True)
class ItemTable:
    ids: np.ndarray
    """int64 [n]: ascending within each domain."""
    domain: np.ndarray
    """int64 [n], index into the manifest's domains (rows grouped by domain)."""
    parts: dict[str, np.ndarray]
    """``full``/``transferable``/``residual`` -> float32 [n, d]."""
    intent_ids: np.ndarray
    """int64 [n, m]: each item's top-m atomic intents (padded with 0, weight 0)."""
    intent_w: np.ndarray
    """float32 [n, m]."""
    bounds: np.ndarray | None
    """int64 [domains + 1]: domain c holds rows ``bounds[c]:bounds[c + 1]`` (None for a table
    in id order, as :func:`read_items` gives offline code)."""
    by_id: np.ndarray
    """int64 [n]: all ids ascending (``searchsorted`` lookups)."""
    by_id_rows: np.ndarray | None
    """Row of ``by_id[i]``; None when ``ids`` is already ascending (``by_id is ids``)."""
    mapped: bool = False
    """True when the arrays are views over a memory-mapped ``items.arrow``."""

    def __len__(self) -> int:
        return len(self.ids)

    def domain_rows(self, code: int) -> slice:
        if self.bounds is None:
            raise ValueError("items in id order have no domain slices")
        return slice(int(self.bounds[code]), int(self.bounds[code + 1]))

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row of each id and whether it was found (rows of missing ids are 0, not valid)."""
        if not len(self.by_id):
            return np.zeros(len(ids), np.int64), np.zeros(len(ids), bool)
        pos = np.searchsorted(self.by_id, ids)
        pos[pos >= len(self.by_id)] = 0
        found = self.by_id[pos] == ids
        rows = pos if self.by_id_rows is None else self.by_id_rows[pos]
        rows[~found] = 0
        return rows, found


def _items_table(table: pa.Table, n_domains: int, d: int, m: int, where: str,
                 mapped: bool, grouped: bool = True) -> ItemTable:
    ids, codes = _column(table, "item_id").astype(np.int64, copy=False), _column(table, "domain")
    bounds = _bounds(codes, n_domains, where) if grouped else None
    if (np.diff(ids) > 0).all():
        by_id, by_id_rows = ids, None
    else:
        order = np.argsort(ids, kind="stable")
        by_id, by_id_rows = _frozen(ids[order]), _frozen(order.astype(np.int64))
        if (np.diff(by_id) == 0).any():
            raise VersionIntegrityError(f"{where}: duplicate item_id")
    return ItemTable(
        ids=ids, domain=codes,
        parts={p: as_matrix(table.column(p), d, np.float32, f"{where}: {p!r}")
               for p in VECTOR_PARTS},
        intent_ids=as_matrix(table.column("intent_ids"), m, np.int64, where),
        intent_w=as_matrix(table.column("intent_weights"), m, np.float32, where),
        bounds=bounds, by_id=by_id, by_id_rows=by_id_rows, mapped=mapped)


def read_items(path: Path, domains: list[str], d: int, m: int) -> ItemTable:
    """``items.parquet`` in id order (row i is the i-th smallest id), for offline code that
    indexes rows by the dataset's sorted ids; no domain slices."""
    try:
        table = items_for_serving(pq.read_table(path), domains, m, path.name, by_domain=False)
    except ValueError as exc:
        raise VersionIntegrityError(str(exc)) from exc
    return _items_table(table, len(domains), d, m, path.name, False, grouped=False)


def load_items(base: Path, files: dict, domains: list[str], d: int, m: int) -> ItemTable:
    """``items.arrow`` memory-mapped when the version lists it, else ``items.parquet``
    (converted in memory); rows grouped by domain."""
    if layout.ITEMS_ARROW in files:
        table, mapped, where = read_ipc(base / layout.ITEMS_ARROW), True, layout.ITEMS_ARROW
        width = table.schema.field("intent_ids").type.list_size
        if width != m:
            raise VersionIntegrityError(f"{where}: intent_ids hold {width}, top_m is {m}")
    else:
        where = layout.ITEMS
        table = items_for_serving(pq.read_table(base / layout.ITEMS), domains, m, where)
        mapped = False
    return _items_table(table, len(domains), d, m, where, mapped)


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
                       vectors=_frozen(as_matrix(table.column("vector"), d, np.float32,
                                                 path.name)),
                       domain_labels=[json.loads(s or "{}") for s in per_domain])


@dataclass(frozen=True)
class UserTable:
    keys: np.ndarray
    """uint64 [rows]: :func:`xemb.ipc_tables.user_keys` of each row, ascending per domain."""
    user_ids: pa.Array
    """string [rows]: the ids themselves (checked where a key matches: keys may collide)."""
    bounds: np.ndarray
    """int64 [domains + 1]: target domain c holds rows ``bounds[c]:bounds[c + 1]``."""
    vectors: np.ndarray
    """float32 [rows, d]."""
    top_ids: np.ndarray
    """int64 [rows, t]: stored top intents, padded."""
    top_w: np.ndarray
    """float32 [rows, t]."""
    top_len: np.ndarray
    """int64 [rows]: how many of ``top_ids`` are real."""

    def lookup(self, user_ids: list[str], domain: int) -> np.ndarray:
        """Row of each user id for ``domain``; -1 where the user is not stored."""
        lo, hi = int(self.bounds[domain]), int(self.bounds[domain + 1])
        keys = user_keys(user_ids)
        pos = np.searchsorted(self.keys[lo:hi], keys) + lo
        rows = np.full(len(user_ids), -1, np.int64)
        for i, (p, key, user) in enumerate(zip(pos.tolist(), keys.tolist(), user_ids,
                                               strict=True)):
            while p < hi and int(self.keys[p]) == key:
                if self.user_ids[p].as_py() == user:
                    rows[i] = p
                    break
                p += 1
        return rows

    def get(self, user_id: str, domain: int) -> int | None:
        row = int(self.lookup([user_id], domain)[0])
        return None if row < 0 else row


def _empty_users(n_domains: int, d: int) -> UserTable:
    empty = np.zeros((0, 1), np.int64)
    return UserTable(np.zeros(0, np.uint64), pa.array([], pa.string()),
                     np.zeros(n_domains + 1, np.int64), np.zeros((0, d), np.float32), empty,
                     empty.astype(np.float32), np.zeros(0, np.int64))


def load_users(base: Path, files: dict, domains: list[str], d: int) -> UserTable:
    """``users.arrow`` memory-mapped when the version lists it, else ``users.parquet``."""
    if layout.USERS_ARROW in files:
        table, where = read_ipc(base / layout.USERS_ARROW), layout.USERS_ARROW
    elif (base / layout.USERS).is_file():
        where = layout.USERS
        table = users_for_serving(pq.read_table(base / layout.USERS), domains, where)
    else:
        return _empty_users(len(domains), d)
    codes = _column(table, "target_domain")
    width = table.schema.field("top_intent_ids").type.list_size
    users = table.column("user_id")
    return UserTable(
        keys=_column(table, "user_key"),
        user_ids=one_chunk(users),
        bounds=_bounds(codes, len(domains), where),
        vectors=as_matrix(table.column("vector"), d, np.float32, where),
        top_ids=as_matrix(table.column("top_intent_ids"), width, np.int64, where),
        top_w=as_matrix(table.column("top_intent_weights"), width, np.float32, where),
        top_len=_column(table, "top_len"))
