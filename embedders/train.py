"""adapt + compose training loops (seeded, CPU-friendly, sampled softmax per target domain).

adapt: the adapter and an intent-free composer are trained together on next-item behaviour,
so item vectors are shaped as targets of a sequence-level query; plus cross-domain
alignment of the transferable part and a term keeping the residual apart from it.
compose: item vectors frozen, the composer (with atomic intents switched on) is fine-tuned
for next-item retrieval in the target domain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from embedders.batches import SeqBatch, sequence_batches
from embedders.models import Adapter, Composer
from xemb.settings.offline import AdapterConfig, ComposerConfig

__all__ = ["TrainInputs", "train_adapter", "train_composer", "seed_everything"]


@dataclass
class TrainInputs:
    semantic: torch.Tensor  # [N,S] frozen encoder vectors
    domain: torch.Tensor  # [N] int64
    warm: torch.Tensor  # [N] bool: item appears in training behaviour
    sequences: list[np.ndarray]  # item rows per training user, oldest first
    n_domains: int


def seed_everything(seed: int) -> np.random.Generator:
    """Same seed, data, thread count and machine -> bit-identical weights."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return np.random.default_rng(seed)


def _negatives(domain: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform item rows, split evenly across domains (eval negatives are uniform too)."""
    out = []
    for d in np.unique(domain):
        pool = np.flatnonzero(domain == d)
        out.append(rng.choice(pool, min(n // len(np.unique(domain)) + 1, len(pool)),
                              replace=False))
    return np.concatenate(out)


def _next_item_loss(out: torch.Tensor, batch: SeqBatch, local: torch.Tensor,
                    cand_vec: torch.Tensor, cand_domain: torch.Tensor, tau: float
                    ) -> torch.Tensor:
    """Softmax over candidates of the target's domain; ``local`` maps batch positions to
    candidate indices."""
    valid = batch.mask[:, 1:]
    pred = out[:, :-1][valid]  # [P,d]
    target = local[:, 1:][valid]  # [P]
    logits = pred @ cand_vec.t() / tau
    same = cand_domain.unsqueeze(0) == cand_domain[target].unsqueeze(1)
    return F.cross_entropy(logits.masked_fill(~same, -1e9), target)


def _align_loss(trans: torch.Tensor, batch: SeqBatch, local: torch.Tensor,
                cand_domain: torch.Tensor, tau: float, gen: torch.Generator) -> torch.Tensor:
    """One (domain A item, domain B item) pair per cross-domain sequence, InfoNCE both ways."""
    dom = cand_domain[local].masked_fill(~batch.mask, -1)
    first = dom[:, :1]
    other = (dom != first) & batch.mask
    rows = torch.nonzero(other.any(1))[:, 0]
    if len(rows) < 2:
        return trans.new_zeros(())
    a_pos = (batch.mask[rows] & (dom[rows] == first[rows])).float()
    b_pos = other[rows].float()
    a = local[rows, torch.multinomial(a_pos, 1, generator=gen)[:, 0]]
    b = local[rows, torch.multinomial(b_pos, 1, generator=gen)[:, 0]]
    za, zb = F.normalize(trans[a], dim=-1), F.normalize(trans[b], dim=-1)
    logits = za @ zb.t() / tau
    labels = torch.arange(len(rows))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def _orth_loss(trans: torch.Tensor, resid: torch.Tensor) -> torch.Tensor:
    """Squared cosine between each item's parts: the residual must not repeat the shared part."""
    return (F.cosine_similarity(trans, resid, dim=-1) ** 2).mean()


def _candidates(batch: SeqBatch, negatives: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique item rows of the batch plus negatives, and each batch position's index."""
    rows = torch.cat([batch.rows[batch.mask], torch.from_numpy(negatives)])
    uniq, inv = torch.unique(rows, return_inverse=True)
    local = torch.zeros_like(batch.rows)
    local[batch.mask] = inv[: int(batch.mask.sum())]
    return uniq, local


class _Optim:
    """AdamW for dense weights, SparseAdam for the per-item table (only touched rows move)."""

    def __init__(self, dense: list, sparse: list, lr: float, weight_decay: float) -> None:
        self.opts: list[torch.optim.Optimizer] = [
            torch.optim.AdamW(dense, lr=lr, weight_decay=weight_decay)]
        if sparse:
            self.opts.append(torch.optim.SparseAdam(sparse, lr=lr))

    def zero_grad(self) -> None:
        for o in self.opts:
            o.zero_grad(set_to_none=True)

    def step(self) -> None:
        for o in self.opts:
            o.step()


def _optimizer(modules: list[torch.nn.Module], lr: float, weight_decay: float) -> _Optim:
    sparse = [m.weight for mod in modules for m in mod.modules()
              if isinstance(m, torch.nn.Embedding) and m.sparse]
    dense = [p for mod in modules for p in mod.parameters() if all(p is not s for s in sparse)]
    return _Optim(dense, sparse, lr, weight_decay)


def train_adapter(data: TrainInputs, cfg: AdapterConfig, composer_cfg: ComposerConfig,
                  on_epoch: Callable[[int, Adapter, Composer], None] | None = None
                  ) -> tuple[Adapter, Composer, dict[str, float]]:
    rng = seed_everything(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    n_items = len(data.domain) if cfg.id_embedding else 0
    adapter = Adapter(data.semantic.shape[1], cfg.dim, cfg.hidden, data.n_domains, n_items,
                      cfg.dropout)
    composer = Composer(cfg.dim, data.n_domains, None, composer_cfg.heads, composer_cfg.dropout)
    opt = _optimizer([adapter, composer], cfg.lr, cfg.weight_decay)
    domain_np = data.domain.numpy()
    stats: dict[str, float] = {}
    adapter.train()
    composer.train()
    for epoch in range(cfg.epochs):
        batches = list(sequence_batches(data.sequences, composer_cfg.max_len,
                                        cfg.batch_tokens, rng))
        for batch in tqdm(batches, desc=f"adapt {epoch + 1}/{cfg.epochs}", unit="batch"):
            uniq, local = _candidates(batch, _negatives(domain_np, cfg.negatives, rng))
            trans, resid, full = adapter.items(data.semantic[uniq], data.domain[uniq], uniq,
                                               data.warm[uniq])
            dom = data.domain[uniq]
            out = composer.causal(full[local], dom[local], batch.mask,
                                  torch.roll(dom[local], -1, dims=1), None)
            losses = {
                "next_item": _next_item_loss(out, batch, local, full, dom, cfg.temperature),
                "align": _align_loss(trans, batch, local, dom, cfg.temperature, gen),
                "orth": _orth_loss(trans, resid),
            }
            loss = (losses["next_item"] + cfg.align_weight * losses["align"]
                    + cfg.orth_weight * losses["orth"])
            opt.zero_grad()
            loss.backward()
            opt.step()
        stats = {f"adapt_{k}": float(v.detach()) for k, v in losses.items()}
        if on_epoch is not None:
            on_epoch(epoch, adapter, composer)
    return adapter.eval(), composer.eval(), stats


def train_composer(composer: Composer, data: TrainInputs, full: torch.Tensor,
                   dense_intents: torch.Tensor, cfg: ComposerConfig) -> dict[str, float]:
    """Fine-tune ``composer`` (intents on) against frozen item vectors ``full``."""
    rng = seed_everything(cfg.seed)
    opt = torch.optim.AdamW(composer.parameters(), lr=cfg.lr)
    domain_np = data.domain.numpy()
    composer.train()
    loss = torch.zeros(())
    for epoch in range(cfg.epochs):
        for batch in tqdm(list(sequence_batches(data.sequences, cfg.max_len, cfg.batch_tokens,
                                                rng)),
                          desc=f"compose {epoch + 1}/{cfg.epochs}", unit="batch"):
            uniq, local = _candidates(batch, _negatives(domain_np, cfg.negatives, rng))
            dom = data.domain[uniq]
            rows = batch.rows
            out = composer.causal(full[rows], data.domain[rows], batch.mask,
                                  torch.roll(data.domain[rows], -1, dims=1), dense_intents[rows])
            loss = _next_item_loss(out, batch, local, full[uniq], dom, cfg.temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
    composer.eval()
    return {"compose_next_item": float(loss.detach())}
