"""Batch RPCs on a real server: every row equals the single call for it, one version per
call, clear per-row errors and limits, counted in the metrics."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.synthetic_serving import (
    SYNTH_DOMAINS,
    clone_version,
    publish_synthetic,
    running,
)
from xemb import errors
from xemb.serving.client import UserQuery

pytestmark = pytest.mark.integration

MAX_ROWS = 8


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    first = publish_synthetic(root, n_items=900, ipc=True)
    with running(root, max_batch_rows=MAX_ROWS, keep_loaded=2) as (server, client):
        second = clone_version(root, first.version, scale=2.0, make_current=True)
        assert server.reload()  # the first stays loaded: batches may pin it
        yield server, client, first.version, second.version


def _users() -> list[UserQuery]:
    return [UserQuery(history=[5, 17, 400], target_domain="kitchen"),
            UserQuery(history=[700, 3], target_domain="grocery", timestamps=[9, 1]),
            UserQuery(user_id="u1", target_domain="kitchen"),  # stored vector
            UserQuery(history=[10**9], user_id="nobody", target_domain="grocery"),  # row error
            UserQuery(history=[10**9, 42], target_domain="kitchen", top_intents=2)]


def _single(client, u: UserQuery, version: str = ""):
    return client.compose_user_intent(u.history, target_domain=u.target_domain,
                                      user_id=u.user_id, timestamps=u.timestamps,
                                      top_intents=u.top_intents, version=version)


def test_compose_batch_equals_single_calls(served):
    _, client, _, current = served
    users = _users()
    batch = client.compose_user_intents(users)
    assert batch.version == current and len(batch.results) == len(users)
    for i, (u, row) in enumerate(zip(users, batch.results, strict=True)):
        if i == 3:
            with pytest.raises(errors.NotFound):
                _single(client, u)
            assert row.error is not None and row.error.code == "NOT_FOUND"
            assert row.error.field == "requests[3].user_id" and not batch.vectors[3].any()
            continue
        one = _single(client, u)
        assert row.error is None and row.version == one.version == current
        assert row.vector.tobytes() == one.vector.tobytes()  # bit for bit
        assert (row.source, row.items_used) == (one.source, one.items_used)
        assert row.intents == one.intents
        assert row.unknown_item_ids.tolist() == one.unknown_item_ids.tolist()
        assert row.intent_entropy == one.intent_entropy


def test_batch_pinned_to_a_kept_version(served):
    _, client, old, _ = served
    users = _users()[:2]
    batch = client.compose_user_intents(users, version=old)
    assert batch.version == old
    for u, row in zip(users, batch.results, strict=True):
        assert row.vector.tobytes() == _single(client, u, old).vector.tobytes()


def test_retrieve_batch_equals_single_calls(served):
    _, client, _, current = served
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(5, 16)).astype(np.float32)
    excludes = [[], [1, 2, 3], [], [450], []]
    batch = client.retrieve_batch("kitchen", 20, vectors=vectors, exclude_ids=excludes)
    assert batch.version == current
    for q, ex, row in zip(vectors, excludes, batch.results, strict=True):
        one = client.retrieve("kitchen", 20, vector=q, exclude_ids=ex)
        assert row.item_ids.tolist() == one.item_ids.tolist() and row.exact == one.exact
        assert row.scores.tobytes() == one.scores.tobytes()
        assert not set(ex) & set(row.item_ids.tolist())
    items = [301, 10**9, 650]
    by_item = client.retrieve_batch("kitchen", 10, item_ids=items)
    assert by_item.results[1].error.code == "NOT_FOUND"
    assert by_item.results[1].error.field == "item_ids.ids[1]"
    for i in (0, 2):
        one = client.retrieve("kitchen", 10, item_id=items[i])
        assert by_item.results[i].item_ids.tolist() == one.item_ids.tolist()
        assert items[i] not in by_item.results[i].item_ids
    users = [UserQuery(history=[5, 17]), UserQuery(user_id="u2")]
    by_user = client.retrieve_batch("grocery", 10, users=users)
    for u, row in zip(users, by_user.results, strict=True):
        one = client.retrieve("grocery", 10, history=u.history, user_id=u.user_id)
        assert row.item_ids.tolist() == one.item_ids.tolist()
        assert row.scores.tobytes() == one.scores.tobytes()


@pytest.mark.parametrize("call, field", [
    (lambda c: c.compose_user_intents([UserQuery([1], target_domain="kitchen"),
                                       UserQuery([1, 2], target_domain="mars")]),
     "requests[1].target_domain"),
    (lambda c: c.compose_user_intents([UserQuery([1], target_domain="kitchen"),
                                       UserQuery(target_domain="kitchen")]),
     "requests[1].history"),
    (lambda c: c.compose_user_intents([UserQuery(list(range(2000)), target_domain="kitchen")]),
     "requests[0].history.item_ids"),
    (lambda c: c.compose_user_intents([UserQuery([1], target_domain="kitchen")] * (MAX_ROWS + 1)),
     "requests"),
    (lambda c: c.compose_user_intents([]), "requests"),
    (lambda c: c.retrieve_batch("kitchen", 5, vectors=np.ones((2, 3), np.float32)), "vectors"),
    (lambda c: c.retrieve_batch("kitchen", 5, vectors=np.array([[0.0] * 16, [np.nan] * 16],
                                                               np.float32)), "vectors"),
    (lambda c: c.retrieve_batch("kitchen", 5, vectors=np.array([[0.0] * 16, [1e37] * 16],
                                                               np.float32)), "vectors[1]"),
    (lambda c: c.retrieve_batch("kitchen", 5, item_ids=[1, 2], exclude_ids=[[1]]),
     "exclude_ids"),
    (lambda c: c.retrieve_batch("kitchen", 5, users=[UserQuery([1]), UserQuery(
        [1], timestamps=[1, 2])]), "users.requests[1].history.timestamps"),
    (lambda c: c.retrieve_batch("kitchen", 5), "queries"),
])
def test_bad_rows_name_the_field_and_row(served, call, field):
    server, client, _, _ = served
    with pytest.raises(errors.InvalidArgument) as info:
        call(client)
    assert info.value.field == field and str(info.value).startswith(field)


def test_row_version_must_match_the_batch(served):
    _, client, old, _ = served
    from xemb.v1 import xemb_pb2 as pb

    req = pb.ComposeUserIntentBatchRequest(requests=[
        pb.ComposeUserIntentRequest(history=pb.History(item_ids=[1]), target_domain="kitchen",
                                    version=old)])
    with pytest.raises(errors.InvalidArgument) as info:
        client._call("ComposeUserIntentBatch", req, None)
    assert info.value.field == "requests[0].version"


def test_batches_are_counted_in_the_metrics(served):
    server, client, _, _ = served
    registry = server.metrics.registry
    before = registry.get_sample_value("xemb_requests_total",
                                       {"method": "RetrieveBatch", "code": "OK"}) or 0
    client.retrieve_batch(SYNTH_DOMAINS[0], 3, item_ids=[1, 2])
    after = registry.get_sample_value("xemb_requests_total",
                                      {"method": "RetrieveBatch", "code": "OK"})
    assert after == before + 1
    labels = {"method": "ComposeUserIntentBatch", "code": "INVALID_ARGUMENT"}
    refused = registry.get_sample_value("xemb_errors_total", labels) or 0
    with pytest.raises(errors.InvalidArgument):
        client.compose_user_intents([])
    assert registry.get_sample_value("xemb_errors_total", labels) == refused + 1
