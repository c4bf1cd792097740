"""Entropy of composed intent weights against uniform over the voted intents."""

from __future__ import annotations

import math

import numpy as np

from xemb.intent_stats import intent_entropy, row_entropy


def test_flat_weights_over_voted_intents_have_ratio_one() -> None:
    w = np.zeros((1, 10), np.float32)
    w[0, [1, 3, 5, 7]] = 0.25
    h, u = row_entropy(w)
    assert math.isclose(h[0], math.log(4), rel_tol=1e-6) and math.isclose(u[0], math.log(4))
    assert intent_entropy(w)["ratio"] == 1.0 and intent_entropy(w)["mean_voted"] == 4


def test_one_intent_has_zero_entropy_and_mixed_rows_average() -> None:
    one = np.eye(5, dtype=np.float32)[2]
    h, u = row_entropy(one)
    assert h[0] == 0 and u[0] == 0
    w = np.array([[0.5, 0.5, 0, 0], [0.7, 0.1, 0.1, 0.1]], np.float32)
    out = intent_entropy(w)
    h, u = row_entropy(w)
    assert out["n"] == 2 and math.isclose(out["ratio"], h.mean() / u.mean(), abs_tol=1e-4)
    assert 0 < out["mean_row_ratio"] < 1 and out["mean_voted"] == 3
    assert intent_entropy(np.zeros((0, 4)))["n"] == 0
