"""intents: the atomic intent library over the transferable space (faiss spherical k-means).

Each intent gets a human-readable label (the titles nearest its centroid) and its support;
each item is mapped to its top-m intents with softmax weights. Intents live in the
transferable space, so one library serves every domain.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import faiss
import numpy as np

from xemb.settings.offline import IntentsConfig

__all__ = ["IntentLibrary", "build_intents"]


@dataclass
class IntentLibrary:
    vectors: np.ndarray  # [K,d] unit-norm centroids
    labels: list[str]
    support: np.ndarray  # [K] items whose top intent it is
    domain_support: list[str]  # JSON {domain: count} per intent
    item_ids: np.ndarray  # [N,m] intent ids per item
    item_weights: np.ndarray  # [N,m] weights per item (rows sum to 1)

    def dense(self) -> np.ndarray:
        """[N,K] item->intent weights (zeros off the top-m), for training the composer."""
        out = np.zeros((len(self.item_ids), len(self.vectors)), np.float32)
        np.put_along_axis(out, self.item_ids, self.item_weights, axis=1)
        return out


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _softmax(x: np.ndarray, temperature: float) -> np.ndarray:
    z = (x - x.max(axis=1, keepdims=True)) / temperature
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _labels(centroids: np.ndarray, x: np.ndarray, texts: list[str], n: int) -> list[str]:
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, nearest = index.search(centroids, n)
    return [" | ".join(texts[i][:60] for i in row if i >= 0) for row in nearest]


def build_intents(transferable: np.ndarray, texts: list[str], item_domain: np.ndarray,
                  domains: list[str], cfg: IntentsConfig) -> IntentLibrary:
    x = _unit(transferable)
    k = min(cfg.k, len(x))
    km = faiss.Kmeans(x.shape[1], k, niter=cfg.niter, seed=cfg.seed, spherical=True,
                      verbose=False, min_points_per_centroid=1)
    km.train(x)
    centroids = _unit(np.asarray(km.centroids))
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(centroids)
    m = min(cfg.top_m, k)
    sims, ids = index.search(x, m)
    top1 = ids[:, 0]
    support = np.bincount(top1, minlength=k).astype(np.int64)
    per_domain = [json.dumps({domains[d]: int(((top1 == c) & (item_domain == d)).sum())
                              for d in range(len(domains))}) for c in range(k)]
    return IntentLibrary(centroids, _labels(centroids, x, texts, cfg.label_titles), support,
                         per_domain, ids.astype(np.int64), _softmax(sims, cfg.temperature))
