"""Materialization: every item's published vectors (transferable, residual, full) through the
adapter's ONNX graph, batch by batch into preallocated arrays.

:func:`materialize_batch` is the per-batch function (a Ray Data ``map_batches`` actor holds
one session of ``adapter.onnx``, from :func:`xemb.embedders.device.ort_session`, and calls it);
:func:`materialize_items` runs it over a catalogue in one process. Memory beyond the three
output arrays grows with the batch.
"""

from __future__ import annotations

import numpy as np

from xemb.adapter_io import adapter_feeds

__all__ = ["item_rows", "materialize_batch", "materialize_items"]


def item_rows(warm: np.ndarray, start: int = 0) -> np.ndarray:
    """The adapter's ``item_row`` input: the catalogue row of warm items (they get their
    per-item parts), -1 for the others (text only)."""
    rows = np.arange(start, start + len(warm), dtype=np.int64)
    return np.where(warm, rows, -1).astype(np.int64)


def materialize_batch(sess, semantic: np.ndarray, domain: np.ndarray,  # type: ignore[no-untyped-def]
                      item_row: np.ndarray, descriptions: np.ndarray | None = None,
                      description_mask: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One batch of items -> (transferable, residual, full), each [B, width] float32;
    ``descriptions`` ([B, K, S], or flattened [B, K * S]) and their mask feed a graph built
    with ``describe.use: separate``."""
    inputs = {i.name: i.shape for i in sess.get_inputs()}  # unused inputs are dropped at export
    t, r, f = sess.run(None, adapter_feeds(inputs, semantic, domain, item_row, descriptions,
                                           description_mask))
    return t, r, f


def materialize_items(sess, semantic: np.ndarray, domain: np.ndarray,  # type: ignore[no-untyped-def]
                      warm: np.ndarray, batch: int,
                      descriptions: tuple[np.ndarray, np.ndarray] | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every item through :func:`materialize_batch`, ``batch`` at a time (``semantic`` and
    the description vectors may be memory maps: one batch of them is read at a time);
    ``descriptions``: (vectors [N, K, S], mask [N, K]) with ``describe.use: separate``."""
    n = len(semantic)
    out: list[np.ndarray] = []
    vectors, mask = descriptions if descriptions is not None else (None, None)
    for s in range(0, n, batch):
        sl = slice(s, s + batch)
        parts = materialize_batch(sess, semantic[sl], domain[sl], item_rows(warm[sl], s),
                                  None if vectors is None else vectors[sl],
                                  None if mask is None else mask[sl])
        if not out:
            out = [np.zeros((n, x.shape[1]), np.float32) for x in parts]
        for acc, x in zip(out, parts):
            acc[s:s + len(x)] = x
    if not out:
        raise ValueError("materialize_items: no items")
    return out[0], out[1], out[2]
