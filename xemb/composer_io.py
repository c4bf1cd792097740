"""Composer inputs from item rows: the one place that turns histories into the tensors
``composer.onnx`` takes, shared by batch materialization, ``xemb eval`` and the gRPC service
(so the evaluation measures exactly what is served). NumPy only: no torch here."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

__all__ = ["ItemArrays", "composer_feeds", "compose_batched"]


class ItemArrays:
    """Per-row arrays of a published items table, as the composer needs them."""

    def __init__(self, full: np.ndarray, domain: np.ndarray, intent_ids: np.ndarray,
                 intent_weights: np.ndarray) -> None:
        self.full = np.ascontiguousarray(full, np.float32)
        self.domain = np.asarray(domain, np.int64)
        self.intent_ids = np.asarray(intent_ids, np.int64)
        self.intent_weights = np.asarray(intent_weights, np.float32)


def composer_feeds(items: ItemArrays, histories: Sequence[np.ndarray],
                   target_domain: np.ndarray, max_len: int) -> dict[str, np.ndarray]:
    """Right-align the most recent ``max_len`` rows of each history (padding in front).
    Every history must hold at least one row."""
    width = max(1, min(max_len, max(len(h) for h in histories)))
    rows = np.zeros((len(histories), width), np.int64)
    mask = np.zeros((len(histories), width), np.float32)
    for i, h in enumerate(histories):
        h = np.asarray(h, np.int64)[-width:]
        rows[i, width - len(h):] = h
        mask[i, width - len(h):] = 1.0
    return {
        "hist_vec": items.full[rows],
        "hist_domain": items.domain[rows],
        "hist_mask": mask,
        "hist_intents": items.intent_ids[rows],
        "hist_intent_w": items.intent_weights[rows] * mask[..., None],
        "target_domain": np.asarray(target_domain, np.int64).reshape(-1),
    }


def compose_batched(sess, items: ItemArrays, histories: Sequence[np.ndarray],  # type: ignore[no-untyped-def]
                    target_domain: np.ndarray, max_len: int, batch: int = 1024
                    ) -> tuple[np.ndarray, np.ndarray]:
    """User vectors and intent weights for many histories through an ONNX Runtime session."""
    vecs, weights = [], []
    for s in tqdm(range(0, len(histories), batch), desc="compose", unit="batch",
                  disable=len(histories) <= batch):
        v, w = sess.run(None, composer_feeds(items, histories[s:s + batch],
                                             target_domain[s:s + batch], max_len))
        vecs.append(v)
        weights.append(w)
    return np.concatenate(vecs), np.concatenate(weights)
