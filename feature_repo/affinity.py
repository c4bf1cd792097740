"""Request-time affinity between a user-intent vector and an item's ``full`` vector.

``item_user_affinity`` is the body of the on-demand feature view. Feast stores its source
text in the registry and re-executes it in a bare namespace on every reader, so the body
only imports this module; the math and the input checks live here, in the installed package.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from xemb.errors import FailedPrecondition, InvalidArgument

__all__ = ["item_user_affinity", "affinity_columns"]

_FULL_KEYS = ("full", "item_embeddings__full")
_USER_KEYS = ("user_vector", "user_vector_request__user_vector")
_F32_MAX = float(np.finfo(np.float32).max)
_ITEM_VERSION_KEYS = ("xemb_version", "item_embeddings__xemb_version")
_USER_VERSION_KEYS = ("user_vector_version", "user_vector_request__user_vector_version")


def item_user_affinity(inputs: dict) -> dict:
    from xemb.feature_repo.affinity import affinity_from_inputs

    return affinity_from_inputs(inputs)


def _pick(inputs: dict[str, Any], keys: tuple[str, ...]) -> Sequence[Any]:
    for key in keys:
        if key in inputs:
            return inputs[key]
    raise InvalidArgument(f"missing input column (have {sorted(inputs)})", field=keys[0])


def check_versions(item_versions: Sequence[Any], user_versions: Sequence[Any]) -> None:
    """One version per request: the user vector's version must be the items' version."""
    for row, (item, user) in enumerate(zip(item_versions, user_versions, strict=False)):
        if item is not None and item != user:
            raise FailedPrecondition(
                f"user_vector_version: row {row}: the user vector comes from version {user!r} "
                f"but Feast answers from version {item!r}; compose it again on {item!r}")


def affinity_from_inputs(inputs: dict[str, Any]) -> dict[str, list[float | None]]:
    check_versions(_pick(inputs, _ITEM_VERSION_KEYS), _pick(inputs, _USER_VERSION_KEYS))
    return affinity_columns(_pick(inputs, _FULL_KEYS), _pick(inputs, _USER_KEYS))


def _fits_float32(values: np.ndarray) -> bool:
    """|x| <= float32 max: then the float64 norms and dot products below cannot overflow."""
    return values.size == 0 or float(np.abs(values).max()) <= _F32_MAX


def _request_vector(value: Any, row: int, dim: int | None) -> np.ndarray:
    """One request vector as float64, or InvalidArgument naming the row and the problem."""
    field = "user_vector"
    if value is None:
        raise InvalidArgument(f"row {row}: missing (pass one vector per entity row)", field=field)
    try:
        vec = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"row {row}: not a list of numbers ({exc})", field=field) from exc
    if vec.ndim != 1:
        raise InvalidArgument(f"row {row}: expected a flat vector, got shape {vec.shape}",
                              field=field)
    if dim is not None and vec.shape[0] != dim:
        raise InvalidArgument(f"row {row}: expected {dim} values (the item vector width), "
                              f"got {vec.shape[0]}", field=field)
    if not np.isfinite(vec).all():
        raise InvalidArgument(f"row {row}: contains NaN or infinite values", field=field)
    if not _fits_float32(vec):
        raise InvalidArgument(f"row {row}: values beyond the float32 range (|x| > "
                              f"{_F32_MAX:.3g}); the feature is Array(Float32)", field=field)
    return vec


def _request_matrix(user: Sequence[Any], dim: int | None) -> np.ndarray:
    """All request vectors as one float64 matrix; a bad one is named by its row."""
    try:
        mat = np.asarray(user, dtype=np.float64)
    except (TypeError, ValueError):
        mat = None
    if mat is None or mat.ndim != 2 or (dim is not None and mat.shape[1] != dim) \
            or not np.isfinite(mat).all() or not _fits_float32(mat):
        for row, value in enumerate(user):  # slow path only to name the offending row
            _request_vector(value, row, dim)
        raise InvalidArgument("request vectors have different lengths", field="user_vector")
    return mat


def affinity_columns(full: Sequence[Any], user: Sequence[Any]) -> dict[str, list[float | None]]:
    """Dot product and cosine per row; ``None`` where the item is unknown.

    Cosine is 0.0 when either vector has zero norm (never NaN).
    """
    if len(full) != len(user):
        raise InvalidArgument(f"{len(user)} request vectors for {len(full)} rows",
                              field="user_vector")
    present = [i for i, vec in enumerate(full) if vec is not None]
    items = np.asarray([full[i] for i in present], dtype=np.float64)
    users = _request_matrix(user, items.shape[1] if present else None)
    dots: list[float | None] = [None] * len(full)
    coss: list[float | None] = [None] * len(full)
    if present:
        u = users[present]
        dot = np.einsum("ij,ij->i", u, items)
        norm = np.linalg.norm(u, axis=1) * np.linalg.norm(items, axis=1)
        cos = np.divide(dot, norm, out=np.zeros_like(dot), where=norm > 0)
        for j, i in enumerate(present):
            dots[i], coss[i] = float(dot[j]), float(cos[j])
    return {"affinity_dot": dots, "affinity_cosine": coss}
