"""How spread out composed intent weights are (NumPy only: the serving path uses it).

The composer gives weight only to intents that got votes from the history (the others are
exactly 0). Entropy is measured over those voted intents and compared with the uniform
distribution over them (``log(#voted)``): a ratio near 1 means the weights are flat (the
intent pathway says little), near 0 that one intent dominates.
"""

from __future__ import annotations

import numpy as np

__all__ = ["VOTED_EPS", "row_entropy", "intent_entropy"]

VOTED_EPS = 1e-12
"""Weights at or below this are intents that got no vote."""


def row_entropy(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``weights`` [B,K] (or [K]) -> (entropy in nats over the voted intents, log(#voted)),
    each [B]."""
    w = np.atleast_2d(np.asarray(weights, np.float64))
    voted = w > VOTED_EPS
    p = np.where(voted, w, 0.0)
    p = p / np.maximum(p.sum(axis=1, keepdims=True), VOTED_EPS)
    h = -(p * np.log(np.where(voted, p, 1.0))).sum(axis=1)
    return np.maximum(h, 0.0), np.log(np.maximum(voted.sum(axis=1), 1))


def intent_entropy(weights: np.ndarray) -> dict[str, float]:
    """Mean entropy of composed intent weights, mean uniform entropy (log #voted), their
    ratio, the mean per-row ratio (rows with 2+ voted intents) and the mean #voted."""
    h, u = row_entropy(weights)
    if len(h) == 0:
        return {"n": 0, "mean_entropy": 0.0, "mean_uniform_entropy": 0.0, "ratio": 0.0,
                "mean_row_ratio": 0.0, "mean_voted": 0.0}
    multi = u > 0
    return {
        "n": int(len(h)),
        "mean_entropy": round(float(h.mean()), 4),
        "mean_uniform_entropy": round(float(u.mean()), 4),
        "ratio": round(float(h.mean() / u.mean()), 4) if u.mean() > 0 else 0.0,
        "mean_row_ratio": round(float((h[multi] / u[multi]).mean()), 4) if multi.any() else 0.0,
        "mean_voted": round(float(np.exp(u).mean()), 2),
    }
