"""The papers' protocol: rank each held-out target against 999 sampled negatives of its
domain (HR@10, NDCG@10), plus full-ranking Recall@50 over the whole target domain. Ties count
against the target (a negative scoring exactly as high is ranked above it), so a model that
scores everything alike gets no hits.

Scores are dot products between a user vector and item vectors; which vectors go in is the
caller's choice, so the served model and the baselines run through the same code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from xemb.composer_io import ItemArrays
from xemb.embedders.data import Dataset
from xemb.errors import FailedPrecondition

__all__ = ["EvalSet", "Ranks", "eval_set", "ranks", "metrics_from_ranks", "rank_metrics",
           "popularity_scores", "served_metrics", "served_items", "baseline_metrics",
           "served_ranks", "baseline_ranks", "valid_score"]


@dataclass
class EvalSet:
    histories: list[np.ndarray]  # item rows, oldest first (target removed)
    targets: np.ndarray  # item row of each target
    target_domain: np.ndarray  # domain index of each target
    negatives: np.ndarray  # [n, n_neg] item rows


def eval_set(ds: Dataset, split: str, n_neg: int = 999, seed: int = 42) -> EvalSet:
    """Rows in file order; one negative draw per row from a single generator."""
    seqs = [s for _, s in ds.sequences[split] if len(s) >= 2]
    targets = np.array([s[-1] for s in seqs], np.int64)
    tdom = ds.item_domain[targets]
    rng = np.random.default_rng(seed)
    ids = ds.item_ids
    by_domain = {d: ids[ds.item_domain == d] for d in np.unique(ds.item_domain)}
    # small catalogues (test slices) have fewer than n_neg items in a domain
    n_neg = min([n_neg, *(len(p) - 1 for p in by_domain.values())])
    negs = np.zeros((len(seqs), n_neg), np.int64)
    for i, (t, d) in enumerate(zip(targets, tdom)):
        pool = by_domain[d]
        pool = pool[pool != ids[t]]
        negs[i] = ds.rows_of(rng.choice(pool, n_neg, replace=False))
    return EvalSet([s[:-1] for s in seqs], targets, tdom, negs)


@dataclass
class Ranks:
    """Per eval row: the target's rank among its sampled negatives and in its whole domain
    (both 0-based; ties count against the target: a negative scoring the same is above it)."""

    sampled: np.ndarray  # [n] int64
    full: np.ndarray  # [n] int64
    target_domain: np.ndarray  # [n] domain index

    def hit_rate(self, k: int, sel: np.ndarray | None = None) -> float:
        r = self.sampled if sel is None else self.sampled[sel]
        return float((r < k).mean()) if len(r) else 0.0


def ranks(scores_fn, es: EvalSet, item_domain: np.ndarray) -> Ranks:
    """``scores_fn(i, rows) -> scores`` for eval row i over the rows of the target's domain."""
    sampled, full = (np.zeros(len(es.targets), np.int64) for _ in range(2))
    domain_rows = {d: np.flatnonzero(item_domain == d) for d in np.unique(item_domain)}
    for i, (t, d) in enumerate(zip(es.targets, es.target_domain)):
        pool = domain_rows[d]
        all_scores = scores_fn(i, pool)
        pos = np.searchsorted(pool, t)
        target_score = all_scores[pos]
        neg_scores = all_scores[np.searchsorted(pool, es.negatives[i])]
        sampled[i] = int((neg_scores >= target_score).sum())
        full[i] = int((all_scores >= target_score).sum()) - 1  # minus the target itself
    return Ranks(sampled, full, np.asarray(es.target_domain))


def metrics_from_ranks(r: Ranks, domains: list[str], k: int = 10, recall_k: int = 50
                       ) -> dict[str, dict[str, float]]:
    """HR@k, NDCG@k (sampled negatives) and full-ranking Recall@recall_k per target domain."""
    out = {}
    for d, name in enumerate(domains):
        sel = r.target_domain == d
        if sel.any():
            s = r.sampled[sel]
            ndcg = np.where(s < k, 1.0 / np.log2(s + 2), 0.0)
            out[name] = {f"HR@{k}": round(float((s < k).mean()), 4),
                         f"NDCG@{k}": round(float(ndcg.mean()), 4),
                         f"Recall@{recall_k}": round(float((r.full[sel] < recall_k).mean()), 4),
                         "n": int(sel.sum())}
    return out


def rank_metrics(scores_fn, es: EvalSet, item_domain: np.ndarray, domains: list[str],
                 k: int = 10, recall_k: int = 50) -> dict[str, dict[str, float]]:
    """``scores_fn(i, rows) -> scores`` for eval row i. Returns {domain: metrics}."""
    return metrics_from_ranks(ranks(scores_fn, es, item_domain), domains, k, recall_k)


def popularity_scores(ds: Dataset) -> np.ndarray:
    """Training interaction counts per item row (the popularity baseline)."""
    counts = np.zeros(len(ds.item_ids), np.float64)
    for _, s in ds.sequences["train"]:
        np.add.at(counts, s, 1)
    return counts


