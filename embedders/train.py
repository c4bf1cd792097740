"""adapt + compose training loops (seeded, CPU-friendly, sampled softmax per target domain).

adapt: the adapter and an intent-free composer are trained together on next-item behaviour,
so item vectors are shaped as targets of a sequence-level query; plus cross-domain
alignment of the transferable part and a term keeping the residual apart from it.
compose: item vectors frozen, the composer (with atomic intents switched on) is fine-tuned
for next-item retrieval in the target domain.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from xemb.embedders.batches import SeqBatch, sequence_batches
from xemb.embedders.evaluate import valid_score
from xemb.embedders.models import Adapter, Composer
from xemb.settings.offline import AdapterConfig, ComposerConfig

__all__ = ["Fit", "ItemIntents", "TrainInputs", "fixed_prior_rows", "seed_everything",
           "train_adapter", "train_composer"]


def log(msg: str) -> None:
    print(f"[xemb] {msg}", file=sys.stderr, flush=True)


@dataclass
class TrainInputs:
    semantic: torch.Tensor  # [N,S] frozen encoder vectors
    domain: torch.Tensor  # [N] int64
    warm: torch.Tensor  # [N] bool: item appears in training behaviour
    sequences: list[np.ndarray]  # item rows per training user, oldest first
    n_domains: int
    descriptions: torch.Tensor | None = None  # [N,K,S] (describe.use: separate), else None
    description_mask: torch.Tensor | None = None  # [N,K] float32, 1 = the item has it

    @property
    def n_descriptions(self) -> int:
        return 0 if self.descriptions is None else int(self.descriptions.shape[1])

    @functools.cached_property
    def counts(self) -> np.ndarray:
        """Training events per item row."""
        if not self.sequences:
            return np.zeros(len(self.domain), np.int64)
        return np.bincount(np.concatenate(self.sequences), minlength=len(self.domain))

    @property
    def freq(self) -> np.ndarray:
        """Share of training events per item row (what in-batch candidates are drawn by)."""
        return self.counts / max(self.counts.sum(), 1)

    def to(self, device: str) -> TrainInputs:
        """The tensors on ``device`` (the sequences stay NumPy; no-op on the same device)."""
        return TrainInputs(self.semantic.to(device), self.domain.to(device),
                           self.warm.to(device), self.sequences, self.n_domains,
                           *(None if x is None else x.to(device)
                             for x in (self.descriptions, self.description_mask)))


@dataclass
class ItemIntents:
    """Item->intent weights kept sparse (each item's top-m intent ids and weights, [N,m]);
    only a training batch's items become dense [B,L,K] rows, so memory grows with the batch,
    never with items x intents."""

    ids: torch.Tensor  # [N,m] int64
    weights: torch.Tensor  # [N,m] float32
    k: int

    @classmethod
    def from_arrays(cls, ids: np.ndarray, weights: np.ndarray, k: int) -> ItemIntents:
        return cls(torch.from_numpy(np.ascontiguousarray(ids, np.int64)),
                   torch.from_numpy(np.ascontiguousarray(weights, np.float32)), k)

    def to(self, device: str) -> ItemIntents:
        return ItemIntents(self.ids.to(device), self.weights.to(device), self.k)

    def rows(self, rows: torch.Tensor) -> torch.Tensor:
        """[*rows.shape, K] intent weights of the items at ``rows`` (0 off their top-m)."""
        out = torch.zeros(*rows.shape, self.k, dtype=self.weights.dtype, device=rows.device)
        return out.scatter_(-1, self.ids[rows], self.weights[rows])


# A function of the models being trained -> {domain: metrics} on the valid split.
Evaluate = Callable[[], dict[str, dict[str, float]]]


def seed_everything(seed: int) -> np.random.Generator:
    """Same seed, data, thread count and machine -> bit-identical weights."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return np.random.default_rng(seed)


class _Negatives:
    """Uniform item rows, split evenly across domains (eval negatives are uniform too), and
    the log of each item's chance to be a candidate of a step (for the logQ correction)."""

    def __init__(self, data: TrainInputs, n: int, logq: bool) -> None:
        self.domain = data.domain.numpy()
        self.pools = [np.flatnonzero(self.domain == d) for d in np.unique(self.domain)]
        self.per_domain = [min(n // len(self.pools) + 1, len(p)) for p in self.pools]
        self.freq = data.freq if logq else None
        unif = np.zeros(len(self.domain))
        for pool, k in zip(self.pools, self.per_domain):
            unif[pool] = k / len(pool)
        self.unif = unif

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        return np.concatenate([rng.choice(p, k, replace=False)
                               for p, k in zip(self.pools, self.per_domain)])

    def log_q(self, rows: torch.Tensor, batch_events: int) -> torch.Tensor | None:
        """log P(row is among a step's candidates): drawn in-batch (by popularity) or among
        the uniform negatives. None without the correction."""
        if self.freq is None:
            return None
        r = rows.cpu().numpy()
        in_batch = 1.0 - np.power(1.0 - self.freq[r], batch_events)
        q = 1.0 - (1.0 - in_batch) * (1.0 - self.unif[r])
        log_q = torch.from_numpy(np.log(np.clip(q, 1e-12, 1.0))).to(torch.float32)
        return log_q.to(rows.device)


def _next_item_loss(out: torch.Tensor, batch: SeqBatch, local: torch.Tensor,
                    cand_vec: torch.Tensor, cand_domain: torch.Tensor, tau: float,
                    cand_prior: torch.Tensor | None = None,
                    log_q: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over candidates of the target's domain; ``local`` maps batch positions to
    candidate indices. The served score is ``cos(user, item) + prior`` (the user vector's
    prior weight is 1 while training); ``log_q`` is subtracted from every logit."""
    valid = batch.mask[:, 1:]
    pred = out[:, :-1][valid]  # [P,d]
    target = local[:, 1:][valid]  # [P]
    scores = pred @ cand_vec.t()
    if cand_prior is not None:
        scores = scores + cand_prior.unsqueeze(0)
    logits = scores / tau
    if log_q is not None:
        logits = logits - log_q.unsqueeze(0)
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
    # drawn on CPU: the seeded generator lives there (no-op copies on a CPU build)
    pick_a = torch.multinomial(a_pos.cpu(), 1, generator=gen)[:, 0].to(local.device)
    pick_b = torch.multinomial(b_pos.cpu(), 1, generator=gen)[:, 0].to(local.device)
    a, b = local[rows, pick_a], local[rows, pick_b]
    za, zb = F.normalize(trans[a], dim=-1), F.normalize(trans[b], dim=-1)
    logits = za @ zb.t() / tau
    labels = torch.arange(len(rows), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def _orth_loss(trans: torch.Tensor, resid: torch.Tensor) -> torch.Tensor:
    """Squared cosine between each item's parts: the residual must not repeat the shared part
    (0 where the residual is 0, as with residual heads and per-item vectors off)."""
    return (F.cosine_similarity(trans, resid, dim=-1, eps=1e-6) ** 2).mean()


def _candidates(batch: SeqBatch, negatives: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique item rows of the batch plus negatives, and each batch position's index."""
    rows = torch.cat([batch.rows[batch.mask], torch.from_numpy(negatives).to(batch.rows.device)])
    uniq, inv = torch.unique(rows, return_inverse=True)
    local = torch.zeros_like(batch.rows)
    local[batch.mask] = inv[: int(batch.mask.sum())]
    return uniq, local


class _Optim:
    """AdamW for dense weights, SparseAdam for the per-item tables (only touched rows move)."""

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


@dataclass
class Fit:
    """Per-epoch record (loss, valid metrics and score) and the epoch that was kept."""

    history: list[dict] = dataclasses.field(default_factory=list)
    best_epoch: int = 0

    def as_dict(self) -> dict:
        return {"epochs": self.history, "best_epoch": self.best_epoch}


def _fit(epochs: int, patience: int, run_epoch: Callable[[int], float],
         evaluate: Evaluate | None, modules: list[torch.nn.Module]) -> Fit:
    """Run epochs; with ``evaluate``, keep the weights of the epoch with the best valid score
    and stop after ``patience`` epochs without a better one."""
    fit, best, best_state, stale = Fit(), -np.inf, None, 0
    for epoch in range(epochs):
        entry: dict = {"epoch": epoch + 1, "loss": round(run_epoch(epoch), 5)}
        fit.history.append(entry)
        if evaluate is None:
            fit.best_epoch = epoch + 1
            continue
        entry["valid"] = evaluate()
        entry["valid_score"] = round(valid_score(entry["valid"]), 5)
        log(f"epoch {epoch + 1}: loss {entry['loss']:.4f}, valid HR@10 " + ", ".join(
            f"{d} {m['HR@10']:.3f}" for d, m in entry["valid"].items()))
        if entry["valid_score"] > best:
            best, stale, fit.best_epoch = entry["valid_score"], 0, epoch + 1
            best_state = [copy.deepcopy(m.state_dict()) for m in modules]
        else:
            stale += 1
            if stale >= patience:
                break
    if best_state is not None:
        for m, state in zip(modules, best_state):
            m.load_state_dict(state)
        log(f"kept epoch {fit.best_epoch} (best valid score {best:.4f})")
    return fit


def _descriptions(data: TrainInputs, rows: torch.Tensor, dropout: float,
                  gen: torch.Generator) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The description vectors and mask of ``rows`` for a training step, with every
    description of a ``dropout`` share of the items masked out (drawn on CPU from the seeded
    generator): what a cold-start item, which has none, looks like to the adapter."""
    if data.descriptions is None or data.description_mask is None:
        return None, None
    mask = data.description_mask[rows]
    if dropout:
        keep = torch.rand(len(rows), generator=gen) >= dropout
        mask = mask * keep.to(mask.device, mask.dtype).unsqueeze(-1)
    return data.descriptions[rows], mask


def _adapt_step(adapter: Adapter, composer: Composer, data: TrainInputs, batch: SeqBatch,
                negs: _Negatives, rng: np.random.Generator, gen: torch.Generator,
                cfg: AdapterConfig, description_dropout: float = 0.0) -> torch.Tensor:
    uniq, local = _candidates(batch, negs.draw(rng))
    trans, resid, full, prior = adapter.parts(data.semantic[uniq], data.domain[uniq], uniq,
                                              data.warm[uniq],
                                              *_descriptions(data, uniq, description_dropout,
                                                             gen))
    dom = data.domain[uniq]
    out = composer.causal(full[local], dom[local], batch.mask,
                          torch.roll(dom[local], -1, dims=1), None)
    log_q = negs.log_q(uniq, int(batch.mask.sum()))
    if not cfg.prior_in_training:  # tuned: its weight is chosen after training
        prior = None
    loss = _next_item_loss(out, batch, local, full, dom, cfg.temperature, prior, log_q)
    if cfg.align_weight:
        loss = loss + cfg.align_weight * _align_loss(trans, batch, local, dom,
                                                     cfg.temperature, gen)
    if cfg.orth_weight:
        loss = loss + cfg.orth_weight * _orth_loss(trans, resid)
    return loss


def _init_prior(adapter: Adapter, data: TrainInputs, tau: float) -> None:
    """Set (fixed prior) or start (learned per-item bias) each seen item's prior at
    ``tau * log(1 + training count)`` (score units: a logit of ``log(1 + count)``), so the
    prior carries popularity from the first step; a learned one is then corrected by
    training. With little data (few steps) a prior learned from zero barely moves."""
    log_count = torch.from_numpy(tau * np.log1p(data.counts)).float()
    with torch.no_grad():
        if adapter.prior_counts is not None:
            adapter.prior_counts.copy_(log_count)
        elif adapter.item_bias is not None:
            adapter.item_bias.weight[:, 0] = log_count


def _on(batch: SeqBatch, device: str) -> SeqBatch:
    return SeqBatch(batch.rows.to(device), batch.mask.to(device))


def train_adapter(data: TrainInputs, cfg: AdapterConfig, composer_cfg: ComposerConfig,
                  evaluate: Callable[[Adapter, Composer], dict] | None = None,
                  device: str = "cpu", description_dropout: float = 0.0
                  ) -> tuple[Adapter, Composer, Fit]:
    """Adapter + intent-free composer on next-item behaviour, trained on ``device`` and
    returned on CPU; with ``evaluate`` (valid metrics of the two models, called with them on
    ``device``), the best epoch on valid is kept. With description vectors in ``data``
    (``describe.use: separate``) the adapter fuses them, each step masking out the
    descriptions of a ``description_dropout`` share of its items."""
    rng = seed_everything(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    n_items = len(data.domain) if cfg.id_embedding else 0
    adapter = Adapter(data.semantic.shape[1], cfg.dim, cfg.hidden, data.n_domains, n_items,
                      cfg.dropout, cfg.residual, cfg.prior, fixed_prior_rows(cfg, len(data.domain)),
                      data.n_descriptions)
    composer = Composer(cfg.dim, data.n_domains, None, composer_cfg.heads,
                        composer_cfg.dropout, cfg.prior, composer_cfg.recency)
    if cfg.prior and not cfg.prior_in_training:  # valid epochs judged as trained: no prior
        composer.prior_scale.fill_(0.0)
    _init_prior(adapter, data, cfg.temperature)
    negs = _Negatives(data, cfg.negatives, cfg.logq)
    adapter.to(device)
    composer.to(device)
    data = data.to(device)
    opt = _optimizer([adapter, composer], cfg.lr, cfg.weight_decay)

    def run_epoch(epoch: int) -> float:
        adapter.train()
        composer.train()
        batches = list(sequence_batches(data.sequences, composer_cfg.max_len,
                                        cfg.batch_tokens, rng))
        total = 0.0
        for batch in tqdm(batches, desc=f"adapt {epoch + 1}/{cfg.epochs}", unit="batch"):
            loss = _adapt_step(adapter, composer, data, _on(batch, device), negs, rng, gen,
                               cfg, description_dropout)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
        return total / max(len(batches), 1)

    fit = _fit(cfg.epochs, cfg.patience, run_epoch,
               (lambda: evaluate(adapter, composer)) if evaluate else None, [adapter, composer])
    return adapter.cpu().eval(), composer.cpu().eval(), fit


def fixed_prior_rows(cfg: AdapterConfig, n_rows: int) -> int:
    """Rows of the adapter's fixed prior table (0: none, or a learned prior)."""
    return n_rows if cfg.prior and cfg.prior_fit != "learned" else 0


def train_composer(composer: Composer, data: TrainInputs, full: torch.Tensor,
                   intents: ItemIntents, cfg: ComposerConfig, logq: bool = True,
                   evaluate: Evaluate | None = None, device: str = "cpu",
                   prior_in_loss: bool = True) -> Fit:
    """Fine-tune ``composer`` (intents on) on ``device`` against frozen published item
    vectors ``full`` (content coordinates, then the prior when the composer has one and
    ``prior_in_loss``); the item->intent weights stay sparse. ``composer`` ends on CPU."""
    rng = seed_everything(cfg.seed)
    negs = _Negatives(data, cfg.negatives, logq)
    composer.to(device)
    data, full, intents = data.to(device), full.to(device), intents.to(device)
    opt = torch.optim.AdamW(composer.parameters(), lr=cfg.lr)
    content = full[:, : composer.dim]
    prior = full[:, composer.dim] if composer.prior and prior_in_loss else None

    def run_epoch(epoch: int) -> float:
        composer.train()
        batches = list(sequence_batches(data.sequences, cfg.max_len, cfg.batch_tokens, rng))
        total = 0.0
        for batch in tqdm(batches, desc=f"compose {epoch + 1}/{cfg.epochs}", unit="batch"):
            batch = _on(batch, device)
            uniq, local = _candidates(batch, negs.draw(rng))
            rows = batch.rows
            out = composer.causal(content[rows], data.domain[rows], batch.mask,
                                  torch.roll(data.domain[rows], -1, dims=1), intents.rows(rows))
            loss = _next_item_loss(out, batch, local, content[uniq], data.domain[uniq],
                                   cfg.temperature, None if prior is None else prior[uniq],
                                   negs.log_q(uniq, int(batch.mask.sum())))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
        return total / max(len(batches), 1)

    fit = _fit(cfg.epochs, cfg.patience, run_epoch, evaluate, [composer])
    composer.cpu().eval()
    return fit
