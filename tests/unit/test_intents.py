"""Intent labels people can read (per domain, top terms) and the purity/coverage report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")

from embedders.intent_terms import TermStats, tokenize  # noqa: E402
from embedders.intents import IntentLibrary, build_intents, intent_report  # noqa: E402
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
