"""Per-domain search: faiss HNSW against the exact fallback, exclusion, bounds."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from xemb.errors import VersionIntegrityError
from xemb.serving.retrieval import DomainIndex, SearchKnobs, load_index

N, D = 3000, 32


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(N, D)).astype(np.float32)
    ids = np.arange(10_000, 10_000 + N, dtype=np.int64)
    index = faiss.IndexIDMap(faiss.IndexHNSWFlat(D, 16, faiss.METRIC_INNER_PRODUCT))
    index.add_with_ids(vecs, ids)
    path = tmp_path_factory.mktemp("idx") / "index_x.faiss"
    faiss.write_index(index, str(path))
    return path, ids, vecs, rng.normal(size=(50, D)).astype(np.float32)


def test_ann_recall_at_100_against_exact(data):
    path, ids, vecs, queries = data
    ann = load_index(path, ids, vecs, SearchKnobs(ef_search=256))
    exact = DomainIndex(ids, vecs, None, SearchKnobs())
    none = np.empty(0, np.int64)
    hits = 0
    for q in queries:
        got, _, was_exact = ann.search(q, 100, none)
        want, _, _ = exact.search(q, 100, none)
        assert not was_exact
        hits += len(np.intersect1d(got, want))
    assert hits / (100 * len(queries)) >= 0.95


def test_exclusion_and_order(data):
    path, ids, vecs, queries = data
    for index in (load_index(path, ids, vecs, SearchKnobs()), DomainIndex(ids, vecs, None,
                                                                         SearchKnobs())):
        first, scores, _ = index.search(queries[0], 10, np.empty(0, np.int64))
        assert (np.diff(scores) <= 1e-6).all()
        again, _, _ = index.search(queries[0], 10, first[:3])
        assert not np.isin(again, first[:3]).any() and len(again) == 10


def test_large_candidate_counts_fall_back_to_exact(data):
    path, ids, vecs, queries = data
    index = load_index(path, ids, vecs, SearchKnobs(ann_max_k=50))
    got, scores, exact = index.search(queries[0], 60, np.empty(0, np.int64))
    assert exact and len(got) == 60
    np.testing.assert_allclose(scores, np.sort(vecs @ queries[0])[::-1][:60], rtol=1e-5)


def test_k_beyond_domain_size_returns_all(data):
    _, ids, vecs, queries = data
    small = DomainIndex(ids[:5], vecs[:5], None, SearchKnobs())
    got, _, _ = small.search(queries[0], 100, ids[:2])
    assert sorted(got) == sorted(ids[2:5])


def test_index_not_matching_the_table_is_refused(data):
    path, ids, vecs, _ = data
    with pytest.raises(VersionIntegrityError, match="expected"):
        load_index(path, ids[:10], vecs[:10], SearchKnobs())


def test_ivf_lists_follow_size_and_training_sample() -> None:
    """4*sqrt(n) lists, but never fewer than 39 training vectors per list (faiss's rule),
    counted over the bounded training sample, not the catalogue."""
    from xemb.serving.ann import nlist_for
    from xemb.settings.index import IndexConfig

    cfg = IndexConfig()
    assert nlist_for(3_000, cfg) == 3_000 // 39  # small: the 39-per-list rule binds
    assert nlist_for(40_000, cfg) == 800  # 4 * sqrt(n)
    assert nlist_for(1_000_000, cfg) == cfg.train_sample // 39  # the sample binds
    assert nlist_for(1_000_000, IndexConfig(nlist=64)) == 64
