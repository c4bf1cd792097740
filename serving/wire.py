"""Vectors on the wire: packed little-endian float32 bytes with their shape.

Several times cheaper to build and parse in Python than ``repeated float``; both the server and
the client go through these two functions so the byte order and dtype live in one place.
"""

from __future__ import annotations

import math

import numpy as np

from xemb.errors import InvalidArgument
from xemb.v1 import xemb_pb2 as pb

__all__ = ["to_tensor", "from_tensor", "F32"]

F32 = np.dtype("<f4")
MAX_DIMS = 8


def _show(shape: tuple[int, ...]) -> str:
    return str(list(shape[:MAX_DIMS]))[:-1] + (", ...]" if len(shape) > MAX_DIMS else "]")


def to_tensor(array: np.ndarray) -> pb.Tensor:
    """Pack an array as little-endian float32 (no copy when it already is one, C-ordered)."""
    arr = np.ascontiguousarray(array, dtype=F32)
    return pb.Tensor(data=arr.tobytes(), shape=arr.shape)


def from_tensor(tensor: pb.Tensor, field: str = "tensor", *, width: int | None = None,
                finite: bool = False) -> np.ndarray:
    """Unpack a tensor; raise InvalidArgument naming ``field`` when it is malformed.

    ``width`` checks the last dimension (the embedding width); ``finite`` rejects NaN/Inf.
    The result is a read-only view over the message bytes.
    """
    shape = tuple(int(s) for s in tensor.shape)
    if not 0 < len(shape) <= MAX_DIMS or any(s < 0 for s in shape):
        raise InvalidArgument(f"bad shape {_show(shape)}", field=f"{field}.shape")
    if len(tensor.data) != F32.itemsize * math.prod(shape):  # Python ints: no overflow
        raise InvalidArgument(f"{len(tensor.data)} bytes do not hold float32{_show(shape)}",
                              field=f"{field}.data")
    if width is not None and shape[-1] != width:
        raise InvalidArgument(f"vector length {shape[-1]}, expected {width}", field=field)
    arr = np.frombuffer(tensor.data, dtype=F32).reshape(shape)
    if finite and not np.isfinite(arr).all():
        raise InvalidArgument("contains NaN or Inf", field=field)
    return arr
