"""The one server interceptor: auth, deadline, metrics and the XembError -> status mapping.

Servicers raise :class:`xemb.errors.XembError` subclasses and nothing else; this is the only
place that turns them into gRPC status codes (each class names its code in ``grpc_code``). The
field a bad request names travels in the message and in the trailing metadata ``xemb-field``.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import grpc

from xemb.errors import (
    ConfigError,
    DeadlineExceeded,
    ResourceExhausted,
    Unauthenticated,
    XembError,
)
from xemb.serving.admission import Admission
from xemb.serving.decoding import Undecodable, lenient
from xemb.serving.metrics import Metrics

__all__ = ["ServiceInterceptor", "TokenAuth", "status_code", "clip", "FIELD_KEY"]

log = logging.getLogger("xemb.serving")
FIELD_KEY = "xemb-field"
OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
MAX_DETAILS = 1024  # status details travel in trailers (8 KiB of metadata in all)


def status_code(exc: XembError) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, exc.grpc_code, grpc.StatusCode.INTERNAL)


class TokenAuth:
    """Bearer tokens from a file, one a line; compared in constant time."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = [t.encode() for t in tokens if t]
        if not self._tokens:
            raise ConfigError("serving.auth_tokens_file holds no token")

    @classmethod
    def from_file(cls, path: Path) -> TokenAuth:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"serving.auth_tokens_file: cannot read {path}") from exc
        return cls(line.strip() for line in lines if not line.startswith("#"))

    def check(self, metadata: Iterable[tuple[str, str | bytes]]) -> None:
        header = next((v for k, v in metadata or () if k == "authorization"), None)
        if header is None:
            raise Unauthenticated("authorization: missing bearer token")
        scheme, _, token = str(header).partition(" ")
        if scheme.lower() != "bearer" or not any(
                hmac.compare_digest(token.strip().encode(), t) for t in self._tokens):
            raise Unauthenticated("authorization: invalid bearer token")


def _abort(context: grpc.ServicerContext, exc: XembError) -> None:
    field = getattr(exc, "field", None)
    if field:
        context.set_trailing_metadata(((FIELD_KEY, field),))
    context.abort(status_code(exc), clip(str(exc), MAX_DETAILS))


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _deadline_passed(context: grpc.ServicerContext) -> bool:
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0


class ServiceInterceptor(grpc.ServerInterceptor):
    """Wraps every unary method: auth, admission, then the deadline, then the call, timed and
    mapped. A request that does not parse is refused here too (INVALID_ARGUMENT, counted).

    Streaming methods (health Watch, reflection) only get the auth and admission checks.
    """

    def __init__(self, metrics: Metrics, auth: TokenAuth | None = None,
                 admission: Admission | None = None) -> None:
        self.metrics, self.auth, self.admission = metrics, auth, admission
        self._admitted: dict[str, grpc.RpcMethodHandler] = {}
        self._inner: dict[str, grpc.RpcMethodHandler] = {}

    def intercept_service(self, continuation, details):
        method = details.method
        denied = self._authenticate(method, details.invocation_metadata)
        handler = self._inner.get(method) or continuation(details)
        if handler is None:
            return None
        self._inner[method] = handler
        if self.admission is not None and not self.admission.enter():  # last: no raise after
            denied = denied or ResourceExhausted(
                f"more than {self.admission.limit} calls at once; retry later")
        if denied is None and method in self._admitted:
            return self._admitted[method]  # the wrapped handler of an admitted call is shared
        if handler.unary_unary is None:
            return handler if denied is None else _denied_stream(handler, denied)
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._unary(handler.unary_unary, method.rsplit("/", 1)[-1], denied),
            request_deserializer=lenient(handler.request_deserializer),
            response_serializer=handler.response_serializer)
        if denied is None:
            self._admitted[method] = wrapped
        return wrapped

    def _authenticate(self, method: str, metadata) -> XembError | None:
        if self.auth is None or method in OPEN_METHODS:
            return None
        try:
            self.auth.check(metadata)
        except Unauthenticated as exc:
            return exc
        return None

    def _unary(self, inner: Callable, method: str, denied: XembError | None) -> Callable:
        def behavior(request, context):
            start, code = time.perf_counter(), "OK"
            self.metrics.in_flight.inc()
            try:
                if denied is not None:
                    raise denied
                if isinstance(request, Undecodable):
                    raise request.error
                if _deadline_passed(context):  # waited in the queue past the deadline
                    raise DeadlineExceeded("deadline expired before the call started")
                return inner(request, context)
            except XembError as exc:
                code = exc.grpc_code
                _abort(context, exc)
            except Exception as exc:
                if context.code() is not None:  # the handler aborted itself (grpc's own)
                    code = context.code().name
                    raise
                code = "INTERNAL"
                log.exception("%s failed", method)
                context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")
            finally:
                self.metrics.in_flight.dec()
                self.metrics.observe(method, code, time.perf_counter() - start)
        return behavior


def _denied_stream(handler: grpc.RpcMethodHandler, exc: XembError) -> grpc.RpcMethodHandler:
    """Streaming methods (reflection) refused before they start, with the same mapping."""
    def refuse_stream(_, context):
        _abort(context, exc)
        yield  # pragma: no cover - abort raises

    def refuse_unary(_, context):
        _abort(context, exc)

    kw = {"request_deserializer": handler.request_deserializer,
          "response_serializer": handler.response_serializer}
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(refuse_stream, **kw)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, **kw)
    return grpc.stream_unary_rpc_method_handler(refuse_unary, **kw)
