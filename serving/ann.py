"""Building the per-domain ANN indexes at publish, and measuring what they recall.

The index type follows the domain's size (``index:`` config): HNSW up to ``hnsw_max_items``,
IVF above (flat or PQ codes), trained on a bounded sample. Each index is then measured the way
the server searches it (:class:`xemb.serving.retrieval.DomainIndex`): recall@100 against exact
search, item vectors as queries, for a ladder of ``efSearch``/``nprobe`` values; the smallest
value that reaches ``recall_target`` is what the manifest records (``params.search``) and what
servers use unless their config sets the knob. A domain whose HNSW graph misses the target at
the ladder's top (inner-product search over vectors of unequal norm, such as ``full`` with its
prior coordinate, is HNSW's hard case) is served by an exact flat index instead, and the
manifest says why (``metrics.index[domain].fallback``); with ``index.type: flat`` every domain
is. Torch-free: publish and ``add-items`` share it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from xemb.serving.retrieval import DEFAULT_EF_SEARCH, DomainIndex, SearchKnobs, params_factory
from xemb.settings.index import IndexConfig

__all__ = ["choose_kind", "build_index", "measure", "write_domain_indexes", "recall_at"]

EF_LADDER = (DEFAULT_EF_SEARCH, 512, 1024, 2048)
NPROBE_LADDER = (4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
ADD_BATCH = 65_536
K = 100


def choose_kind(n: int, cfg: IndexConfig) -> str:
    """``flat``, ``hnsw``, ``ivf_flat`` or ``ivf_pq`` for a domain of ``n`` items."""
    if cfg.type == "flat":
        return "flat"
    if cfg.type == "hnsw" or (cfg.type == "auto" and n <= cfg.hnsw_max_items):
        return "hnsw"
    return f"ivf_{cfg.ivf_codes}"


def nlist_for(n: int, cfg: IndexConfig) -> int:
    # faiss wants >= 39 training vectors per list: the bounded training sample caps the lists
    auto = min(int(4 * math.sqrt(n)), min(n, cfg.train_sample) // 39)
    return max(1, min(cfg.nlist or auto, n))


def pq_m_for(d: int, cfg: IndexConfig) -> int:
    if cfg.pq_m is not None:
        if d % cfg.pq_m:
            raise ValueError(f"index.pq_m: {cfg.pq_m} does not divide the vector width {d}")
        return cfg.pq_m
    divisors = [m for m in range(1, d + 1) if d % m == 0]
    return min(divisors, key=lambda m: (abs(m - d / 2), -m))


def _sample(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    if len(x) <= n:
        return np.ascontiguousarray(x)
    pick = np.sort(np.random.default_rng(seed).choice(len(x), n, replace=False))
    return np.ascontiguousarray(x[pick])


def build_index(kind: str, vectors: np.ndarray, ids: np.ndarray, cfg: IndexConfig
                ) -> faiss.Index:
    """An inner-product index over ``vectors`` whose labels are ``ids``."""
    n, d = vectors.shape
    if kind == "flat":
        index: Any = faiss.IndexIDMap(faiss.IndexFlatIP(d))
    elif kind == "hnsw":
        base = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        base.hnsw.efConstruction = cfg.ef_construction
        index = faiss.IndexIDMap(base)
    else:
        quantizer = faiss.IndexFlatIP(d)
        nlist = nlist_for(n, cfg)
        if kind == "ivf_pq":
            index = faiss.IndexIVFPQ(quantizer, d, nlist, pq_m_for(d, cfg), 8,
                                     faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = cfg.seed
        index.train(_sample(vectors, cfg.train_sample, cfg.seed))
    for s in range(0, n, ADD_BATCH):  # bounded temporaries
        index.add_with_ids(np.ascontiguousarray(vectors[s:s + ADD_BATCH], np.float32),
                           np.ascontiguousarray(ids[s:s + ADD_BATCH], np.int64))
    return index


def _kth_scores(matrix: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The exact k-th best score per query (queries in chunks: bounded memory)."""
    out = []
    for s in range(0, len(queries), 16):
        scores = queries[s:s + 16] @ matrix.T
        out.append(np.partition(-scores, k - 1, axis=1)[:, k - 1] * -1)
    return np.concatenate(out)


def recall_at(index: DomainIndex, queries: np.ndarray, kth: np.ndarray, k: int) -> float:
    """Share of the exact top-k that ``index`` returns, over ``queries``. Tie-aware: a result
    whose exact score reaches the exact k-th score counts (items with equal vectors are
    interchangeable), so duplicates in a catalogue do not understate recall."""
    none, hits = np.empty(0, np.int64), 0
    for q, floor in zip(queries, kth, strict=True):
        got, _, _ = index.search(np.ascontiguousarray(q), k, none)
        exact = index.matrix[np.searchsorted(index.ids, got)] @ q
        hits += int(min(k, (exact >= floor - 1e-6 * max(1.0, abs(float(floor)))).sum()))
    return hits / max(1, k * len(queries))


