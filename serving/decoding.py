"""Request bytes -> message, with a bad message answered as INVALID_ARGUMENT.

grpc turns an exception in a request deserializer into INTERNAL ("Exception deserializing
request!") before any interceptor runs, and logs a traceback. :func:`lenient` wraps the
generated deserializer so that a message that does not parse (invalid UTF-8 in a string
field, truncated bytes) becomes an :class:`Undecodable` carrying an InvalidArgument; the
interceptor raises it like any other XembError, so it is mapped, logged and counted in one
place. :func:`bad_utf8_field` walks the wire format with the message descriptor to name the
offending field (``history.domains[1]``), because the parser's own error does not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from xemb.errors import InvalidArgument

__all__ = ["Undecodable", "lenient", "bad_utf8_field"]

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


@dataclass(frozen=True)
class Undecodable:
    """Stands in for a request that did not parse; ``error`` says why."""

    error: InvalidArgument


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]  # IndexError on truncated input: the caller gives up
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def _length_delimited(field: FieldDescriptor, chunk: bytes, name: str) -> str | None:
    if field.type == FieldDescriptor.TYPE_STRING:
        try:
            chunk.decode("utf-8")
        except UnicodeDecodeError:
            return name
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        return bad_utf8_field(field.message_type, chunk, name + ".")
    return None


def _skip(wire: int, data: bytes, pos: int) -> int:
    if wire == _VARINT:
        return _varint(data, pos)[1]
    if wire in (_I64, _I32):
        return pos + (8 if wire == _I64 else 4)
    raise ValueError(f"wire type {wire}")  # groups are not used by xemb.v1


def bad_utf8_field(descriptor: Descriptor, data: bytes, prefix: str = "") -> str | None:
    """The path of the first string field holding invalid UTF-8, or None if none is found."""
    pos, seen = 0, dict[int, int]()
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            number, wire = key >> 3, key & 7
            if wire != _LEN:
                pos = _skip(wire, data, pos)
                continue
            size, pos = _varint(data, pos)
            chunk, pos = data[pos:pos + size], pos + size
            field = descriptor.fields_by_number.get(number)
            if field is None:
                continue
            name = prefix + field.name
            if field.is_repeated:
                seen[number] = seen.get(number, -1) + 1
                name += f"[{seen[number]}]"
            found = _length_delimited(field, chunk, name)
            if found:
                return found
    except (IndexError, ValueError):
        return None
    return None


def _describe(descriptor: Descriptor | None, data: bytes, exc: Exception) -> InvalidArgument:
    field = bad_utf8_field(descriptor, data) if descriptor is not None else None
    if field is not None:
        return InvalidArgument("not valid UTF-8", field=field)
    kind = descriptor.full_name if descriptor is not None else "request"
    return InvalidArgument(f"not a valid {kind} message ({type(exc).__name__})",
                           field="request")


def lenient(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """Wrap a generated ``Message.FromString``: parse errors become :class:`Undecodable`."""
    if deserialize is None:
        return None
    owner = getattr(deserialize, "__self__", None)
    descriptor: Descriptor | None = getattr(owner, "DESCRIPTOR", None)

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # protobuf DecodeError, or anything a parser raises
            try:
                return Undecodable(_describe(descriptor, data, exc))
            except Exception:  # naming the field is a courtesy; never fail the refusal
                return Undecodable(InvalidArgument("not a valid message", field="request"))

    return parse
