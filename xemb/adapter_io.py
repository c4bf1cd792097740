"""Adapter inputs: the one place that turns item arrays into the feeds ``adapter.onnx``
takes, shared by materialization at publish (every catalogue item) and the gRPC service's
cold-start path (``EncodeItems``, ``xemb add-items``), so a new item goes through the very
graph and feeds the published vectors came from. NumPy only: no torch here.

A graph keeps only the inputs it uses (no ``item_row`` without per-item vectors, no
``domain`` without residual heads); one built with ``describe.use: separate`` also takes
``descriptions`` [B, K, S] and ``description_mask`` [B, K] (see :mod:`xemb.layout`). Items
given no descriptions get mask 0: the fused adapter's title-only path.
"""

from __future__ import annotations

import numpy as np

from xemb.layout import ADAPTER_DESCRIPTION_INPUTS

__all__ = ["adapter_feeds", "description_slots"]


def description_slots(inputs: dict[str, list]) -> int:
    """How many description vectors per item the graph takes (0: it fuses none), from its
    inputs' shapes (``name -> shape``; ``description_mask`` is [batch, K])."""
    shape = inputs.get(ADAPTER_DESCRIPTION_INPUTS[1])
    return int(shape[1]) if shape is not None else 0


def adapter_feeds(inputs: dict[str, list], semantic: np.ndarray, domain: np.ndarray,
                  item_row: np.ndarray, descriptions: np.ndarray | None = None,
                  description_mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The feeds of the graph whose inputs are ``inputs`` (``name -> shape``, as
    ``{i.name: i.shape for i in session.get_inputs()}``) for one batch of items.
    ``descriptions`` may come flattened ([B, K * S]); without them a fusing graph gets
    zeros and mask 0 (no descriptions: the title-only path)."""
    semantic = np.ascontiguousarray(semantic, np.float32)
    feeds = {"semantic": semantic, "domain": np.ascontiguousarray(domain, np.int64),
             "item_row": np.ascontiguousarray(item_row, np.int64)}
    k = description_slots(inputs)
    if k:
        b, s = semantic.shape
        if descriptions is None or description_mask is None:
            descriptions, description_mask = np.zeros((b, k, s)), np.zeros((b, k))
        feeds[ADAPTER_DESCRIPTION_INPUTS[0]] = np.ascontiguousarray(
            np.reshape(descriptions, (b, k, s)), np.float32)
        feeds[ADAPTER_DESCRIPTION_INPUTS[1]] = np.ascontiguousarray(description_mask,
                                                                    np.float32)
    return {name: v for name, v in feeds.items() if name in inputs}