@dataclass(frozen=True)
class Measured:
    knobs: dict[str, int]
    """What the manifest's ``params.search[domain]`` records."""
    record: dict[str, Any]
    """What ``metrics.index[domain]`` records."""
    recall: float
    """The recorded recall@100 (rounded as recorded)."""


def measure(kind: str, index: Any, ids: np.ndarray, matrix: np.ndarray,
            cfg: IndexConfig) -> Measured:
    """Tune the search knob along its ladder until recall@100 reaches the target (an exact
    flat index has no knob: it is measured once)."""
    k = min(K, len(ids))
    rng = np.random.default_rng(cfg.seed)
    pick = rng.choice(len(ids), min(cfg.recall_queries, len(ids)), replace=False)
    queries = np.ascontiguousarray(matrix[np.sort(pick)], np.float32)
    want = _kth_scores(matrix, queries, k)
    tuned: dict[str, int] = {}
    if kind == "flat":
        dom = DomainIndex(ids, matrix, index, SearchKnobs(ann_max_k=max(1000, k)), None)
        recall = recall_at(dom, queries, want, k)
    else:
        recall, tuned = _tune(kind, index, ids, matrix, queries, want, k, cfg)
    recall = round(recall, 4)
    ivf = {"nlist": int(index.nlist)} if kind.startswith("ivf") else {}
    return Measured(tuned, {"type": kind, "items": len(ids), f"recall_at_{k}": recall,
                            "recall_target": cfg.recall_target, "queries": len(queries),
                            **tuned, **ivf}, recall)


def _tune(kind: str, index: Any, ids: np.ndarray, matrix: np.ndarray, queries: np.ndarray,
          want: np.ndarray, k: int, cfg: IndexConfig) -> tuple[float, dict[str, int]]:
    """(best recall, its knobs) along the ``efSearch``/``nprobe`` ladder."""
    rerank = {"rerank": cfg.pq_rerank} if kind == "ivf_pq" else {}
    name = "ef_search" if kind == "hnsw" else "nprobe"
    ladder = EF_LADDER if kind == "hnsw" else \
        [p for p in NPROBE_LADDER if p < index.nlist] + [index.nlist]
    best: tuple[float, int] = (-1.0, ladder[0])
    for value in ladder:
        knobs = SearchKnobs(**{name: value}, rerank=rerank.get("rerank", 1),  # type: ignore[arg-type]
                            ann_max_k=max(1000, k))
        dom = DomainIndex(ids, matrix, index, knobs, params_factory(index, knobs))
        recall = recall_at(dom, queries, want, k)
        if recall > best[0]:
            best = (recall, value)
        if recall >= cfg.recall_target:
            break
    return best[0], {name: int(best[1]), **rerank}


def write_domain_indexes(out: Path, full: np.ndarray, ids: np.ndarray, codes: np.ndarray,
                         domains: list[str], cfg: IndexConfig, file_of: Any
                         ) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, Any]]]:
    """Build, write, measure one index per domain; (params.search, metrics.index)."""
    search: dict[str, dict[str, int]] = {}
    records: dict[str, dict[str, Any]] = {}
    for code, name in enumerate(domains):
        rows = np.flatnonzero(codes == code)
        if not len(rows):
            continue
        start = time.perf_counter()
        kind = choose_kind(len(rows), cfg)
        dom_ids = np.ascontiguousarray(ids[rows], np.int64)
        matrix = np.ascontiguousarray(full[rows], np.float32)
        index = build_index(kind, matrix, dom_ids, cfg)
        built = time.perf_counter() - start
        order = np.argsort(dom_ids, kind="stable")  # DomainIndex wants ids ascending
        m = measure(kind, index, dom_ids[order], matrix[order], cfg)
        if kind == "hnsw" and m.recall < cfg.recall_target:
            index, m = _exact_instead(m, matrix, dom_ids, order, cfg)
        faiss.write_index(index, str(out / file_of(name)))
        search[name] = m.knobs
        records[name] = {**m.record, "build_s": round(built, 2),
                         "measure_s": round(time.perf_counter() - start - built, 2)}
    return search, records


def _exact_instead(hnsw: Measured, matrix: np.ndarray, ids: np.ndarray, order: np.ndarray,
                   cfg: IndexConfig) -> tuple[Any, Measured]:
    """The exact flat index for a domain whose HNSW graph cannot reach the recall target."""
    index = build_index("flat", matrix, ids, cfg)
    m = measure("flat", index, ids[order], matrix[order], cfg)
    why = (f"hnsw recall@100 reached {hnsw.recall} < {cfg.recall_target} (best at ef_search "
           f"{hnsw.knobs['ef_search']}, tried up to {EF_LADDER[-1]}): served exact")
    return index, Measured(m.knobs, {**m.record, "fallback": why}, m.recall)