def served_items(version_dir: Path) -> tuple[np.ndarray, ItemArrays]:
    """Item ids and the composer's per-row arrays, read by the gRPC service's own reader."""
    from xemb import layout
    from xemb.serving.tables import read_items
    from xemb.store import VersionStore

    manifest = VersionStore(version_dir.parent.parent).manifest(version_dir.name)
    items = read_items(version_dir / layout.ITEMS, manifest.domains,
                       manifest.dims["embedding"], int(manifest.params["top_m"]))
    return items.ids, ItemArrays(items.parts["full"], items.domain, items.intent_ids,
                                 items.intent_w)


def served_metrics(version_dir: Path, ds: Dataset, split: str, max_len: int,
                   n_neg: int = 999, seed: int = 42, recall_k: int = 50,
                   prior_weight: float | None = None) -> dict[str, dict[str, float]]:
    """Exactly the served path: the items table read by the gRPC service's own reader, user
    vector = composer.onnx output for the history (inputs built by xemb.composer_io, as the
    service builds them), item vector = the published ``full`` column, score = dot product.
    ``prior_weight`` replaces the user vector's last coordinate (a version built with the
    item prior: 0 scores without it)."""
    r, _ = served_ranks(version_dir, ds, split, max_len, n_neg, seed, prior_weight)
    return metrics_from_ranks(r, ds.domains, recall_k=recall_k)


def served_ranks(version_dir: Path, ds: Dataset, split: str, max_len: int, n_neg: int = 999,
                 seed: int = 42, prior_weight: float | None = None
                 ) -> tuple[Ranks, np.ndarray]:
    """The ranks behind :func:`served_metrics` (same vectors, same scores), and the composed
    intent weights [n, K] of each eval row (for how spread out they are)."""
    from xemb import layout
    from xemb.composer_io import compose_batched

    ids, arrays = served_items(version_dir)
    if not np.array_equal(ids, ds.item_ids):
        raise FailedPrecondition(f"{version_dir}: the published items are not the dataset's "
                                 "items (was it built from another config?)")
    es = eval_set(ds, split, n_neg, seed)
    sess = ort.InferenceSession(str(version_dir / layout.COMPOSER_ONNX),
                                providers=["CPUExecutionProvider"])
    users, weights = compose_batched(sess, arrays, es.histories, es.target_domain, max_len)
    if prior_weight is not None:
        users[:, -1] = prior_weight
    full = arrays.full
    return ranks(lambda i, pool: full[pool] @ users[i], es, ds.item_domain), weights


def valid_score(metrics: dict[str, dict[str, float]]) -> float:
    """One number to select on: HR@10 averaged over target domains (each domain counts the
    same, however many valid targets it has)."""
    values = [m["HR@10"] for m in metrics.values()]
    return float(np.mean(values)) if values else 0.0


POP_TEXT_BETAS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def _baseline_scores(ds: Dataset, semantic: np.ndarray, es: EvalSet, beta: float
                     ) -> dict[str, Callable[[int, np.ndarray], np.ndarray]]:
    log_pop = np.log1p(popularity_scores(ds))
    last5 = np.stack([semantic[h[-5:]].mean(0) for h in es.histories])
    return {"popularity": lambda i, pool: log_pop[pool],
            "text_last5": lambda i, pool: semantic[pool] @ last5[i],
            "popularity_text": lambda i, pool: semantic[pool] @ last5[i] + beta * log_pop[pool]}


def tuned_pop_text_beta(ds: Dataset, semantic: np.ndarray, n_neg: int = 999, seed: int = 42
                        ) -> float:
    """Weight of log(1 + train count) added to the text score, chosen on valid (HR@10
    averaged over domains); 0 when there is no valid split."""
    if not any(len(s) >= 2 for _, s in ds.sequences.get("valid", [])):
        return 0.0
    es = eval_set(ds, "valid", n_neg, seed)
    best, best_beta = -1.0, 0.0
    for beta in POP_TEXT_BETAS:
        r = ranks(_baseline_scores(ds, semantic, es, beta)["popularity_text"], es,
                  ds.item_domain)
        score = valid_score(metrics_from_ranks(r, ds.domains))
        if score > best:
            best, best_beta = score, beta
    return best_beta


def baseline_metrics(ds: Dataset, semantic: np.ndarray, split: str, n_neg: int = 999,
                     seed: int = 42, recall_k: int = 50) -> dict[str, dict]:
    """Popularity (train counts), the mean of the last 5 text vectors (dot product), and
    that text score plus ``beta * log(1 + train count)`` with beta chosen on valid."""
    es = eval_set(ds, split, n_neg, seed)
    beta = tuned_pop_text_beta(ds, semantic, n_neg, seed)
    return {name: rank_metrics(fn, es, ds.item_domain, ds.domains, recall_k=recall_k)
            for name, fn in _baseline_scores(ds, semantic, es, beta).items()}


def baseline_ranks(ds: Dataset, semantic: np.ndarray, split: str, n_neg: int = 999,
                   seed: int = 42) -> dict[str, Ranks]:
    """The ranks behind :func:`baseline_metrics` (same scores), per baseline."""
    es = eval_set(ds, split, n_neg, seed)
    beta = tuned_pop_text_beta(ds, semantic, n_neg, seed)
    return {name: ranks(fn, es, ds.item_domain)
            for name, fn in _baseline_scores(ds, semantic, es, beta).items()}
