"""Property-based fuzzing of every request field of every xemb.v1 method.

Requests are drawn from the message descriptors (so a field added to the proto is fuzzed
without touching this file), mixed with values the served version knows (ids, domains,
users, its version id) so that calls get past validation too, and sometimes mutated at the
byte level (a flipped byte, a cut) so the decoder sees invalid UTF-8 and broken wire data.
The property: every answer is OK or a client-error status (never INTERNAL, UNKNOWN, ...),
and every OK answer holds finite numbers only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.figures import Figures
from xemb.serving.wire import F32
from xemb.v1 import xemb_pb2 as pb

__all__ = ["Hints", "ALLOWED", "METHODS", "call_strategy", "send", "fuzz_grpc"]

SERVICE = pb.DESCRIPTOR.services_by_name["EmbeddingService"]
METHODS = {m.name: m for m in SERVICE.methods}
ALLOWED = frozenset({"OK", "INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION"})
FD = FieldDescriptor
_INT64 = (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64)
_INT32 = (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32)


@dataclass(frozen=True)
class Hints:
    """Values the served version knows, so fuzzed calls also reach the real work."""

    ids: tuple[int, ...]
    strings: tuple[str, ...]  # domains, user ids, the version id, words of item texts
    dim: int


def _floats() -> st.SearchStrategy[float]:
    return st.one_of(st.floats(-2.0, 2.0, width=32),
                     st.floats(allow_nan=True, allow_infinity=True, width=32),
                     st.sampled_from([3.4e38, -3.4e38, 1e-45, 0.0]))


def _tensor(h: Hints) -> st.SearchStrategy[pb.Tensor]:
    vector = st.lists(_floats(), min_size=h.dim, max_size=h.dim).map(
        lambda v: pb.Tensor(data=np.asarray(v, F32).tobytes(), shape=[h.dim]))
    shape = st.lists(st.one_of(st.integers(-2, 2 * h.dim), st.integers(-(2**63), 2**63 - 1)),
                     max_size=4)
    raw = st.builds(lambda d, s: pb.Tensor(data=d, shape=s), st.binary(max_size=4 * h.dim + 8),
                    shape)
    return st.one_of(vector, raw)


def _scalar(f: FieldDescriptor, h: Hints, depth: int) -> st.SearchStrategy[Any]:
    if f.type in _INT64:
        return st.one_of(st.sampled_from(h.ids), st.integers(-3, 3),
                         st.integers(-(2**63), 2**63 - 1))
    if f.type in _INT32:
        return st.one_of(st.integers(-3, 40), st.integers(-(2**31), 2**31 - 1))
    if f.type == FD.TYPE_ENUM:
        return st.integers(-3, 5)
    if f.type == FD.TYPE_BOOL:
        return st.booleans()
    if f.type == FD.TYPE_STRING:
        return st.one_of(st.sampled_from(h.strings), st.text(max_size=30),
                         st.just("x" * 20_000), st.just(""))
    if f.type == FD.TYPE_BYTES:
        return st.binary(max_size=64)
    if f.type in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
        return _floats()
    if f.message_type.full_name == pb.Tensor.DESCRIPTOR.full_name:
        return _tensor(h)
    return message_strategy(f.message_type, h, depth + 1)


def _field(f: FieldDescriptor, h: Hints, depth: int) -> st.SearchStrategy[Any]:
    one = _scalar(f, h, depth)
    if f.message_type is not None and f.message_type.GetOptions().map_entry:
        return st.just({})  # no request has a map; keep it empty if one appears
    return st.lists(one, max_size=60) if f.is_repeated else one


def message_strategy(d: Descriptor, h: Hints, depth: int = 0) -> st.SearchStrategy[Message]:
    cls = _class(d)
    if depth > 2:
        return st.just(cls())
    fields = {f.name: _field(f, h, depth) for f in d.fields}
    return st.fixed_dictionaries({}, optional=fields).map(lambda kw: _build(cls, kw))


def _class(d: Descriptor) -> type[Message]:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(d)


def _build(cls: type[Message], values: dict[str, Any]) -> Message:
    msg = cls()
    for name, value in values.items():
        if isinstance(value, Message):
            getattr(msg, name).CopyFrom(value)
        elif isinstance(value, list):
            _extend(getattr(msg, name), value)
        else:
            setattr(msg, name, value)
    return msg


def _extend(field: Any, values: list[Any]) -> None:
    for value in values:
        if isinstance(value, Message):
            field.add().CopyFrom(value)
        else:
            field.append(value)


def _mutate(data: bytes, how: tuple[int, int, int]) -> bytes:
    kind, at, byte = how
    if not data or kind == 0:
        return data
    i = at % len(data)
    if kind == 1:
        return data[:i] + bytes([byte]) + data[i + 1:]  # one byte replaced
    return data[:i]  # cut


def call_strategy(h: Hints) -> st.SearchStrategy[tuple[str, bytes]]:
    """(method, request bytes): a fuzzed message, mutated at the byte level one time in four."""
    mutation = st.one_of(st.just((0, 0, 0)), st.just((0, 0, 0)), st.just((0, 0, 0)),
                         st.tuples(st.integers(1, 2), st.integers(0, 1 << 16),
                                   st.integers(0, 255)))
    per_method = [st.tuples(st.just(name), message_strategy(m.input_type, h), mutation)
                  for name, m in METHODS.items()]
    return st.one_of(per_method).map(
        lambda t: (t[0], _mutate(t[1].SerializeToString(), t[2])))


def _finite(msg: Message) -> bool:
    """Every float and every tensor in an answer is finite."""
    for f, value in msg.ListFields():
        values = value if f.is_repeated else [value]
        if f.type in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE) and not np.isfinite(list(values)).all():
            return False
        if f.type != FD.TYPE_MESSAGE:
            continue
        for v in values:
            if isinstance(v, pb.Tensor):
                if not np.isfinite(np.frombuffer(v.data, F32)).all():
                    return False
            elif isinstance(v, Message) and not _finite(v):
                return False
    return True


def send(channel: grpc.Channel, method: str, payload: bytes,
         timeout: float = 10.0) -> tuple[str, float, str]:
    """(status name, seconds, detail) of one raw call; OK answers are checked for finiteness."""
    call = channel.unary_unary(f"/{SERVICE.full_name}/{method}")
    start = time.perf_counter()
    try:
        answer = call(payload, timeout=timeout)
    except grpc.RpcError as exc:
        return exc.code().name, time.perf_counter() - start, exc.details() or ""
    seconds = time.perf_counter() - start
    parsed = _class(METHODS[method].output_type).FromString(answer)
    return ("OK" if _finite(parsed) else "OK_NON_FINITE"), seconds, ""


def fuzz_grpc(channel: grpc.Channel, hints: Hints, examples: int, *,
              derandomize: bool = True, figures: Figures | None = None) -> Figures:
    """Send ``examples`` fuzzed calls; a forbidden outcome fails at once (shrunk by
    hypothesis) after it was counted in the returned figures. ``derandomize``: the same
    examples every run (CI); soak runs draw new ones."""
    figures = figures or Figures("gRPC fuzz: every request field")

    @settings(max_examples=examples, deadline=None, database=None, derandomize=derandomize,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(call=call_strategy(hints))
    def check(call: tuple[str, bytes]) -> None:
        method, payload = call
        code, seconds, detail = send(channel, method, payload)
        ok = code in ALLOWED
        figures.record(code, seconds, expected=ok, example=f"{method} {payload[:60]!r} {detail}")
        assert ok, f"{method}: {code} {detail}"

    check()
    return figures
