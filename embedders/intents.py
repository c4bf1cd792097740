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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from xemb.embedders.intent_terms import TermStats
from xemb.settings.offline import IntentsConfig

__all__ = ["Assignment", "IntentLibrary", "assign_batch", "assign_intents", "build_intents",
           "intent_report", "members_by_intent", "train_centroids"]

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


def _labels(centroids: np.ndarray, x: np.ndarray, texts: list[str], n: int,
            batch: int) -> list[str]:
    """The ``n`` items nearest each centroid, searched batch by batch of items (one batch
    holds every item of a catalogue up to ``batch``: one exact search, as before)."""
    best_d = np.full((len(centroids), 0), -np.inf, np.float32)
    best_i = np.zeros((len(centroids), 0), np.int64)
    for s in range(0, len(x), batch):
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(_unit(x[s:s + batch]))
        d, i = index.search(centroids, n)
        d = np.where(i >= 0, d, -np.inf).astype(np.float32)
        best_d = np.concatenate([best_d, d], axis=1)
        best_i = np.concatenate([best_i, np.where(i >= 0, i + s, -1)], axis=1)
        keep = np.argsort(-best_d, axis=1, kind="stable")[:, :n]
        best_d = np.take_along_axis(best_d, keep, axis=1)
        best_i = np.take_along_axis(best_i, keep, axis=1)
    return [_join(texts, row) for row in best_i]


@dataclass
class Assignment:
    """Items' top-m intents: ids [B,m] int64, cosine to each [B,m], softmax weights [B,m]."""

    ids: np.ndarray
    sims: np.ndarray
    weights: np.ndarray


def assign_batch(transferable: np.ndarray, centroids: np.ndarray, top_m: int,
                 temperature: float) -> Assignment:
    """One batch of transferable vectors -> their top-m intents (unit-normalised here):
    the per-batch function of item->intent assignment (sparse; memory grows with the batch
    times K, never with the catalogue)."""
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, np.float32))
    sims, ids = index.search(_unit(transferable), min(top_m, len(centroids)))
    return Assignment(ids.astype(np.int64), sims, _softmax(sims, temperature))


def assign_intents(transferable: np.ndarray, centroids: np.ndarray, top_m: int,
                   temperature: float, batch: int) -> Assignment:
    """Every item's top-m intents, ``batch`` items at a time into [N,m] arrays."""
    n, m = len(transferable), min(top_m, len(centroids))
    out = Assignment(np.zeros((n, m), np.int64), np.zeros((n, m), np.float32),
                     np.zeros((n, m), np.float32))
    for s in range(0, n, batch):
        a = assign_batch(transferable[s:s + batch], centroids, top_m, temperature)
        out.ids[s:s + batch], out.sims[s:s + batch], out.weights[s:s + batch] = \
            a.ids, a.sims, a.weights
    return out


def train_centroids(transferable: np.ndarray, cfg: IntentsConfig) -> np.ndarray:
    """Spherical k-means on at most ``cfg.train_sample`` items (a seeded sample; every item
    when there are no more), unit-normalised centroids [K,d]."""
    n = len(transferable)
    rows = (np.sort(np.random.default_rng(cfg.seed).choice(n, cfg.train_sample, replace=False))
            if n > cfg.train_sample else slice(None))
    x = _unit(transferable[rows])
    k = min(cfg.k, len(x))
    km = faiss.Kmeans(x.shape[1], k, niter=cfg.niter, seed=cfg.seed, spherical=True,
                      verbose=False, min_points_per_centroid=1)
    km.train(x)
    return _unit(np.asarray(km.centroids))


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
                  domains: list[str], cfg: IntentsConfig, batch: int = 65_536,
                  assign: Callable[[np.ndarray], Assignment] | None = None) -> IntentLibrary:
    """Intents over the transferable vectors as given (unit-normalised here): k-means on a
    sample, then assignment and labels ``batch`` items at a time."""
    centroids = train_centroids(transferable, cfg)
    k = len(centroids)
    a = (assign(centroids) if assign is not None  # ``assign``: e.g. on Ray (engine_ray)
         else assign_intents(transferable, centroids, cfg.top_m, cfg.temperature, batch))
    top1 = a.ids[:, 0]
    counts = np.bincount(top1 * len(domains) + item_domain,
                         minlength=k * len(domains)).reshape(k, len(domains))
    per_domain = [json.dumps({domains[d]: int(counts[c, d]) for d in range(len(domains))})
                  for c in range(k)]
    members = members_by_intent(top1, a.sims[:, 0], k)
    terms = TermStats(texts) if cfg.top_terms > 0 else None  # counting tokenizes every title
    return IntentLibrary(
        centroids, _labels(centroids, transferable, texts, cfg.label_titles, batch),
        counts.sum(1).astype(np.int64), per_domain, a.ids, a.weights,
        domain_labels=_domain_labels(members, texts, item_domain, domains, cfg.label_titles),
        top_terms=[terms.top(rows, cfg.top_terms) if terms else [] for rows in members])


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
