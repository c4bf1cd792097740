"""Valid-split scores while training: every choice the build makes (epochs, the prior's
weight) is made here, never on test.

The user vector is the composer's ``forward`` (the function exported to ``composer.onnx``;
ONNX parity with torch is checked at export) over inputs built by ``xemb.composer_io``, the
code the gRPC service uses; item vectors are those the build publishes; the score is their
dot product, ranked by the papers' protocol (ties count against the target).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from xemb.composer_io import ItemArrays, composer_feeds
from xemb.embedders.data import Dataset
from xemb.embedders.evaluate import EvalSet, eval_set, rank_metrics

__all__ = ["Validator"]

BATCH = 512


@dataclass
class Validator:
    es: EvalSet
    domains: list[str]
    item_domain: np.ndarray
    max_len: int
    recall_k: int = 50

    @classmethod
    def for_dataset(cls, ds: Dataset, max_len: int, n_neg: int = 999, seed: int = 42
                    ) -> Validator | None:
        """None when the data holds no usable valid rows."""
        if not any(len(s) >= 2 for _, s in ds.sequences.get("valid", [])):
            return None
        return cls(eval_set(ds, "valid", n_neg, seed), ds.domains, ds.item_domain, max_len)

    @torch.inference_mode()
    def users(self, composer: torch.nn.Module, items: ItemArrays) -> np.ndarray:
        """User vectors of every valid history through ``composer.forward``."""
        was_training = composer.training
        composer.eval()
        out = []
        hist: Sequence[np.ndarray] = self.es.histories
        device = next(composer.parameters()).device  # where the build trains it
        for s in range(0, len(hist), BATCH):
            feeds = composer_feeds(items, hist[s:s + BATCH], self.es.target_domain[s:s + BATCH],
                                   self.max_len)
            user, _ = composer(**{k: torch.from_numpy(v).to(device) for k, v in feeds.items()})
            out.append(user.cpu().numpy())
        composer.train(was_training)
        return np.concatenate(out)

    def metrics(self, full: np.ndarray, users: np.ndarray) -> dict[str, dict[str, float]]:
        return rank_metrics(lambda i, pool: full[pool] @ users[i], self.es, self.item_domain,
                            self.domains, recall_k=self.recall_k)

    def evaluate(self, composer: torch.nn.Module, items: ItemArrays
                 ) -> dict[str, dict[str, float]]:
        return self.metrics(items.full, self.users(composer, items))
