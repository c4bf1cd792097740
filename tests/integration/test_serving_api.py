"""Every method against a real server on port 0, values checked against the published tables.

Runs on a synthetic version (always) and on the tiny real build (``tiny_build``) when the
offline pipeline is importable.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pyarrow.parquet as pq
import pytest

from tests.helpers.synthetic_serving import publish_synthetic, running
from xemb import layout
from xemb.intent_stats import row_entropy
from xemb.store import VersionStore

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["synthetic", "tiny"])
def root(request, tmp_path_factory):
    if request.param == "synthetic":
        path = tmp_path_factory.mktemp("synth")
        publish_synthetic(path)
        return path
    return request.getfixturevalue("tiny_build").root


@pytest.fixture(scope="module")
def served(root):
    with running(root, reflection=True) as (server, client):
        yield server, client


@pytest.fixture(scope="module")
def tables(root):
    store = VersionStore(root)
    version = store.current()
    base = store.path(version)
    items = pq.read_table(base / layout.ITEMS).to_pandas()
    users = pq.read_table(base / layout.USERS).to_pandas() if (base / layout.USERS).exists() \
        else None
    return store.manifest(version), base, items.set_index("item_id", drop=False), users


def _rows(items, column, ids):
    return np.stack(items.loc[ids, column].to_numpy()).astype(np.float32)


@pytest.mark.parametrize("part", layout.VECTOR_PARTS)
def test_item_embeddings_bit_identical(served, tables, part):
    _, client = served
    manifest, _, items, _ = tables
    ids = items["item_id"].sample(min(300, len(items)), random_state=1).to_numpy()
    query = np.concatenate([ids, [-5, 10**12]])
    r = client.get_item_embeddings(query, part)
    assert r.version == manifest.version
    assert r.found.tolist() == [True] * len(ids) + [False, False]
    assert r.vectors.shape == (len(query), manifest.dims["embedding"])
    assert r.vectors[:len(ids)].tobytes() == _rows(items, part, ids).tobytes()
    assert not r.vectors[len(ids):].any()
    assert r.domains[:len(ids)] == items.loc[ids, "domain"].tolist() and r.domains[-1] == ""


def _compose_reference(manifest, base, items, history, target):
    """An independent right-aligned feed, run through ONNX Runtime directly."""
    L, m = manifest.params["composer_max_len"], manifest.params["top_m"]
    d = manifest.dims["embedding"]
    hist = history[-L:]
    n = len(hist)
    feed = {"hist_vec": np.zeros((1, L, d), np.float32), "hist_domain": np.zeros((1, L), np.int64),
            "hist_mask": np.zeros((1, L), np.float32),
            "hist_intents": np.zeros((1, L, m), np.int64),
            "hist_intent_w": np.zeros((1, L, m), np.float32),
            "target_domain": np.array([manifest.domains.index(target)], np.int64)}
    feed["hist_vec"][0, L - n:] = _rows(items, "full", hist)
    feed["hist_domain"][0, L - n:] = [manifest.domains.index(x) for x in items.loc[hist, "domain"]]
    feed["hist_mask"][0, L - n:] = 1
    feed["hist_intents"][0, L - n:] = np.stack(items.loc[hist, "intent_ids"].to_numpy())
    feed["hist_intent_w"][0, L - n:] = np.stack(items.loc[hist, "intent_weights"].to_numpy())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(base / layout.COMPOSER_ONNX), opts,
                                providers=["CPUExecutionProvider"])
    user_vec, weights = sess.run(None, feed)
    return user_vec[0], weights[0]


def test_compose_matches_the_model_and_reports_unknown_ids(served, tables):
    _, client = served
    manifest, base, items, _ = tables
    L = manifest.params["composer_max_len"]
    history = items["item_id"].sample(L + 7, random_state=2).tolist()
    target = manifest.domains[-1]
    r = client.compose_user_intent(history[:5] + [-1] + history[5:], target_domain=target)
    want_vec, want_w = _compose_reference(manifest, base, items, history, target)
    assert r.source == "composed" and r.items_used == L
    assert r.unknown_item_ids.tolist() == [-1]
    np.testing.assert_allclose(r.vector, want_vec, rtol=1e-6, atol=1e-7)
    top = manifest.params["top_intents"]
    assert [i.intent_id for i in r.intents] == np.argsort(-want_w, kind="stable")[:top].tolist()
    assert all(i.label for i in r.intents) and r.version == manifest.version
    per_domain = pq.read_table(base / layout.INTENTS).to_pydict().get("domain_labels")
    assert [i.domain_label for i in r.intents] == [
        json.loads(per_domain[i.intent_id]).get(target, "") if per_domain else ""
        for i in r.intents]
    h, u = row_entropy(want_w)
    assert r.intent_entropy == pytest.approx(h[0], rel=1e-5, abs=1e-6)
    assert r.intent_entropy_ratio == pytest.approx(h[0] / u[0], rel=1e-5, abs=1e-6)


def test_timestamps_order_the_history(served, tables):
    _, client = served
    manifest, _, items, _ = tables
    ids = items["item_id"].iloc[:4].tolist()
    target = manifest.domains[0]
    ordered = client.compose_user_intent(ids, target_domain=target)
    shuffled = client.compose_user_intent(ids[::-1], timestamps=[40, 30, 20, 10],
                                          target_domain=target)
    assert ordered.vector.tobytes() == shuffled.vector.tobytes()


def test_known_user_without_history_gets_the_stored_vector(served, tables):
    _, client = served
    manifest, _, _, users = tables
    assert users is not None and not users.empty  # both builds publish stored users
    row = users.iloc[0]
    r = client.compose_user_intent(user_id=row["user_id"], target_domain=row["target_domain"])
    assert r.source == "stored"
    assert r.vector.tobytes() == np.asarray(row["vector"], np.float32).tobytes()
    assert [i.intent_id for i in r.intents] == \
        list(row["top_intent_ids"])[:manifest.params["top_intents"]]


def test_retrieve_by_vector_item_and_history(served, tables):
    _, client = served
    manifest, _, items, _ = tables
    domain = manifest.domains[-1]
    in_domain = items[items["domain"] == domain]
    item = int(in_domain["item_id"].iloc[0])
    by_item = client.retrieve(domain, 20, item_id=item, exclude_ids=in_domain["item_id"][1:3])
    assert item not in by_item.item_ids and len(by_item.item_ids) == 20
    assert not np.isin(by_item.item_ids, in_domain["item_id"][1:3]).any()
    assert set(items.loc[by_item.item_ids, "domain"]) == {domain}
    q = _rows(items, "full", [item])[0].copy()
    if manifest.params.get("prior"):  # the item's content, the user-side prior weight
        q[-1] = manifest.params["prior_scale"]
    np.testing.assert_allclose(by_item.scores, _rows(items, "full", by_item.item_ids) @ q,
                               rtol=1e-4, atol=1e-4)
    assert (np.diff(by_item.scores) <= 1e-6).all()
    by_vec = client.retrieve(domain, 20, vector=q)
    assert by_vec.item_ids[0] == item or item in by_vec.item_ids
    hist = items["item_id"].iloc[:10].tolist()
    by_hist = client.retrieve(domain, 10, history=hist)
    composed = client.compose_user_intent(hist, target_domain=domain)
    direct = client.retrieve(domain, 10, vector=composed.vector)
    assert by_hist.item_ids.tolist() == direct.item_ids.tolist()


def test_retrieve_recall_against_exact(served, tables):
    _, client = served
    manifest, _, items, _ = tables
    domain = manifest.domains[-1]
    pool = items[items["domain"] == domain]
    full = np.stack(pool["full"].to_numpy()).astype(np.float32)
    k = min(100, len(pool) - 1)
    rng = np.random.default_rng(3)
    hits = 0
    picks = full[rng.choice(len(pool), 20, replace=False)]
    queries = picks + rng.normal(0, 0.05, picks.shape)
    for q in queries.astype(np.float32):
        got = client.retrieve(domain, k, vector=q).item_ids
        want = pool["item_id"].to_numpy()[np.argsort(-(full @ q))[:k]]
        hits += len(np.intersect1d(got, want))
    assert hits / (k * len(queries)) >= 0.95


def test_encode_items_reproduces_cold_items(served, tables):
    _, client = served
    manifest, _, items, _ = tables
    cold = items[~items["warm"]].head(8)
    assert not cold.empty  # both builds have items never seen in behaviour
    for domain, group in cold.groupby("domain"):
        r = client.encode_items(group["text"].tolist(), domain)
        assert r.full.shape == (len(group), manifest.dims["embedding"])
        np.testing.assert_allclose(r.full, _rows(items, "full", group["item_id"]), atol=2e-3)
        np.testing.assert_allclose(r.full, r.transferable + r.residual, atol=1e-5)


def test_versions_and_health(served, tables):
    server, client = served
    manifest, *_ = tables
    info = client.get_version()
    assert info.version == manifest.version and info.serving and info.current and info.loaded
    assert dict(info.dims) == manifest.dims and list(info.domains) == manifest.domains
    assert json.loads(info.params_json)["composer_max_len"] == \
        manifest.params["composer_max_len"]
    listed = client.list_versions()
    assert listed.serving == manifest.version
    assert manifest.version in [v.version for v in listed.versions]
    assert client.health() == "SERVING" and client.health("xemb.v1.EmbeddingService") == "SERVING"
    assert server.metrics.registry.get_sample_value(
        "xemb_version_info", {"version": manifest.version}) == 1


def test_reflection_lists_the_service(served):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    _, client = served
    services = ProtoReflectionDescriptorDatabase(client.channel).get_services()
    assert "xemb.v1.EmbeddingService" in services and "grpc.health.v1.Health" in services
