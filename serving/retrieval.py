"""Top-k search per domain: the published faiss index, with an exact fallback.

The exact path (one float32 matrix-vector product) answers when a domain has no index, when
the config asks for it, or when the candidates needed (k plus excluded ids) exceed
``ann_max_k``, where a graph or IVF search would cost as much and recall less.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from xemb.errors import VersionIntegrityError

__all__ = ["DomainIndex", "SearchKnobs", "load_index"]

_FAISS: Any = faiss  # its bundled stubs lag the SWIG API (search parameters)


@dataclass(frozen=True)
class SearchKnobs:
    ef_search: int = 256
    nprobe: int = 32
    ann_max_k: int = 1000
    exact: bool = False


def _params_factory(index: faiss.Index, knobs: SearchKnobs) -> Callable[[int], object] | None:
    """Per-call search parameters (thread-safe, unlike setting efSearch on the shared index)."""
    inner = index
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexHNSW):
        return lambda n: _FAISS.SearchParametersHNSW(efSearch=max(knobs.ef_search, n))
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return None
    nprobe = min(knobs.nprobe, ivf.nlist)
    return lambda n: _FAISS.SearchParametersIVF(nprobe=nprobe)


@dataclass(frozen=True)
class DomainIndex:
    ids: np.ndarray
    """int64 [n]: the domain's item ids, row-aligned with ``matrix``."""
    matrix: np.ndarray
    """float32 [n, d]: the items' ``full`` vectors (exact search)."""
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
        exclude = np.unique(exclude[np.isin(exclude, self.ids)]) if len(exclude) else exclude
        need = min(k + len(exclude), len(self.ids))
        if self.index is None or self.knobs.exact or need > self.knobs.ann_max_k:
            return (*self._exact(query, k, exclude), True)
        return (*self._ann(query, k, need, exclude), False)

    def _exact(self, query: np.ndarray, k: int,
               exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = self.matrix @ query
        if len(exclude):
            scores[np.isin(self.ids, exclude)] = -np.inf
        k = min(k, len(self.ids) - len(exclude))
        if k <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return self.ids[top], scores[top].astype(np.float32)

    def _ann(self, query: np.ndarray, k: int, need: int,
             exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        params = self.params(need) if self.params else None
        scores, ids = self.index.search(query.reshape(1, -1), need, params=params)
        ids, scores = ids[0], scores[0]
        keep = ids >= 0
        if len(exclude):
            keep &= ~np.isin(ids, exclude)
        return ids[keep][:k].astype(np.int64), scores[keep][:k].astype(np.float32)


def load_index(path: Path | None, ids: np.ndarray, matrix: np.ndarray,
               knobs: SearchKnobs) -> DomainIndex:
    """Read ``path`` (None: exact only) and check it covers exactly the domain's items."""
    if path is None or not path.is_file():
        return _with_norm(DomainIndex(ids, matrix, None, knobs))
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise VersionIntegrityError(f"{path.name}: unreadable faiss index") from exc
    if index.ntotal != len(ids) or index.d != matrix.shape[1]:
        raise VersionIntegrityError(
            f"{path.name}: {index.ntotal} vectors of width {index.d}, expected "
            f"{len(ids)} of width {matrix.shape[1]}")
    return _with_norm(DomainIndex(ids, matrix, index, knobs, _params_factory(index, knobs)))


def _with_norm(index: DomainIndex) -> DomainIndex:
    _ = index.max_norm  # computed at load, not on the first request
    return index
