"""Intent labels people can read (per domain, top terms) and the purity/coverage report."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")

from xemb.embedders.intent_terms import TermStats, tokenize  # noqa: E402
from xemb.embedders.intents import (  # noqa: E402
    IntentLibrary,
    assign_batch,
    assign_intents,
    build_intents,
    intent_report,
    train_centroids,
)
from xemb.settings.offline import IntentsConfig  # noqa: E402

DOMAINS = ["grocery", "kitchen"]


def _clustered() -> tuple[np.ndarray, list[str], np.ndarray]:
    """Two well-separated clusters: 'tea' (grocery, plus one kitchen kettle) and 'knife'."""
    rng = np.random.default_rng(0)
    centres = np.eye(8, dtype=np.float32)[:2] * 10
    texts, dom, vecs = [], [], []
    for i in range(12):
        texts.append(f"Green tea bags organic {i}")
        dom.append(0)
        vecs.append(centres[0] + rng.normal(0, 0.3, 8))
    texts.append("Tea kettle &amp; stainless")
    dom.append(1)
    vecs.append(centres[0] + rng.normal(0, 0.3, 8))
    for i in range(10):
        texts.append(f"Chef knife steel blade {i}")
        dom.append(1)
        vecs.append(centres[1] + rng.normal(0, 0.3, 8))
    return np.stack(vecs).astype(np.float32), texts, np.array(dom, np.int64)


@pytest.fixture(scope="module")
def lib() -> IntentLibrary:
    x, texts, dom = _clustered()
    return build_intents(x, texts, dom, DOMAINS, IntentsConfig(k=2, top_m=2, niter=10))


def _tea(lib: IntentLibrary) -> int:
    return int(np.argmax([("tea" in t) for t in map(" ".join, lib.top_terms)]))


def test_labels_per_domain_and_top_terms(lib: IntentLibrary) -> None:
    tea = _tea(lib)
    knife = 1 - tea
    labels = json.loads(lib.domain_labels[tea])
    assert set(labels) == {"grocery", "kitchen"}
    assert labels["kitchen"] == "Tea kettle & stainless"  # its only kitchen member, decoded
    assert all("Green tea" in t for t in labels["grocery"].split(" | "))
    assert set(json.loads(lib.domain_labels[knife])) == {"kitchen"}  # no grocery members
    assert {"tea", "green"} <= set(lib.top_terms[tea])
    assert {"knife", "chef"} <= set(lib.top_terms[knife])
    assert not {"tea", "knife"} & (set(lib.top_terms[knife]) & set(lib.top_terms[tea]))


def test_report_purity_and_coverage(lib: IntentLibrary) -> None:
    _, _, dom = _clustered()
    rep = intent_report(lib, dom, DOMAINS)
    tea = rep["per_intent"][_tea(lib)]
    assert tea["support"] == 13 and tea["purity"] == round(12 / 13, 4)
    assert tea["dominant_domain"] == "grocery" and tea["share_top1"] == round(13 / 23, 4)
    assert tea["coverage"] == 1.0  # top-2 of 2 intents: every item has both
    assert rep["coverage_top1"] == 1.0 and rep["k"] == 2
    assert rep["purity_mean"] == round((12 / 13 + 1.0) / 2, 4)
    assert rep["purity_weighted"] == round(22 / 23, 4)
    json.dumps(rep)  # goes into the manifest


def test_unused_intent_has_no_purity() -> None:
    ids = np.array([[0, 1], [0, 1]], np.int64)
    lib = IntentLibrary(np.eye(3, dtype=np.float32), ["a", "b", "c"], np.array([2, 0, 0]),
                        ["{}"] * 3, ids, np.full((2, 2), 0.5, np.float32))
    rep = intent_report(lib, np.array([0, 1]), DOMAINS)
    assert rep["per_intent"][2]["purity"] is None and rep["per_intent"][2]["coverage"] == 0
    assert rep["per_intent"][1]["coverage"] == 1.0 and rep["coverage_top1"] == round(1 / 3, 4)
    assert rep["per_intent"][0]["purity"] == 0.5


def test_save_load_roundtrip_and_old_files(lib: IntentLibrary, tmp_path: Path) -> None:
    lib.save(tmp_path / "i.npz")
    back = IntentLibrary.load(tmp_path / "i.npz")
    assert back.domain_labels == lib.domain_labels and back.top_terms == lib.top_terms
    np.savez(tmp_path / "old.npz", vectors=lib.vectors, support=lib.support,
             item_ids=lib.item_ids, item_weights=lib.item_weights,
             labels=np.array(lib.labels, dtype=object),
             domain_support=np.array(lib.domain_support, dtype=object))
    old = IntentLibrary.load(tmp_path / "old.npz")
    assert old.domain_labels == [] and old.top_terms == [] and old.labels == lib.labels


def test_terms_ignore_shared_and_function_words() -> None:
    assert tokenize("The Tea, and 12oz of Tea-bags!") == {"tea", "bags"}
    assert tokenize("Salt &amp; Pepper &quot;Mill&quot; Caf&eacute;") == {"salt", "pepper",
                                                                          "mill", "café"}
    stats = TermStats(["pack of tea", "pack of coffee", "pack of sugar", "pack of tea leaves"])
    assert stats.top([0, 3], 3)[0] == "tea" and "pack" not in stats.top([0, 3], 3)


def test_batched_assignment_and_labels_equal_one_batch() -> None:
    """Assignment and labels batch by batch give the library one batch gives."""
    x, texts, dom = _clustered()
    cfg = IntentsConfig(k=3, top_m=2, niter=10)
    whole = build_intents(x, texts, dom, DOMAINS, cfg)
    parts = build_intents(x, texts, dom, DOMAINS, cfg, batch=5)
    np.testing.assert_array_equal(parts.item_ids, whole.item_ids)
    np.testing.assert_allclose(parts.item_weights, whole.item_weights, atol=1e-6)
    assert parts.labels == whole.labels and parts.domain_labels == whole.domain_labels
    assert parts.top_terms == whole.top_terms
    np.testing.assert_array_equal(parts.support, whole.support)


def test_kmeans_trains_on_a_sample_and_assigns_every_item() -> None:
    x, texts, dom = _clustered()
    sampled = build_intents(x, texts, dom, DOMAINS,
                            IntentsConfig(k=2, top_m=2, niter=10, train_sample=8))
    assert sampled.item_ids.shape == (len(x), 2) and sampled.support.sum() == len(x)
    tea = _tea(sampled)
    assert sampled.support[tea] == 13  # the clusters are found from 8 of 23 items
    few = train_centroids(x, IntentsConfig(k=5, train_sample=3))
    assert few.shape == (3, 8)  # never more intents than sampled items


def test_assignment_never_forms_items_by_intents() -> None:
    """20k items x 2k intents: a dense float32 matrix would be 164 MB; assigning in batches
    of 1,000 allocates (NumPy, traced) a few MB beyond the [N, m] outputs."""
    rng = np.random.default_rng(0)
    n, k, m = 20_000, 2048, 4
    x = rng.normal(size=(n, 4)).astype(np.float32)
    centroids = rng.normal(size=(k, 4)).astype(np.float32)
    tracemalloc.start()
    try:
        a = assign_intents(x, centroids, m, 0.1, batch=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    outputs = a.ids.nbytes + a.sims.nbytes + a.weights.nbytes
    assert peak < outputs + 4 * 2**20 < n * k * 4 / 20
    one = assign_batch(x[123:124], centroids, m, 0.1)  # rows do not depend on the batching
    np.testing.assert_array_equal(one.ids, a.ids[123:124])
