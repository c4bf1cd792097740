"""intents: the atomic intent library over the transferable space (faiss spherical k-means).

Each item is mapped to its top-m intents with softmax weights (sparse: ids + weights). An
intent's *members* are the items whose top intent it is. Each intent gets labels people can
read: ``label`` (the titles nearest its centroid, any domain), ``domain_labels`` (per domain,
its most central members of that domain) and ``top_terms`` (the words that set its members'
titles apart from the catalogue). Intents live in the transferable space, so one library
serves every domain; :func:`intent_report` measures how domain-pure and how used they are.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from embedders.intent_terms import TermStats
from xemb.settings.offline import IntentsConfig

__all__ = ["IntentLibrary", "build_intents", "intent_report", "members_by_intent"]

TITLE_CHARS = 60


@dataclass
class IntentLibrary:
    vectors: np.ndarray  # [K,d] unit-norm centroids
    labels: list[str]
    support: np.ndarray  # [K] items whose top intent it is
    domain_support: list[str]  # JSON {domain: count} per intent
    item_ids: np.ndarray  # [N,m] intent ids per item
    item_weights: np.ndarray  # [N,m] weights per item (rows sum to 1)
    domain_labels: list[str] = field(default_factory=list)  # JSON {domain: label} per intent
    top_terms: list[list[str]] = field(default_factory=list)  # distinctive words per intent

    def dense(self) -> np.ndarray:
        """[N,K] item->intent weights (zeros off the top-m), for training the composer."""
        out = np.zeros((len(self.item_ids), len(self.vectors)), np.float32)
        np.put_along_axis(out, self.item_ids, self.item_weights, axis=1)
        return out

    def save(self, path: Path) -> None:
        np.savez(path, vectors=self.vectors, support=self.support, item_ids=self.item_ids,
                 item_weights=self.item_weights, labels=np.array(self.labels, dtype=object),
                 domain_support=np.array(self.domain_support, dtype=object),
                 domain_labels=np.array(self.domain_labels, dtype=object),
                 top_terms=np.array([json.dumps(t) for t in self.top_terms], dtype=object))

    @classmethod
    def load(cls, path: Path) -> IntentLibrary:
        with np.load(path, allow_pickle=True) as z:
            extra = {"domain_labels": list(z["domain_labels"]),
                     "top_terms": [json.loads(t) for t in z["top_terms"]]} \
                if "top_terms" in z else {}
            return cls(z["vectors"], list(z["labels"]), z["support"],
                       list(z["domain_support"]), z["item_ids"], z["item_weights"], **extra)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _softmax(x: np.ndarray, temperature: float) -> np.ndarray:
    z = (x - x.max(axis=1, keepdims=True)) / temperature
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _join(texts: list[str], rows: np.ndarray) -> str:
    """Titles as people read them (catalogues often carry HTML entities such as ``&amp;``)."""
    return " | ".join(html.unescape(texts[i])[:TITLE_CHARS] for i in rows if i >= 0)


def _labels(centroids: np.ndarray, x: np.ndarray, texts: list[str], n: int) -> list[str]:
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, nearest = index.search(centroids, n)
    return [_join(texts, row) for row in nearest]


def members_by_intent(top1: np.ndarray, sim1: np.ndarray, k: int) -> list[np.ndarray]:
    """Item rows whose top intent is c, most central (highest similarity) first, per c."""
    order = np.lexsort((-sim1, top1))
    return np.split(order, np.cumsum(np.bincount(top1, minlength=k))[:-1])


def _domain_labels(members: list[np.ndarray], texts: list[str], item_domain: np.ndarray,
                   domains: list[str], n: int) -> list[str]:
    out = []
    for rows in members:
        dom = item_domain[rows]
        out.append(json.dumps({name: _join(texts, rows[dom == d][:n])
                               for d, name in enumerate(domains) if (dom == d).any()}))
    return out


def build_intents(transferable: np.ndarray, texts: list[str], item_domain: np.ndarray,
                  domains: list[str], cfg: IntentsConfig) -> IntentLibrary:
    """Intents over the transferable vectors as given (unit-normalised here)."""
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
    members = members_by_intent(top1, sims[:, 0], k)
    terms = TermStats(texts)
    return IntentLibrary(
        centroids, _labels(centroids, x, texts, cfg.label_titles), support, per_domain,
        ids.astype(np.int64), _softmax(sims, cfg.temperature),
        domain_labels=_domain_labels(members, texts, item_domain, domains, cfg.label_titles),
        top_terms=[terms.top(rows, cfg.top_terms) for rows in members])


def _round(x: float) -> float:
    return round(float(x), 4)


def intent_report(lib: IntentLibrary, item_domain: np.ndarray, domains: list[str]) -> dict:
    """Purity and coverage of every intent, and a summary (for ``manifest.metrics``).

    purity: share of an intent's members (items whose top intent it is) from its dominant
    domain (None without members); coverage: share of items that have it among their top-m;
    share_top1: share of items whose top intent it is. ``coverage_top1`` is the share of
    intents that are some item's top intent."""
    k, n, n_dom = len(lib.vectors), max(len(lib.item_ids), 1), len(domains)
    top1 = lib.item_ids[:, 0]
    counts = np.bincount(top1 * n_dom + item_domain, minlength=k * n_dom).reshape(k, n_dom)
    support = counts.sum(1)
    purity = counts.max(1) / np.maximum(support, 1)
    coverage = np.bincount(lib.item_ids.ravel(), minlength=k) / n
    used = support > 0
    dom_labels = lib.domain_labels or ["{}"] * k
    per_intent = [{
        "id": c, "support": int(support[c]),
        "purity": _round(purity[c]) if used[c] else None,
        "coverage": _round(coverage[c]), "share_top1": _round(support[c] / n),
        "dominant_domain": domains[int(counts[c].argmax())] if used[c] else None,
        "label": lib.labels[c], "domain_labels": json.loads(dom_labels[c]),
        "top_terms": lib.top_terms[c] if lib.top_terms else [],
    } for c in range(k)]
    return {"k": k, "items": int(len(lib.item_ids)), "top_m": int(lib.item_ids.shape[1]),
            "purity_mean": _round(purity[used].mean()) if used.any() else None,
            "purity_weighted": _round(counts.max(1).sum() / n),
            "coverage_top1": _round(used.mean()), "per_intent": per_intent}
