"""Training batches over behaviour sequences: padded, length-bucketed, seeded."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["SeqBatch", "sequence_batches"]


@dataclass
class SeqBatch:
    rows: torch.Tensor  # [B,L] item rows, left-aligned, 0 where padded
    mask: torch.Tensor  # [B,L] bool


def _trim(seqs: list[np.ndarray], max_len: int) -> list[np.ndarray]:
    return [s[-max_len:] for s in seqs if len(s) >= 2]


def sequence_batches(seqs: list[np.ndarray], max_len: int, batch_tokens: int,
                     rng: np.random.Generator) -> Iterator[SeqBatch]:
    """Sequences of similar length share a batch (little padding) of about ``batch_tokens``
    events, so every step costs about the same; batch order is shuffled."""
    seqs = _trim(seqs, max_len)
    order = np.argsort([len(s) + rng.random() for s in seqs], kind="stable")
    chunks, start = [], 0
    while start < len(order):
        width = len(seqs[order[min(start + 7, len(order) - 1)]])
        n = max(8, batch_tokens // max(width, 1))
        chunks.append(order[start:start + n])
        start += n
    for c in rng.permutation(len(chunks)):
        group = [seqs[i] for i in chunks[c]]
        width = max(len(s) for s in group)
        rows = np.zeros((len(group), width), np.int64)
        mask = np.zeros((len(group), width), bool)
        for i, s in enumerate(group):
            rows[i, : len(s)] = s
            mask[i, : len(s)] = True
        yield SeqBatch(torch.from_numpy(rows), torch.from_numpy(mask))
