"""The adapter feeds shared by publish and the cold-start path (NumPy only): only the inputs a
graph lists, descriptions reshaped from their flattened shard form, and a fusing graph given
no descriptions gets mask 0 (the title-only path)."""

from __future__ import annotations

import numpy as np

from xemb.adapter_io import adapter_feeds, description_slots

PLAIN = {"semantic": ["batch", 4], "item_row": ["batch"]}  # no residual heads: no domain
FUSING = {"semantic": ["batch", 4], "domain": ["batch"], "item_row": ["batch"],
          "descriptions": ["batch", 2, 4], "description_mask": ["batch", 2]}


def _batch() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.arange(12, dtype=np.float64).reshape(3, 4), np.array([0, 1, 0]),
            np.array([5, -1, 7]))


def test_only_the_listed_inputs_are_fed() -> None:
    feeds = adapter_feeds(PLAIN, *_batch(), np.ones((3, 2, 4)), np.ones((3, 2)))
    assert set(feeds) == {"semantic", "item_row"} and description_slots(PLAIN) == 0
    assert feeds["semantic"].dtype == np.float32 and feeds["item_row"].dtype == np.int64
    assert feeds["item_row"].tolist() == [5, -1, 7]


def test_descriptions_come_flattened_or_not() -> None:
    vectors = np.random.default_rng(0).normal(size=(3, 2, 4))
    mask = np.array([[1, 1], [1, 0], [0, 0]])
    full = adapter_feeds(FUSING, *_batch(), vectors, mask)
    flat = adapter_feeds(FUSING, *_batch(), vectors.reshape(3, 8), mask)
    assert description_slots(FUSING) == 2 and set(full) == set(FUSING)
    for name in FUSING:
        np.testing.assert_array_equal(full[name], flat[name])
    np.testing.assert_array_equal(full["descriptions"], vectors.astype(np.float32))
    assert full["description_mask"].dtype == np.float32


def test_no_descriptions_is_mask_zero() -> None:
    feeds = adapter_feeds(FUSING, *_batch())
    assert feeds["descriptions"].shape == (3, 2, 4)
    assert not feeds["description_mask"].any() and not feeds["descriptions"].any()
