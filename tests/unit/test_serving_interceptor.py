"""The one interceptor: every XembError maps to its status, auth, deadline, metrics."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import grpc
import pytest

from xemb import errors
from xemb.serving.interceptors import FIELD_KEY, ServiceInterceptor, TokenAuth, status_code
from xemb.serving.metrics import Metrics


class Aborted(Exception):
    pass


class FakeContext:
    def __init__(self, remaining: float = 10.0) -> None:
        self.remaining, self.status, self.details, self.trailing = remaining, None, None, ()

    def time_remaining(self) -> float:
        return self.remaining

    def set_trailing_metadata(self, md) -> None:
        self.trailing = md

    def code(self):
        return self.status

    def abort(self, code, details):
        self.status, self.details = code, details
        raise Aborted(details)


def _call(interceptor, behavior, *, metadata=(), method="/xemb.v1.EmbeddingService/Retrieve",
          remaining=10.0):
    handler = grpc.unary_unary_rpc_method_handler(behavior)
    details = SimpleNamespace(method=method, invocation_metadata=metadata)
    wrapped = interceptor.intercept_service(lambda d: handler, details)
    ctx = FakeContext(remaining)
    try:
        return wrapped.unary_unary("req", ctx), ctx
    except Aborted:
        return None, ctx


ALL_ERRORS = [c for _, c in inspect.getmembers(errors, inspect.isclass)
              if issubclass(c, errors.XembError)]


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_every_error_class_maps_to_a_real_status(cls):
    code = status_code(cls.__new__(cls))
    assert code.name == cls.grpc_code
    if cls is not errors.XembError:
        assert code is not grpc.StatusCode.INTERNAL


def _raiser(exc):
    def behavior(request, context):
        raise exc
    return behavior


def test_invalid_argument_maps_with_field_in_trailers():
    _, ctx = _call(ServiceInterceptor(Metrics()),
                   _raiser(errors.InvalidArgument("is outside 1..1000", field="k")))
    assert ctx.status is grpc.StatusCode.INVALID_ARGUMENT
    assert ctx.details == "k: is outside 1..1000"
    assert dict(ctx.trailing)[FIELD_KEY] == "k"


def test_unexpected_exception_is_internal_without_leaking_details():
    _, ctx = _call(ServiceInterceptor(Metrics()), _raiser(KeyError("secret path")))
    assert ctx.status is grpc.StatusCode.INTERNAL and "secret" not in ctx.details


def test_expired_deadline_runs_no_work():
    ran = []
    _, ctx = _call(ServiceInterceptor(Metrics()), lambda r, c: ran.append(1), remaining=0.0)
    assert ctx.status is grpc.StatusCode.DEADLINE_EXCEEDED and not ran


def test_metrics_count_latency_and_errors():
    m = Metrics()
    _call(ServiceInterceptor(m), lambda r, c: "ok")
    _call(ServiceInterceptor(m), _raiser(errors.NotFound("x")))
    get = m.registry.get_sample_value
    assert get("xemb_requests_total", {"method": "Retrieve", "code": "OK"}) == 1
    assert get("xemb_errors_total", {"method": "Retrieve", "code": "NOT_FOUND"}) == 1
    assert get("xemb_request_latency_seconds_count", {"method": "Retrieve"}) == 2
    assert get("xemb_in_flight_requests") == 0


@pytest.mark.parametrize(("metadata", "ok"), [
    ((), False),
    ((("authorization", "Bearer nope"),), False),
    ((("authorization", "Basic s3cret"),), False),
    ((("authorization", "Bearer s3cret"),), True),
    ((("authorization", "bearer other"),), True),
])
def test_token_auth(metadata, ok):
    interceptor = ServiceInterceptor(Metrics(), TokenAuth(["s3cret", "other"]))
    result, ctx = _call(interceptor, lambda r, c: "done", metadata=metadata)
    assert (result == "done") is ok
    if not ok:
        assert ctx.status is grpc.StatusCode.UNAUTHENTICATED


def test_health_check_needs_no_token():
    interceptor = ServiceInterceptor(Metrics(), TokenAuth(["s3cret"]))
    result, _ = _call(interceptor, lambda r, c: "up", method="/grpc.health.v1.Health/Check")
    assert result == "up"


def test_token_file_without_tokens_is_a_config_error(tmp_path):
    (tmp_path / "t").write_text("# nothing\n\n")
    with pytest.raises(errors.ConfigError):
        TokenAuth.from_file(tmp_path / "t")
