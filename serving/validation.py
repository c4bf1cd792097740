"""Request checks: each failure is an InvalidArgument whose message starts with the field.

Checks run before any work and return NumPy arrays the operations can use directly; they know
the limits (ServingConfig) and the version the request was pinned to (domains, width).
"""

from __future__ import annotations

import numpy as np

from xemb.errors import InvalidArgument
from xemb.serving.version import LoadedVersion
from xemb.serving.wire import from_tensor
from xemb.settings.serving import ServingConfig
from xemb.v1 import xemb_pb2 as pb

__all__ = ["ids", "domain", "history", "top_intents", "k", "query_vector", "query_matrix",
           "texts", "part", "user_id", "shown"]

MAX_USER_ID_CHARS = 256
SHOWN_CHARS = 64
MAX_SCORE = float(np.finfo(np.float32).max) / 4  # headroom for float32 rounding in sums
PARTS: dict[int, str] = {pb.PART_FULL: "full", pb.PART_TRANSFERABLE: "transferable",
         pb.PART_RESIDUAL: "residual"}


def shown(value: str, limit: int = SHOWN_CHARS) -> str:
    """``repr`` of a caller's string for an error message, cut to ``limit`` characters."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}... ({len(value)} chars)"


def ids(values, field: str, limit: int, *, allow_empty: bool = False) -> np.ndarray:
    """A repeated int64 field as an int64 array, bounded in length."""
    n = len(values)
    if n == 0 and not allow_empty:
        raise InvalidArgument("must not be empty", field=field)
    if n > limit:
        raise InvalidArgument(f"{n} ids, at most {limit} per call", field=field)
    return np.array(values, dtype=np.int64)  # from the repeated field directly: fast path


def part(value: int) -> str:
    if value not in PARTS:
        raise InvalidArgument(f"unknown part {value}", field="part")
    return PARTS[value]


def domain(v: LoadedVersion, name: str, field: str) -> int:
    code = v.domain_id(name) if name else None
    if code is None:
        what = f"unknown domain {shown(name)}" if name else "required"
        raise InvalidArgument(f"{what} (known: {', '.join(v.domains)})", field=field)
    return code


def user_id(value: str, field: str) -> str:
    if len(value) > MAX_USER_ID_CHARS:
        raise InvalidArgument(f"{len(value)} characters, at most {MAX_USER_ID_CHARS}",
                              field=field)
    return value


def history(v: LoadedVersion, h: pb.History, cfg: ServingConfig,
            prefix: str = "history") -> np.ndarray:
    """Item ids oldest first (sorted by timestamp when given), checked for length and shape."""
    items = ids(h.item_ids, f"{prefix}.item_ids", cfg.max_sequence_len, allow_empty=True)
    n = len(items)
    if len(h.domains) not in (0, n):
        raise InvalidArgument(f"{len(h.domains)} values for {n} items", field=f"{prefix}.domains")
    for i, name in enumerate(h.domains):
        if v.domain_id(name) is None:
            raise InvalidArgument(f"unknown domain {shown(name)} (known: {', '.join(v.domains)})",
                                  field=f"{prefix}.domains[{i}]")
    if len(h.timestamps) not in (0, n):
        raise InvalidArgument(f"{len(h.timestamps)} values for {n} items",
                              field=f"{prefix}.timestamps")
    if len(h.timestamps):
        items = items[np.argsort(np.array(h.timestamps, np.int64), kind="stable")]
    return items


def top_intents(v: LoadedVersion, value: int, field: str = "top_intents") -> int:
    n = len(v.intents.labels)
    if value < 0 or value > n:
        raise InvalidArgument(f"{value} is outside 0..{n}", field=field)
    return value or int(v.manifest.params["top_intents"])


def k(value: int, cfg: ServingConfig) -> int:
    if not 1 <= value <= cfg.max_k:
        raise InvalidArgument(f"{value} is outside 1..{cfg.max_k}", field="k")
    return value


def query_vector(v: LoadedVersion, tensor: pb.Tensor, target: int,
                 field: str = "vector") -> np.ndarray:
    """A [d] (or [1, d]) finite vector whose scores against ``target``'s items stay finite."""
    arr = from_tensor(tensor, field, width=v.dim, finite=True)
    if arr.ndim != 1 and not (arr.ndim == 2 and arr.shape[0] == 1):
        raise InvalidArgument(f"shape {list(arr.shape)}, expected [{v.dim}]",
                              field=f"{field}.shape")
    norm = float(np.linalg.norm(arr.astype(np.float64)))
    if norm * v.indexes[target].max_norm > MAX_SCORE:
        raise InvalidArgument(f"norm {norm:.3g} is too large: its inner products with "
                              f"{v.domains[target]!r} items would overflow float32", field=field)
    return arr.reshape(-1)


def query_matrix(v: LoadedVersion, tensor: pb.Tensor, target: int, limit: int,
                 field: str = "vectors") -> np.ndarray:
    """An [n, d] matrix of finite query vectors, 1 <= n <= ``limit``, each checked like
    :func:`query_vector` (row i named ``vectors[i]``)."""
    arr = from_tensor(tensor, field, width=v.dim, finite=True)
    if arr.ndim != 2:
        raise InvalidArgument(f"shape {list(arr.shape)}, expected [n, {v.dim}]",
                              field=f"{field}.shape")
    if not 1 <= len(arr) <= limit:
        raise InvalidArgument(f"{len(arr)} rows, expected 1..{limit}", field=f"{field}.shape")
    norms = np.linalg.norm(arr.astype(np.float64), axis=1)
    too_big = np.flatnonzero(norms * v.indexes[target].max_norm > MAX_SCORE)
    if len(too_big):
        i = int(too_big[0])
        raise InvalidArgument(f"norm {norms[i]:.3g} is too large: its inner products with "
                              f"{v.domains[target]!r} items would overflow float32",
                              field=f"{field}[{i}]")
    return arr


def texts(values, cfg: ServingConfig) -> list[str]:
    out = list(values)
    if not out:
        raise InvalidArgument("must not be empty", field="texts")
    if len(out) > cfg.max_encode_texts:
        raise InvalidArgument(f"{len(out)} texts, at most {cfg.max_encode_texts} per call",
                              field="texts")
    for i, text in enumerate(out):
        if not text.strip():
            raise InvalidArgument("empty text", field=f"texts[{i}]")
        if len(text) > cfg.max_text_chars:
            raise InvalidArgument(f"{len(text)} characters, at most {cfg.max_text_chars}",
                                  field=f"texts[{i}]")
    return out
