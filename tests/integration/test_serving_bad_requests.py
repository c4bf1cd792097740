"""Bad requests: each answered with the right status and a message naming the field; the
server stays healthy and keeps answering good requests afterwards."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from tests.helpers.synthetic_serving import publish_synthetic, running
from xemb.serving.interceptors import FIELD_KEY
from xemb.serving.wire import to_tensor
from xemb.v1 import xemb_pb2 as pb
from xemb.v1 import xemb_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

D = 16
LIMITS = {"max_ids": 50, "max_sequence_len": 20, "max_k": 30, "max_encode_texts": 4,
          "max_text_chars": 100}
INVALID, NOT_FOUND, PRECONDITION = (grpc.StatusCode.INVALID_ARGUMENT,
                                    grpc.StatusCode.NOT_FOUND,
                                    grpc.StatusCode.FAILED_PRECONDITION)


def _vec(values) -> pb.Tensor:
    return to_tensor(np.asarray(values, np.float32))


def _hist(ids, **kw) -> pb.History:
    return pb.History(item_ids=ids, **kw)


def _user(**kw) -> pb.ComposeUserIntentRequest:
    return pb.ComposeUserIntentRequest(**kw)


GET, COMPOSE, RETRIEVE, ENCODE, VERSION = ("GetItemEmbeddings", "ComposeUserIntent", "Retrieve",
                                           "EncodeItems", "GetVersion")
R = pb.RetrieveRequest
C = pb.ComposeUserIntentRequest
OK_Q = {"domain": "kitchen", "k": 5}
CASES = [
    (GET, pb.GetItemEmbeddingsRequest(), INVALID, "item_ids"),
    (GET, pb.GetItemEmbeddingsRequest(item_ids=range(51)), INVALID, "item_ids"),
    (GET, pb.GetItemEmbeddingsRequest(item_ids=[1], part=7), INVALID, "part"),
    (GET, pb.GetItemEmbeddingsRequest(item_ids=[1], version="v-nope"), NOT_FOUND, "version"),
    (COMPOSE, C(history=_hist([1])), INVALID, "target_domain"),
    (COMPOSE, C(history=_hist([1]), target_domain="toys"), INVALID, "target_domain"),
    (COMPOSE, C(history=_hist(range(1, 22)), target_domain="kitchen"), INVALID,
     "history.item_ids"),
    (COMPOSE, C(history=_hist([1, 2], domains=["kitchen"]), target_domain="kitchen"), INVALID,
     "history.domains"),
    (COMPOSE, C(history=_hist([1, 2], domains=["kitchen", "toys"]), target_domain="kitchen"),
     INVALID, "history.domains[1]"),
    (COMPOSE, C(history=_hist([1, 2], timestamps=[3]), target_domain="kitchen"), INVALID,
     "history.timestamps"),
    (COMPOSE, C(history=_hist([1]), target_domain="kitchen", top_intents=-1), INVALID,
     "top_intents"),
    (COMPOSE, C(history=_hist([1]), target_domain="kitchen", top_intents=99), INVALID,
     "top_intents"),
    (COMPOSE, C(target_domain="kitchen"), INVALID, "history"),
    (COMPOSE, C(user_id="u" * 300, target_domain="kitchen"), INVALID, "user_id"),
    (COMPOSE, C(user_id="nobody", target_domain="kitchen"), NOT_FOUND, "user_id"),
    (COMPOSE, C(history=_hist([-1, -2]), target_domain="kitchen"), PRECONDITION,
     "history.item_ids"),
    (COMPOSE, C(history=_hist([1]), target_domain="kitchen", version="v-nope"), NOT_FOUND,
     "version"),
    (RETRIEVE, R(**OK_Q), INVALID, "query"),
    (RETRIEVE, R(item_id=1, k=5), INVALID, "domain"),
    (RETRIEVE, R(item_id=1, domain="toys", k=5), INVALID, "domain"),
    (RETRIEVE, R(item_id=1, domain="kitchen", k=0), INVALID, "k"),
    (RETRIEVE, R(item_id=1, domain="kitchen", k=31), INVALID, "k"),
    (RETRIEVE, R(item_id=1, domain="kitchen", k=-3), INVALID, "k"),
    (RETRIEVE, R(vector=_vec(np.ones(D - 1)), **OK_Q), INVALID, "vector"),
    (RETRIEVE, R(vector=_vec([np.nan] + [0] * (D - 1)), **OK_Q), INVALID, "vector"),
    (RETRIEVE, R(vector=_vec([np.inf] + [0] * (D - 1)), **OK_Q), INVALID, "vector"),
    (RETRIEVE, R(vector=pb.Tensor(data=b"\0" * 10, shape=[D]), **OK_Q), INVALID, "vector.data"),
    (RETRIEVE, R(vector=_vec(np.ones((2, D))), **OK_Q), INVALID, "vector.shape"),
    (RETRIEVE, R(item_id=1, exclude_ids=range(51), **OK_Q), INVALID, "exclude_ids"),
    (RETRIEVE, R(item_id=10**9, **OK_Q), NOT_FOUND, "item_id"),
    (RETRIEVE, R(user=_user(history=_hist(range(1, 22))), **OK_Q), INVALID,
     "user.history.item_ids"),
    (RETRIEVE, R(user=_user(history=_hist([1]), top_intents=-4), **OK_Q), INVALID,
     "user.top_intents"),
    (RETRIEVE, R(item_id=1, version="v-nope", **OK_Q), NOT_FOUND, "version"),
    (ENCODE, pb.EncodeItemsRequest(domain="kitchen"), INVALID, "texts"),
    (ENCODE, pb.EncodeItemsRequest(texts=["tea"] * 5, domain="kitchen"), INVALID, "texts"),
    (ENCODE, pb.EncodeItemsRequest(texts=["tea", "  "], domain="kitchen"), INVALID, "texts[1]"),
    (ENCODE, pb.EncodeItemsRequest(texts=["x" * 101], domain="kitchen"), INVALID, "texts[0]"),
    (ENCODE, pb.EncodeItemsRequest(texts=["tea"], domain="toys"), INVALID, "domain"),
    (ENCODE, pb.EncodeItemsRequest(texts=["tea"]), INVALID, "domain"),
    (VERSION, pb.GetVersionRequest(version="v-nope"), NOT_FOUND, "version"),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    publish_synthetic(root, d=D)
    with running(root, **LIMITS) as (server, client):
        yield server, client, pb_grpc.EmbeddingServiceStub(client.channel)


def test_there_are_at_least_30_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize(("method", "request_", "code", "field"), CASES,
                         ids=[f"{i:02d}-{c[0]}-{c[3]}" for i, c in enumerate(CASES)])
def test_bad_request(served, method, request_, code, field):
    _, _, stub = served
    with pytest.raises(grpc.RpcError) as info:
        getattr(stub, method)(request_, timeout=5)
    err = info.value
    assert err.code() == code, err.details()
    assert field in err.details()
    if code == INVALID:
        assert err.details().startswith(f"{field}:")
        assert dict(err.trailing_metadata())[FIELD_KEY] == field


def test_healthy_after_bad_requests(served):
    server, client, stub = served
    for method, req, *_ in CASES:  # again, back to back
        with pytest.raises(grpc.RpcError):
            getattr(stub, method)(req, timeout=5)
    assert client.health() == "SERVING"
    assert client.get_item_embeddings([1, 2]).found.all()
    errors = server.metrics.registry.get_sample_value(
        "xemb_errors_total", {"method": "Retrieve", "code": "INVALID_ARGUMENT"})
    assert errors >= 2 * sum(c[0] == RETRIEVE and c[2] == INVALID for c in CASES)


def test_client_raises_typed_errors_with_field(served):
    from xemb.errors import InvalidArgument, NotFound

    _, client, _ = served
    with pytest.raises(InvalidArgument) as exc:
        client.retrieve("kitchen", 0, item_id=1)
    assert exc.value.field == "k"
    with pytest.raises(NotFound):
        client.get_item_embeddings([1], version="v-nope")


def test_oversized_message_is_refused_by_the_transport(tmp_path):
    publish_synthetic(tmp_path, d=D, n_items=50)
    with running(tmp_path, max_receive_message_bytes=4096) as (_, client):
        stub = pb_grpc.EmbeddingServiceStub(client.channel)
        big = pb.GetItemEmbeddingsRequest(item_ids=range(10**6, 10**6 + 2000))  # ~6 KB
        with pytest.raises(grpc.RpcError) as info:
            stub.GetItemEmbeddings(big, timeout=5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert client.health() == "SERVING"
