"""Materialization: every item's published vectors (transferable, residual, full) through the
adapter's ONNX graph, batch by batch into preallocated arrays.

:func:`materialize_batch` is the per-batch function (a Ray Data ``map_batches`` actor holds
one session of ``adapter.onnx``, from :func:`xemb.embedders.device.ort_session`, and calls it);
:func:`materialize_items` runs it over a catalogue in one process. Memory beyond the three
output arrays grows with the batch.
"""

from __future__ import annotations

import numpy as np

__all__ = ["item_rows", "materialize_batch", "materialize_items"]


def item_rows(warm: np.ndarray, start: int = 0) -> np.ndarray:
    """The adapter's ``item_row`` input: the catalogue row of warm items (they get their
    per-item parts), -1 for the others (text only)."""
    rows = np.arange(start, start + len(warm), dtype=np.int64)
    return np.where(warm, rows, -1).astype(np.int64)


def materialize_batch(sess, semantic: np.ndarray, domain: np.ndarray,  # type: ignore[no-untyped-def]
                      item_row: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One batch of items -> (transferable, residual, full), each [B, width] float32."""
    names = {i.name for i in sess.get_inputs()}  # unused inputs are dropped at export
    feeds = {"semantic": np.ascontiguousarray(semantic, np.float32),
             "domain": np.ascontiguousarray(domain, np.int64), "item_row": item_row}
    t, r, f = sess.run(None, {k: v for k, v in feeds.items() if k in names})
    return t, r, f


def materialize_items(sess, semantic: np.ndarray, domain: np.ndarray,  # type: ignore[no-untyped-def]
                      warm: np.ndarray, batch: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every item through :func:`materialize_batch`, ``batch`` at a time (``semantic`` may
    be a memory map: only one batch of it is read into memory at a time)."""
    n = len(semantic)
    out: list[np.ndarray] = []
    for s in range(0, n, batch):
        parts = materialize_batch(sess, semantic[s:s + batch], domain[s:s + batch],
                                  item_rows(warm[s:s + batch], s))
        if not out:
            out = [np.zeros((n, x.shape[1]), np.float32) for x in parts]
        for acc, x in zip(out, parts):
            acc[s:s + len(x)] = x
    if not out:
        raise ValueError("materialize_items: no items")
    return out[0], out[1], out[2]
