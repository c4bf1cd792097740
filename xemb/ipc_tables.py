"""The serving copies of the published tables: Arrow IPC files a server memory-maps.

``items.arrow`` and ``users.arrow`` (see :mod:`xemb.layout`) hold what the online path reads,
in fixed-width columns and in an order that makes lookups arithmetic: items by domain, then
id (each domain's vectors are one contiguous slice), users by target domain, then a 64-bit key
of the user id (sorted: ``searchsorted``, no dict per user). Written uncompressed in one record
batch, so every column is a zero-copy NumPy view over the mapped file, shared by every process
(and every kept version whose file is a hard link) through the page cache.

The same conversions turn a Parquet table into this layout in memory, which is how versions
published before these files existed are served. NumPy and pyarrow only (no torch).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["items_for_serving", "users_for_serving", "write_ipc", "read_ipc", "user_keys",
           "fixed_list", "as_matrix", "one_chunk"]

VECTOR_PARTS = ("full", "transferable", "residual")


def user_keys(user_ids: Iterable[str]) -> np.ndarray:
    """uint64 key of each user id: the first 8 bytes of its BLAKE2b digest (little-endian).
    Keys may collide; readers compare the id itself at the rows a key finds."""
    blob = b"".join(hashlib.blake2b(u.encode("utf-8", "surrogatepass"), digest_size=8).digest()
                    for u in user_ids)
    return np.frombuffer(blob, dtype="<u8").astype(np.uint64, copy=False)


def fixed_list(x: np.ndarray, dtype: pa.DataType) -> pa.FixedSizeListArray:
    """A [n, w] array as fixed_size_list<dtype>[w] (no copy when already contiguous)."""
    x = np.ascontiguousarray(x)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), dtype), x.shape[1])


def one_chunk(column: pa.ChunkedArray) -> pa.Array:
    """The column as one array: its only chunk as is (``combine_chunks`` would copy it)."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def as_matrix(column: pa.ChunkedArray | pa.Array, width: int, dtype: np.dtype | type,
              where: str) -> np.ndarray:
    """A fixed_size_list column as a read-only [rows, width] array (a view when it is one
    chunk of ``dtype``, as in a mapped IPC file)."""
    arr = one_chunk(column) if isinstance(column, pa.ChunkedArray) else column
    flat = arr.flatten().to_numpy(zero_copy_only=False)
    if flat.dtype != np.dtype(dtype) or flat.size != len(arr) * width:
        raise ValueError(f"{where}: column is not {np.dtype(dtype)}[{width}]")
    out = flat.reshape(len(arr), width)
    out.setflags(write=False)
    return out


def _ragged(column: pa.ChunkedArray, width: int, dtype: type) -> np.ndarray:
    """A list column as [rows, width], short rows padded with zeros (weight 0)."""
    col = column.combine_chunks()
    if pa.types.is_fixed_size_list(col.type):
        return np.asarray(as_matrix(col, col.type.list_size, dtype, "list")[:, :width],
                          dtype=dtype)
    lengths = pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False)
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    out: np.ndarray = np.zeros((len(col), width), dtype=dtype)
    take = np.minimum(lengths, width)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    for j in range(width):
        has = take > j
        out[has, j] = flat[starts[has] + j]
    return out


def domain_codes(values: pa.ChunkedArray, domains: list[str], where: str) -> np.ndarray:
    idx = pc.index_in(pc.cast(values, pa.string()), value_set=pa.array(domains, pa.string()))
    if idx.null_count:
        raise ValueError(f"{where}: a domain outside the manifest's {domains}")
    return idx.to_numpy(zero_copy_only=False).astype(np.int64)


def _vectors(table: pa.Table, column: str, where: str) -> np.ndarray:
    width = table.schema.field(column).type.list_size
    return as_matrix(table.column(column), width, np.float32, f"{where}: {column!r}")


def items_for_serving(table: pa.Table, domains: list[str], top_m: int,
                      where: str = "items", *, by_domain: bool = True) -> pa.Table:
    """An ``items.parquet`` table -> the ``items.arrow`` layout (ordered by domain, id; by id
    alone with ``by_domain=False``, the order offline code indexes rows in)."""
    ids = table.column("item_id").to_numpy().astype(np.int64)
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"{where}: duplicate item_id")
    codes = domain_codes(table.column("domain"), domains, where)
    order = np.lexsort((ids, codes)) if by_domain else np.argsort(ids, kind="stable")
    cols: dict[str, pa.Array] = {"item_id": pa.array(ids[order]),
                                 "domain": pa.array(codes[order])}
    for part in VECTOR_PARTS:
        cols[part] = fixed_list(_vectors(table, part, where)[order], pa.float32())
    cols["intent_ids"] = fixed_list(_ragged(table.column("intent_ids"), top_m,
                                            np.int64)[order], pa.int64())
    cols["intent_weights"] = fixed_list(_ragged(table.column("intent_weights"), top_m,
                                                np.float32)[order], pa.float32())
    return pa.table(cols)


def users_for_serving(table: pa.Table, domains: list[str], where: str = "users") -> pa.Table:
    """A ``users.parquet`` table -> the ``users.arrow`` layout (ordered by domain, key)."""
    users = table.column("user_id").combine_chunks()
    keys = user_keys(users.to_pylist())
    codes = domain_codes(table.column("target_domain"), domains, where)
    order = np.lexsort((keys, codes))
    top = table.column("top_intent_ids")
    lengths = pc.list_value_length(top.combine_chunks()).fill_null(0) \
        .to_numpy(zero_copy_only=False).astype(np.int64) \
        if not pa.types.is_fixed_size_list(top.type) else np.full(len(table), top.type.list_size)
    width = max(1, int(lengths.max(initial=0)))
    return pa.table({
        "user_key": pa.array(keys[order], pa.uint64()),
        "user_id": users.take(pa.array(order)),
        "target_domain": pa.array(codes[order]),
        "vector": fixed_list(_vectors(table, "vector", where)[order], pa.float32()),
        "top_intent_ids": fixed_list(_ragged(top, width, np.int64)[order], pa.int64()),
        "top_intent_weights": fixed_list(
            _ragged(table.column("top_intent_weights"), width, np.float32)[order],
            pa.float32()),
        "top_len": pa.array(lengths[order]),
    })


def write_ipc(table: pa.Table, path: Path) -> None:
    """One uncompressed record batch (every column one buffer: zero-copy when mapped)."""
    table = table.combine_chunks()
    with pa.OSFile(str(path), "wb") as sink, \
            pa.ipc.new_file(sink, table.schema,
                            options=pa.ipc.IpcWriteOptions(compression=None)) as writer:
        writer.write_table(table, max_chunksize=max(1, table.num_rows))


def read_ipc(path: Path) -> pa.Table:
    """Memory-map an IPC file; the table's buffers point into the mapping (no read, no copy)."""
    source = pa.memory_map(str(path), "r")
    return pa.ipc.open_file(source).read_all()
