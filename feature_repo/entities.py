"""Entity rows are checked before Feast sees them.

Feast turns an id of the wrong type into a key that simply never matches, so a ranking model
would get empty features instead of an error; an int64 id out of range, an empty request
vector or no rows at all end in a bare ValueError, TypeError or IndexError deep inside it.
Here each gets InvalidArgument naming the key (or ``entity_rows``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from feast.value_type import ValueType

from xemb.errors import InvalidArgument
from xemb.feature_repo import names

__all__ = ["check_entity_rows", "join_key_types"]

_INT_TYPES = (ValueType.INT64, ValueType.INT32)
_INT_RANGE = {ValueType.INT64: (-(2**63), 2**63 - 1), ValueType.INT32: (-(2**31), 2**31 - 1)}
ROWS = "entity_rows"


def join_key_types(registry: Any, project: str) -> dict[str, ValueType]:
    return {e.join_key: e.value_type for e in registry.list_entities(project, allow_cache=True)}


def _list_like(value: Any) -> bool:
    return (hasattr(value, "__len__") and hasattr(value, "__iter__")
            and not isinstance(value, (str, bytes, Mapping)))


def _row_columns(rows: Sequence[Any]) -> list[tuple[str, list[Any]]]:
    if not rows:
        raise InvalidArgument("no rows (pass at least one entity row)", field=ROWS)
    if isinstance(rows[0], Mapping) and not rows[0]:
        raise InvalidArgument("row 0: no keys", field=ROWS)
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise InvalidArgument(f"row {i}: expected a dict, got {type(row).__name__}",
                                  field=ROWS)
        if i and row.keys() != rows[0].keys():
            raise InvalidArgument(f"row {i}: keys {sorted(row)} differ from row 0's "
                                  f"{sorted(rows[0])}", field=ROWS)
    return [(k, [row[k] for row in rows]) for k in rows[0]]


def _mapping_columns(columns: Mapping[str, Any]) -> list[tuple[str, list[Any]]]:
    out = [(k, list(v)) if _list_like(v) else _not_a_column(k) for k, v in columns.items()]
    lengths = {len(v) for _, v in out}
    if not out or lengths == {0}:
        raise InvalidArgument("no rows (pass at least one entity row)", field=ROWS)
    if len(lengths) > 1:
        raise InvalidArgument(f"columns of different lengths {sorted(lengths)}", field=ROWS)
    return out


def _not_a_column(key: str) -> tuple[str, list[Any]]:
    raise InvalidArgument("expected a list of values (one per row)", field=key)


def _columns(entity_rows: Any) -> Iterable[tuple[str, list[Any]]]:
    if isinstance(entity_rows, Mapping):
        return _mapping_columns(entity_rows)
    if _list_like(entity_rows):
        return _row_columns(list(entity_rows))
    raise InvalidArgument(f"expected a list of dicts or a dict of lists, got "
                          f"{type(entity_rows).__name__}", field=ROWS)


def _id_problem(value: Any, vtype: ValueType) -> str | None:
    if vtype in _INT_TYPES:
        if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
            return f"expected an integer ({vtype.name.lower()}) id"
        low, high = _INT_RANGE[vtype]
        return None if low <= int(value) <= high else f"outside the {vtype.name.lower()} range"
    if vtype == ValueType.STRING and not isinstance(value, str):
        return "expected a string id"
    return None


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 64 else text[:64] + '...'}"


def _check_vector(values: list[Any]) -> None:
    """Feast infers the request field's type from the values: an empty or non-list value
    fails there. None is left to the affinity view, which names it as missing."""
    for row, value in enumerate(values):
        if value is None:
            continue
        if not _list_like(value):
            raise InvalidArgument(f"row {row}: expected a list of numbers, got {_show(value)}",
                                  field=names.REQUEST_VECTOR)
        if len(value) == 0:
            raise InvalidArgument(f"row {row}: empty vector", field=names.REQUEST_VECTOR)


def _check_inferable(values: list[Any], key: str) -> None:
    """Feast infers an extra column's type from its values: an empty list or dict fails."""
    for row, value in enumerate(values):
        if isinstance(value, (Mapping, list, tuple)) and not value:
            raise InvalidArgument(f"row {row}: empty {type(value).__name__} (no type to infer)",
                                  field=key)


def _check_text(values: list[Any], key: str) -> None:
    for row, value in enumerate(values):
        if value is not None and not isinstance(value, str):
            raise InvalidArgument(f"row {row}: expected a string, got {_show(value)}", field=key)


def check_entity_rows(types: Mapping[str, ValueType], entity_rows: Any) -> None:
    """Raise InvalidArgument for malformed rows, or the first id that does not fit its
    entity (wrong type, out of range), or a request field of the wrong shape."""
    for key, values in _columns(entity_rows):
        if key == names.REQUEST_VECTOR:
            _check_vector(values)
        elif key == names.REQUEST_VERSION:
            _check_text(values, key)
        vtype = types.get(key)
        if vtype is None:
            _check_inferable(values, key)
            continue
        for row, value in enumerate(values):
            problem = _id_problem(value, vtype)
            if problem:
                raise InvalidArgument(f"row {row}: {problem}, got {_show(value)}", field=key)
