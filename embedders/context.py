"""The state a build's stages share: config, dataset, stage cache and keys, resolved device,
and the model helpers both the training stages and publish use (so publish needs nothing
from the runner in embedders/pipeline.py)."""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from xemb.composer_io import ItemArrays
from xemb.embedders.data import Dataset
from xemb.embedders.intents import IntentLibrary
from xemb.embedders.models import Adapter, Composer
from xemb.embedders.stages import StageCache
from xemb.embedders.train import TrainInputs, fixed_prior_rows
from xemb.embedders.validation import Validator
from xemb.settings import XembConfig
from xemb.store import VersionStore

__all__ = ["BuildContext", "adapter_outputs", "item_vectors", "load_adapter", "load_intents",
           "log", "new_adapter", "new_composer", "no_intents"]


def log(msg: str) -> None:
    print(f"[xemb] {msg}", file=sys.stderr, flush=True)


@dataclass
class BuildContext:
    cfg: XembConfig
    ds: Dataset
    cache: StageCache
    keys: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    encoder_fp: str = ""
    device: str = "cpu"  # build.device, resolved (cpu or cuda)

    @property
    def store(self) -> VersionStore:
        return VersionStore(self.cfg.build.root)

    def out(self, stage: str) -> Path:
        return self.cache.path(stage, self.keys[stage])

    @functools.cached_property
    def warm(self) -> np.ndarray:
        """Items seen in training behaviour (they carry a per-item vector)."""
        warm = np.zeros(len(self.ds.item_ids), bool)
        for _, s in self.ds.sequences["train"]:
            warm[s] = True
        return warm

    def descriptions(self) -> pa.Table | None:
        """The describe stage's output (item_id + description columns); None when off."""
        if "describe" not in self.keys:
            return None
        return pq.read_table(self.out("describe") / "descriptions.parquet")

    @property
    def separate(self) -> bool:
        """Describe is on with ``describe.use: separate``: descriptions are encoded apart
        (:meth:`description_vectors`) and fused by the adapter."""
        return "describe" in self.keys and self.cfg.describe.use == "separate"

    def encoder_texts(self) -> list[str]:
        """What the encoder reads per item: the item text, with its descriptions joined
        (``describe.use: concat``) when describe is on; with ``separate``, the text alone
        (the descriptions are encoded apart)."""
        described = self.descriptions()
        if described is None or self.separate:
            return self.ds.texts
        from xemb.embedders.describe import with_descriptions

        return with_descriptions(self.ds.texts, described)

    def semantic(self) -> np.ndarray:
        """The encode stage's output: one frozen-encoder vector per item row (memory-mapped,
        copy-on-write: pages are read as a stage touches them, and shared with the page
        cache)."""
        return np.load(self.out("encode") / "semantic.npy", mmap_mode="c")

    def description_vectors(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``describe.use: separate``: the encode stage's description vectors [N, K, S]
        (memory-mapped like :meth:`semantic`) and mask [N, K] float32 (1 = the item has a
        non-empty description), K in ``describe.prompts`` order; None otherwise."""
        if not self.separate:
            return None
        from xemb.embedders.describe import DESCRIPTION_MASK, DESCRIPTION_VECTORS

        out = self.out("encode")
        return (np.load(out / DESCRIPTION_VECTORS, mmap_mode="c"),
                np.load(out / DESCRIPTION_MASK).astype(np.float32))

    @functools.cached_property
    def validator(self) -> Validator | None:
        """The valid split as the build selects on it (None when there is none)."""
        e = self.cfg.eval
        v = Validator.for_dataset(self.ds, self.cfg.composer.max_len, e.negatives, e.seed)
        if v is None:
            log("no valid rows: training runs every epoch and keeps the last")
        return v

    def _stats(self, stage: str) -> dict:
        state = torch.load(self.out(stage) / f"{stage}.pt", weights_only=True)
        return dict(state.get("stats") or {})

    def training_record(self) -> dict:
        """Per-epoch loss and valid figures of adapt and compose, the kept epochs, and the
        prior weights tried (for the manifest and the report)."""
        adapt, compose = self._stats("adapt"), self._stats("compose")
        return {"adapt": adapt.get("epochs", []), "compose": compose.get("epochs", []),
                "best_epoch": {"adapt": adapt.get("best_epoch"),
                               "compose": compose.get("best_epoch")},
                "prior_scale": compose.get("prior_scale")}

    def prior_scale(self) -> float | None:
        """The user vector's last coordinate (None without the prior)."""
        if not self.cfg.adapter.prior:
            return None
        chosen = (self._stats("compose").get("prior_scale") or {}).get("chosen")
        return 1.0 if chosen is None else float(chosen)

    def train_inputs(self, semantic: np.ndarray) -> TrainInputs:
        seqs = [s for _, s in self.ds.sequences["train"]]
        described = self.description_vectors()
        extra = () if described is None else tuple(torch.from_numpy(x) for x in described)
        return TrainInputs(torch.from_numpy(semantic), torch.from_numpy(self.ds.item_domain),
                           torch.from_numpy(self.warm), seqs, len(self.ds.domains), *extra)


# ---- models the stages and publish share -------------------------------------------------
def no_intents(full: np.ndarray, domain: np.ndarray) -> ItemArrays:
    zeros = np.zeros((len(full), 1))
    return ItemArrays(full, domain, zeros.astype(np.int64), zeros.astype(np.float32))


def new_adapter(ctx: BuildContext, semantic_dim: int) -> Adapter:
    a = ctx.cfg.adapter
    n_items = len(ctx.ds.item_ids) if a.id_embedding else 0
    described = ctx.description_vectors()
    return Adapter(semantic_dim, a.dim, a.hidden, len(ctx.ds.domains), n_items, a.dropout,
                   a.residual, a.prior, fixed_prior_rows(a, len(ctx.ds.item_ids)),
                   0 if described is None else described[1].shape[1])


def load_adapter(ctx: BuildContext, semantic_dim: int) -> tuple[Adapter, dict]:
    state = torch.load(ctx.out("adapt") / "adapt.pt", weights_only=True)
    adapter = new_adapter(ctx, semantic_dim)
    adapter.load_state_dict(state["adapter"])
    return adapter.eval(), state


def item_vectors(ctx: BuildContext, adapter: Adapter, semantic: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Published-width (transferable, residual, full) of every item, as torch computes them
    (``build.batch_items`` at a time on ``build.device``; the adapter is moved there)."""
    adapter.to(ctx.device)
    return adapter_outputs(adapter, semantic, ctx.ds.item_domain, ctx.warm,
                           ctx.cfg.build.batch_items, ctx.device, ctx.description_vectors())


def _rows(x: np.ndarray | None, s: int, e: int, device: str) -> torch.Tensor | None:
    return None if x is None else torch.from_numpy(np.array(x[s:e], np.float32)).to(device)


@torch.inference_mode()
def adapter_outputs(adapter: Adapter, semantic: np.ndarray, domain: np.ndarray,
                    warm: np.ndarray, batch: int, device: str = "cpu",
                    descriptions: tuple[np.ndarray, np.ndarray] | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(transferable, residual, full) [N, width] of every item through the adapter (on
    ``device``), ``batch`` items at a time into preallocated arrays; ``descriptions``:
    the (vectors, mask) a fusing adapter reads (``describe.use: separate``)."""
    n = len(semantic)
    out = [np.zeros((n, adapter.width), np.float32) for _ in range(3)]
    vectors, mask = descriptions if descriptions is not None else (None, None)
    for s in range(0, n, batch):
        e = min(s + batch, n)
        parts = adapter.items(_rows(semantic, s, e, device),  # type: ignore[arg-type]
                              torch.from_numpy(domain[s:e]).to(device),
                              torch.arange(s, e, device=device),
                              torch.from_numpy(warm[s:e]).to(device),
                              _rows(vectors, s, e, device), _rows(mask, s, e, device))
        for acc, x in zip(out, parts):
            acc[s:e] = x.cpu().numpy()
    return out[0], out[1], out[2]


def load_intents(ctx: BuildContext) -> IntentLibrary:
    return IntentLibrary.load(ctx.out("intents") / "intents.npz")


def new_composer(ctx: BuildContext, lib: IntentLibrary) -> Composer:
    c = ctx.cfg.composer
    return Composer(ctx.cfg.adapter.dim, len(ctx.ds.domains), torch.from_numpy(lib.vectors),
                    c.heads, c.dropout, ctx.cfg.adapter.prior, c.recency, c.intents)


