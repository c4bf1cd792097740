"""Config section of the ANN indexes written at publish (``index:``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class IndexConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)

    type: Literal["auto", "hnsw", "ivf", "flat"] = "auto"
    """``auto``: per domain, HNSW up to ``hnsw_max_items`` items and IVF above; ``hnsw``,
    ``ivf`` or ``flat`` (exact inner product, no graph): that type for every domain. A
    domain whose HNSW graph misses ``recall_target`` at the largest ``efSearch`` is served by
    the exact flat index instead (the manifest's ``metrics.index`` says so)."""
    hnsw_max_items: int = Field(100_000, ge=1)
    """``auto``: largest domain (items) that gets an HNSW graph."""
    ivf_codes: Literal["flat", "pq"] = "flat"
    """What IVF lists hold: ``flat`` (the float32 vectors: exact scores within the probed
    lists) or ``pq`` (product-quantized codes, about 4 bits a coordinate; candidates are
    re-scored exactly against the mapped ``full`` vectors)."""
    hnsw_m: int = Field(32, ge=4, le=128)
    """HNSW links per node."""
    ef_construction: int = Field(80, ge=8)
    """HNSW build breadth."""
    nlist: int | None = Field(None, ge=1)
    """IVF lists; None: ``4 * sqrt(items)``, at most ``min(items, train_sample) / 39`` (faiss
    wants 39 training vectors per list)."""
    pq_m: int | None = Field(None, ge=1)
    """IVF-PQ sub-quantizers (must divide the vector width); None: the divisor of the width
    nearest ``width / 2``."""
    pq_rerank: int = Field(4, ge=1, le=64)
    """IVF-PQ: candidates fetched per requested result, then re-scored exactly."""
    train_sample: int = Field(100_000, ge=256)
    """Most vectors IVF training (k-means, PQ codebooks) sees: a seeded sample, so training
    memory does not grow with the catalogue."""
    recall_target: float = Field(0.95, gt=0, le=1)
    """recall@100 against exact search the tuned search knobs must reach (measured at publish
    on item vectors as queries; the smallest ``nprobe``/``efSearch`` that reaches it is
    recorded in the manifest and used by servers whose config leaves the knob unset)."""
    recall_queries: int = Field(200, ge=1)
    """Item vectors per domain used as queries to measure recall."""
    seed: int = 0
    """Seed of the training sample and of the recall queries."""
