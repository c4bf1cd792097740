"""Entity ids are checked against the entity's type before any lookup.

Feast turns an id of the wrong type into a key that simply never matches, so a ranking model
would get empty features instead of an error. Here it gets InvalidArgument naming the key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from feast.value_type import ValueType

from xemb.errors import InvalidArgument

__all__ = ["check_entity_rows", "join_key_types"]

_INT_TYPES = (ValueType.INT64, ValueType.INT32)


def join_key_types(registry: Any, project: str) -> dict[str, ValueType]:
    return {e.join_key: e.value_type for e in registry.list_entities(project, allow_cache=True)}


def _columns(entity_rows: Any) -> Iterable[tuple[str, list[Any]]]:
    if isinstance(entity_rows, Mapping):
        return ((k, list(v)) for k, v in entity_rows.items())
    if not entity_rows:
        return ()
    keys = entity_rows[0].keys()
    return ((k, [row.get(k) for row in entity_rows]) for k in keys)


def _ok(value: Any, vtype: ValueType) -> bool:
    if vtype in _INT_TYPES:
        return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if vtype == ValueType.STRING:
        return isinstance(value, str)
    return True


def check_entity_rows(types: Mapping[str, ValueType], entity_rows: Any) -> None:
    """Raise InvalidArgument for the first id whose Python type does not fit its entity."""
    for key, values in _columns(entity_rows):
        vtype = types.get(key)
        if vtype is None:
            continue
        for row, value in enumerate(values):
            if not _ok(value, vtype):
                want = "an integer (int64)" if vtype in _INT_TYPES else "a string"
                raise InvalidArgument(f"row {row}: expected {want} id, got "
                                      f"{type(value).__name__} {value!r}", field=key)
