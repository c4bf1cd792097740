"""Input a hostile client can send that protobuf itself accepts or half-accepts: each gets
its proper status (never INTERNAL), names the field, is counted in ``xemb_errors_total``,
and leaves the server healthy."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from tests.helpers.synthetic_serving import publish_synthetic, running
from xemb.serving.interceptors import FIELD_KEY
from xemb.serving.wire import to_tensor
from xemb.v1 import xemb_pb2 as pb

pytestmark = pytest.mark.integration

D = 16
SERVICE = "/xemb.v1.EmbeddingService/"
BAD = b"\xff\xfe"  # never valid UTF-8


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    publish_synthetic(root, d=D)
    with running(root) as (server, client):
        yield server, client


def _raw(client, method: str, payload: bytes):
    """Send ``payload`` as the request bytes, bypassing the client-side serializer."""
    call = client.channel.unary_unary(SERVICE + method)
    with pytest.raises(grpc.RpcError) as info:
        call(payload, timeout=5)
    return info.value


def _errors(server, method: str, code: str) -> float:
    return server.metrics.registry.get_sample_value(
        "xemb_errors_total", {"method": method, "code": code}) or 0.0


def _with_bad_utf8(message, marker: str) -> bytes:
    """``message`` serialized with the string ``marker`` replaced by invalid UTF-8 bytes."""
    data = message.SerializeToString()
    assert data.count(marker.encode()) == 1
    return data.replace(marker.encode(), BAD + b"z" * (len(marker) - len(BAD)))


UTF8_CASES = [
    ("GetItemEmbeddings", pb.GetItemEmbeddingsRequest(item_ids=[1], version="VVVV"), "version"),
    ("ComposeUserIntent", pb.ComposeUserIntentRequest(user_id="UUUU", target_domain="kitchen"),
     "user_id"),
    ("ComposeUserIntent", pb.ComposeUserIntentRequest(
        history=pb.History(item_ids=[1, 2], domains=["kitchen", "DDDD"]),
        target_domain="kitchen"), "history.domains[1]"),
    ("Retrieve", pb.RetrieveRequest(item_id=1, domain="DDDD", k=3), "domain"),
    ("Retrieve", pb.RetrieveRequest(user=pb.ComposeUserIntentRequest(user_id="UUUU"),
                                    domain="kitchen", k=3), "user.user_id"),
    ("EncodeItems", pb.EncodeItemsRequest(texts=["tea", "TTTT"], domain="kitchen"),
     "texts[1]"),
    ("GetVersion", pb.GetVersionRequest(version="VVVV"), "version"),
]


@pytest.mark.parametrize(("method", "message", "field"), UTF8_CASES,
                         ids=[f"{c[0]}-{c[2]}" for c in UTF8_CASES])
def test_invalid_utf8_is_invalid_argument_naming_the_field(served, method, message, field):
    server, client = served
    before = _errors(server, method, "INVALID_ARGUMENT")
    marker = next(m for m in ("VVVV", "UUUU", "DDDD", "TTTT")
                  if m.encode() in message.SerializeToString())
    err = _raw(client, method, _with_bad_utf8(message, marker))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert err.details() == f"{field}: not valid UTF-8"
    assert dict(err.trailing_metadata())[FIELD_KEY] == field
    assert _errors(server, method, "INVALID_ARGUMENT") == before + 1
    assert client.health() == "SERVING"


def test_bytes_that_are_no_message_are_invalid_argument(served):
    server, client = served
    err = _raw(client, "GetItemEmbeddings", b"\x0a\xff\xff\xff")  # a length past the end
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert err.details().startswith("request: not a valid xemb.v1.GetItemEmbeddingsRequest")
    assert client.get_item_embeddings([1]).found.all()


def test_tensor_shape_whose_size_overflows_int64(served):
    _, client = served
    for shape in ([2**58, 64], [2**62, 2**62, 16], [2**63 - 1, D]):
        with pytest.raises(Exception) as info:
            client._stub.Retrieve(pb.RetrieveRequest(
                vector=pb.Tensor(data=b"", shape=shape), domain="kitchen", k=3), timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        assert info.value.details().startswith("vector.data:")


def test_huge_unknown_version_is_not_found_with_the_id_cut(served):
    server, client = served
    version = "v" + "x" * 20_000
    for method, request in [
            ("GetItemEmbeddings", pb.GetItemEmbeddingsRequest(item_ids=[1], version=version)),
            ("GetVersion", pb.GetVersionRequest(version=version))]:
        with pytest.raises(grpc.RpcError) as info:
            getattr(client._stub, method)(request, timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND, info.value.details()
        details = info.value.details()
        assert len(details) < 500 and "20001 chars" in details, details
        assert _errors(server, method, "NOT_FOUND") >= 1


def test_huge_unknown_domain_is_cut_too(served):
    _, client = served
    with pytest.raises(grpc.RpcError) as info:
        client._stub.Retrieve(pb.RetrieveRequest(item_id=1, domain="d" * 20_000, k=3),
                              timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(info.value.details()) < 500


@pytest.mark.parametrize("value", [3.4e38, -3.4e38, 1e38])
def test_finite_vector_whose_scores_overflow_float32_is_refused(served, value):
    _, client = served
    vector = np.zeros(D, np.float32)
    vector[0] = value
    with pytest.raises(grpc.RpcError) as info:
        client._stub.Retrieve(pb.RetrieveRequest(vector=to_tensor(vector), domain="kitchen",
                                                 k=5), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert info.value.details().startswith("vector: norm")


def test_large_but_safe_vector_gets_finite_scores(served):
    _, client = served
    vector = np.full(D, 1e30, np.float32)
    got = client.retrieve("kitchen", 5, vector=vector)
    assert len(got.item_ids) == 5 and np.isfinite(got.scores).all()
