"""Top-k search per domain: the published faiss index, with an exact fallback.

The exact path (one float32 matrix-vector product) answers when a domain has no index, when
the config asks for it, or when the candidates needed (k plus excluded ids) exceed
``ann_max_k``, where a graph or IVF search would cost as much and recall less.

Indexes are memory-mapped (faiss ``IO_FLAG_MMAP_IFC``: HNSW graphs and flat storage, IVF
lists), so processes on one host share them through the page cache. An IVF-PQ index returns
``rerank`` times the candidates, re-scored exactly against the domain's ``full`` vectors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from xemb.errors import VersionIntegrityError

__all__ = ["DomainIndex", "SearchKnobs", "load_index", "read_mapped", "is_pq"]

_FAISS: Any = faiss  # its bundled stubs lag the SWIG API (search parameters)


DEFAULT_EF_SEARCH = 256
DEFAULT_NPROBE = 32


@dataclass(frozen=True)
class SearchKnobs:
    ef_search: int | None = None
    """HNSW breadth; None: what publish tuned for the version (``params.search``), else 256."""
    nprobe: int | None = None
    """IVF lists probed; None: what publish tuned for the version, else 32."""
    ann_max_k: int = 1000
    exact: bool = False
    rerank: int = 1
    """IVF-PQ: candidates fetched per result, re-scored exactly (publish records it)."""

    def resolved(self, tuned: dict[str, Any] | None) -> SearchKnobs:
        """Concrete knobs for one domain: the config's where set, else the tuned ones."""
        tuned = tuned or {}
        return SearchKnobs(
            ef_search=self.ef_search or int(tuned.get("ef_search", DEFAULT_EF_SEARCH)),
            nprobe=self.nprobe or int(tuned.get("nprobe", DEFAULT_NPROBE)),
            ann_max_k=self.ann_max_k, exact=self.exact,
            rerank=max(1, int(tuned.get("rerank", self.rerank))))


def params_factory(index: faiss.Index, knobs: SearchKnobs) -> Callable[[int], object] | None:
    """Per-call search parameters (thread-safe, unlike setting efSearch on the shared index)."""
    inner = index
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexHNSW):
        ef = knobs.ef_search or DEFAULT_EF_SEARCH
        return lambda n: _FAISS.SearchParametersHNSW(efSearch=max(ef, n))
    ivf = _ivf(index)
    if ivf is None:
        return None
    nprobe = min(knobs.nprobe or DEFAULT_NPROBE, ivf.nlist)
    return lambda n: _FAISS.SearchParametersIVF(nprobe=nprobe)


def _ivf(index: faiss.Index) -> Any:
    try:
        return faiss.downcast_index(faiss.extract_index_ivf(index))
    except RuntimeError:
        return None


def is_pq(index: faiss.Index) -> bool:
    return isinstance(_ivf(index), faiss.IndexIVFPQ)


@dataclass(frozen=True)
class DomainIndex:
    ids: np.ndarray
    """int64 [n]: the domain's item ids, row-aligned with ``matrix``."""
    matrix: np.ndarray
    """float32 [n, d]: the items' ``full`` vectors (exact search; ``ids`` ascending)."""
    index: Any
    knobs: SearchKnobs
    params: Callable[[int], object] | None = None

    @cached_property
    def max_norm(self) -> float:
        """The largest item norm: a query's scores are bounded by its norm times this."""
        if not len(self.matrix):
            return 0.0
        return float(np.sqrt(np.einsum("ij,ij->i", self.matrix, self.matrix,
                                       dtype=np.float64).max()))

    def search(self, query: np.ndarray, k: int,
               exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """Top-k (ids, scores, exact?) by inner product, ``exclude`` ids left out."""
        exclude = self._present(exclude) if len(exclude) else exclude
        need = min(k + len(exclude), len(self.ids))
        if self.index is None or self.knobs.exact or need > self.knobs.ann_max_k:
            return (*self._exact(query, k, exclude), True)
        return (*self._ann(query, k, need, exclude), False)

    def _present(self, exclude: np.ndarray) -> np.ndarray:
        """The distinct ``exclude`` ids this domain holds (``ids`` ascending: a binary
        search per excluded id, not a scan of the domain per request)."""
        if not len(self.ids):
            return exclude[:0]
        pos = np.minimum(np.searchsorted(self.ids, exclude), len(self.ids) - 1)
        return np.unique(exclude[self.ids[pos] == exclude])

    def _exact(self, query: np.ndarray, k: int,
               exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = self.matrix @ query
        if len(exclude):  # present and distinct (search): their rows by binary search
            scores[np.searchsorted(self.ids, exclude)] = -np.inf
        k = min(k, len(self.ids) - len(exclude))
        if k <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return self.ids[top], scores[top].astype(np.float32)

    def _ann(self, query: np.ndarray, k: int, need: int,
             exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fetch = min(need * self.knobs.rerank, len(self.ids))
        params = self.params(fetch) if self.params else None
        scores, ids = self.index.search(query.reshape(1, -1), fetch, params=params)
        ids, scores = ids[0], scores[0]
        keep = ids >= 0
        if len(exclude):
            keep &= ~np.isin(ids, exclude)
        ids, scores = ids[keep], scores[keep]
        if self.knobs.rerank > 1:
            ids, scores = self._rescore(query, ids)
        return ids[:k].astype(np.int64), scores[:k].astype(np.float32)

    def _rescore(self, query: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of approximate candidates (``ids`` ascending: rows by searchsorted)."""
        rows = np.searchsorted(self.ids, ids)
        scores = self.matrix[rows] @ query
        order = np.argsort(-scores, kind="stable")
        return ids[order], scores[order]


def read_mapped(path: Path) -> faiss.Index:
    """Memory-map the index where its type allows (faiss IO_FLAG_MMAP_IFC), else read it."""
    try:
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
    except RuntimeError:
        pass
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        raise VersionIntegrityError(f"{path.name}: unreadable faiss index") from exc


def load_index(path: Path | None, ids: np.ndarray, matrix: np.ndarray,
               knobs: SearchKnobs) -> DomainIndex:
    """Read ``path`` (None: exact only) and check it covers exactly the domain's items."""
    if path is None or not path.is_file():
        return _with_norm(DomainIndex(ids, matrix, None, knobs))
    index = read_mapped(path)
    if not is_pq(index):
        knobs = replace(knobs, rerank=1)
    if index.ntotal != len(ids) or index.d != matrix.shape[1]:
        raise VersionIntegrityError(
            f"{path.name}: {index.ntotal} vectors of width {index.d}, expected "
            f"{len(ids)} of width {matrix.shape[1]}")
    return _with_norm(DomainIndex(ids, matrix, index, knobs, params_factory(index, knobs)))


def _with_norm(index: DomainIndex) -> DomainIndex:
    _ = index.max_norm  # computed at load, not on the first request
    return index
