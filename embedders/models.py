"""The two small trained models: the item adapter and the intent composer.

Both take plain tensors (no Python-side branching on values) so they export to ONNX with
dynamic batch and sequence axes.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["Adapter", "AdapterExport", "Composer", "DescriptionFusion", "N_DISTANCE_BUCKETS",
           "distance_buckets"]

N_DISTANCE_BUCKETS = 16


def _mlp(inp: int, hidden: int, out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(hidden, out))


class DescriptionFusion(nn.Module):
    """``describe.use: separate`` (SemaCDR's way): the title vector and ``n`` description
    vectors, each from the same frozen encoder, fused into one semantic vector::

        fused = title + sum_k mask_k * gate_k * W_k(description_k)
        gate_k = sigmoid(a_k . [title, description_k] + b_k)

    ``mask`` [B, n] is 1 where the item has that description. A missing one (masked out)
    adds exactly nothing, so an item without descriptions, such as a cold-start item in
    ``EncodeItems`` (the generator runs offline only), gets its title vector unchanged: the
    title-only path, which training keeps in distribution by masking out the descriptions
    of a share of items per step (``describe.dropout``). The maps start at 0, so training
    starts from the title-only adapter and learns what the descriptions add.
    """

    def __init__(self, semantic_dim: int, n: int) -> None:
        super().__init__()
        maps = [nn.Linear(semantic_dim, semantic_dim) for _ in range(n)]
        for m in maps:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        self.maps = nn.ModuleList(maps)
        self.gates = nn.ModuleList(nn.Linear(2 * semantic_dim, 1) for _ in range(n))

    def forward(self, title: torch.Tensor, descriptions: torch.Tensor, mask: torch.Tensor
                ) -> torch.Tensor:
        """title [B, S], descriptions [B, n, S], mask [B, n] -> [B, S]."""
        out = title
        for k, (proj, gate) in enumerate(zip(self.maps, self.gates)):
            d = descriptions[:, k]
            g = torch.sigmoid(gate(torch.cat([title, d], dim=-1)))  # [B, 1]
            out = out + (mask[:, k:k + 1].to(title.dtype) * g) * proj(d)
        return out


class Adapter(nn.Module):
    """semantic vector -> transferable part (one MLP shared by all domains) + domain residual
    (one head per domain). ``full = transferable + residual`` is what retrieval scores.

    ``item_emb`` adds a learned per-item vector to the residual of items seen in behaviour;
    the ONNX export is the text-only path that cold items get. With ``prior``, an item prior
    (learned: a text-based part plus a per-item part for items seen in behaviour; or fixed
    per catalogue row when ``prior_rows`` is given, 0 for new items) is appended as one
    more coordinate of ``residual`` and ``full`` (``transferable`` gets 0 there), so a user
    vector ``[u, s]`` scores ``cos(u, item) + s * prior`` with one inner product.

    ``n_descriptions`` > 0 (``describe.use: separate``): every part reads the title vector
    fused with that many description vectors (:class:`DescriptionFusion`) instead of the
    semantic vector alone; the transferable/residual split downstream is the same.
    """

    def __init__(self, semantic_dim: int, dim: int, hidden: int, n_domains: int,
                 n_items: int = 0, dropout: float = 0.1, residual: bool = True,
                 prior: bool = False, prior_rows: int = 0, n_descriptions: int = 0) -> None:
        super().__init__()
        self.dim = dim
        self.shared = (_mlp(semantic_dim, hidden, dim, dropout) if hidden
                       else nn.Linear(semantic_dim, dim))
        self.heads = nn.ModuleList(nn.Linear(semantic_dim, dim)
                                   for _ in range(n_domains if residual else 0))
        self.item_emb = nn.Embedding(n_items, dim, sparse=True) if n_items else None
        if self.item_emb is not None:
            nn.init.normal_(self.item_emb.weight, std=0.01)
        self.prior = prior
        learned = prior and not prior_rows
        self.prior_head = nn.Linear(semantic_dim, 1) if learned else None
        self.item_bias = nn.Embedding(n_items, 1, sparse=True) if learned and n_items else None
        for m in (self.prior_head, self.item_bias):
            if m is not None:
                nn.init.zeros_(m.weight)
        # a fixed prior per catalogue row (``prior_rows`` > 0: set from training counts,
        # never trained; items outside the catalogue get 0)
        self.prior_counts: torch.Tensor | None
        self.register_buffer("prior_counts",
                             torch.zeros(prior_rows) if prior and prior_rows else None)
        # made last: the rest starts exactly as the title-only adapter of the same seed
        self.fusion = (DescriptionFusion(semantic_dim, n_descriptions) if n_descriptions
                       else None)

    @property
    def width(self) -> int:
        return self.dim + (1 if self.prior else 0)

    @property
    def n_descriptions(self) -> int:
        return 0 if self.fusion is None else len(self.fusion.maps)

    def fuse(self, semantic: torch.Tensor, descriptions: torch.Tensor | None,
             mask: torch.Tensor | None) -> torch.Tensor:
        """The semantic vector the parts read: the title fused with its descriptions (with
        fusion on). No descriptions given is the title-only path, the same as all masked."""
        if self.fusion is None or descriptions is None or mask is None:
            return semantic
        return self.fusion(semantic, descriptions, mask)

    def parts(self, semantic: torch.Tensor, domain: torch.Tensor, rows: torch.Tensor,
              warm: torch.Tensor, descriptions: torch.Tensor | None = None,
              description_mask: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Content parts ``(t, r, full)`` [B, dim] (``full`` unit length) and the prior [B]
        (None without ``prior``). ``warm`` selects the items that get their per-item parts;
        ``descriptions`` [B, n, S] and ``description_mask`` [B, n] feed the fusion."""
        semantic = self.fuse(semantic, descriptions, description_mask)
        t = self.shared(semantic)
        r = torch.zeros_like(t)
        if len(self.heads):
            heads = torch.stack([h(semantic) for h in self.heads], dim=1)  # [B, D, d]
            onehot = F.one_hot(domain, len(self.heads)).to(heads.dtype).unsqueeze(-1)
            r = (heads * onehot).sum(1)
        w = warm.unsqueeze(-1).to(t.dtype)
        if self.item_emb is not None:
            r = r + self.item_emb(rows) * w
        t, r, full = _unit_sum(t, r)
        if not self.prior:
            return t, r, full, None
        if self.prior_counts is not None:
            return t, r, full, self.prior_counts[rows] * w[:, 0]
        assert self.prior_head is not None
        p = self.prior_head(semantic)
        if self.item_bias is not None:
            p = p + self.item_bias(rows) * w
        return t, r, full, p[:, 0]

    def items(self, semantic: torch.Tensor, domain: torch.Tensor, rows: torch.Tensor,
              warm: torch.Tensor, descriptions: torch.Tensor | None = None,
              description_mask: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Published vectors of catalogue items (``width`` wide): the text path plus the
        per-item parts where ``warm``."""
        t, r, full, p = self.parts(semantic, domain, rows, warm, descriptions,
                                   description_mask)
        if p is None:
            return t, r, full
        p = p.unsqueeze(-1)
        return (torch.cat([t, torch.zeros_like(p)], -1), torch.cat([r, p], -1),
                torch.cat([full, p], -1))


def _unit_sum(t: torch.Tensor, r: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scale both parts so that ``full = t + r`` has unit length: scores are cosines, and the
    parts still add up to the published full vector."""
    scale = 1.0 / (t + r).norm(dim=-1, keepdim=True).clamp(min=1e-6)
    return t * scale, r * scale, (t + r) * scale


def distance_buckets(dist: torch.Tensor) -> torch.Tensor:
    """0..7 exact, then log-spaced up to N_DISTANCE_BUCKETS-1 (distance in events)."""
    d = dist.clamp(min=0).to(torch.float32)
    log_b = 8 + torch.floor(torch.log2(d.clamp(min=8) / 8) * 2).to(torch.int64)
    b = torch.where(d < 8, d.to(torch.int64), log_b)
    return b.clamp(max=N_DISTANCE_BUCKETS - 1)


class Composer(nn.Module):
    """Behaviour sequence -> user-intent vector for a target domain.

    Two pathways, both conditioned on the target domain and the most recent item:
    * item attention over the history (relative-recency bias, per-item domain embedding);
    * atomic intents: each history item votes for its top-m intents with its weights and a
      learned recency decay; the query attends over the intents that received votes
      (log-vote prior), so an intent that one noisy item touched cannot dominate.
    Output = item context + gated intent context, in the item ``full`` space.

    ``dim`` is the content width; with ``prior`` the history vectors carry the item prior
    in one more (last) coordinate, which the composer ignores, and the user vector gets
    ``prior_scale`` there (chosen on valid after training). ``intent_context`` False keeps
    the intent weights (reported to people) but adds nothing to the user vector;
    ``recency`` False makes attention and intent votes blind to item order.
    """

    def __init__(self, dim: int, n_domains: int, intents: torch.Tensor | None,
                 heads: int = 2, dropout: float = 0.1, prior: bool = False,
                 recency: bool = True, intent_context: bool = True) -> None:
        super().__init__()
        self.dim, self.n_heads = dim, heads
        self.prior, self.recency, self.intent_context = prior, recency, intent_context
        self.prior_scale: torch.Tensor
        self.register_buffer("prior_scale", torch.ones(()))
        self.domain_emb = nn.Embedding(n_domains, dim)
        self.target_emb = nn.Embedding(n_domains, dim)
        self.q = nn.Linear(2 * dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.dist_bias = nn.Parameter(torch.zeros(heads, N_DISTANCE_BUCKETS))
        self.ln = nn.LayerNorm(dim)
        self.ffn = _mlp(3 * dim, 4 * dim, dim, dropout)
        self.drop = nn.Dropout(dropout)
        k = 0 if intents is None else intents.shape[0]
        self.register_buffer("intents", intents[:, :dim].contiguous() if intents is not None
                             else torch.zeros(0, dim))
        self.intent_decay = nn.Parameter(torch.zeros(N_DISTANCE_BUCKETS))
        self.intent_q = nn.Linear(2 * dim, dim)
        self.intent_out = nn.Linear(dim, dim)
        nn.init.zeros_(self.intent_out.weight)  # starts as the intent-free model
        nn.init.zeros_(self.intent_out.bias)
        self.use_intents = k > 0

    def set_intents(self, intents: torch.Tensor) -> None:
        self.intents: torch.Tensor = intents[:, : self.dim].to(torch.float32).contiguous()
        self.use_intents = True

    def _buckets(self, dist: torch.Tensor) -> torch.Tensor:
        b = distance_buckets(dist)
        return b if self.recency else torch.zeros_like(b)

    def with_prior(self, user: torch.Tensor, scale: torch.Tensor | float | None = None
                   ) -> torch.Tensor:
        """Append the prior weight to content user vectors (no-op without ``prior``)."""
        if not self.prior:
            return user
        s = self.prior_scale if scale is None else scale
        return torch.cat([user, torch.ones_like(user[..., :1]) * s], dim=-1)

    # -- shared pieces -----------------------------------------------------------------
    def _query(self, last: torch.Tensor, target_domain: torch.Tensor) -> torch.Tensor:
        return torch.cat([last, self.target_emb(target_domain)], dim=-1)

    def _item_context(self, q_in: torch.Tensor, keys_in: torch.Tensor, dist: torch.Tensor,
                      mask: torch.Tensor) -> torch.Tensor:
        """q_in [B,Q,2d]; keys_in [B,L,d]; dist [Q,L] event distance; mask [B,Q,L] bool."""
        b, nq, _ = q_in.shape
        h, dh = self.n_heads, self.dim // self.n_heads
        q = self.q(q_in).view(b, nq, h, dh).transpose(1, 2)  # [B,H,Q,dh]
        k, v = self.kv(keys_in).chunk(2, dim=-1)
        k = k.view(b, -1, h, dh).transpose(1, 2)
        v = v.view(b, -1, h, dh).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / dh ** 0.5
        scores = scores + self.dist_bias[:, self._buckets(dist)].unsqueeze(0)
        scores = scores.masked_fill(~mask.unsqueeze(1), -1e9)
        ctx = torch.softmax(scores, dim=-1) @ v  # [B,H,Q,dh]
        return ctx.transpose(1, 2).reshape(b, nq, self.dim)

    def _intent_context(self, q_in: torch.Tensor, votes: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """votes [B,Q,K] >= 0 -> (context [B,Q,d], weights [B,Q,K])."""
        q = self.intent_q(q_in)
        scores = q @ self.intents.t() / self.dim ** 0.5 + torch.log(votes + 1e-6)
        scores = scores.masked_fill(votes <= 0, -1e9)
        w = torch.softmax(scores, dim=-1)
        return self.intent_out(w @ self.intents), w

    def _combine(self, q_in: torch.Tensor, ctx: torch.Tensor, last: torch.Tensor,
                 intent_ctx: torch.Tensor) -> torch.Tensor:
        h = self.ffn(self.drop(torch.cat([q_in, ctx], dim=-1)))
        out = self.ln(h + ctx) + last
        if self.intent_context:
            out = out + intent_ctx
        return F.normalize(out, dim=-1)

    # -- serving / export: one query per sequence ----------------------------------------
    def forward(self, hist_vec: torch.Tensor, hist_domain: torch.Tensor, hist_mask: torch.Tensor,
                hist_intents: torch.Tensor, hist_intent_w: torch.Tensor,
                target_domain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-aligned histories (most recent last). Returns (user_vec, intent_weights)."""
        hist_vec = hist_vec[..., : self.dim]  # the prior coordinate is not content
        b, length, _ = hist_vec.shape
        mask = hist_mask > 0.5
        keys = hist_vec + self.domain_emb(hist_domain)
        q_in = self._query(hist_vec[:, -1], target_domain).unsqueeze(1)  # [B,1,2d]
        pos = torch.arange(length, device=hist_vec.device)
        dist = (length - 1 - pos).view(1, length)
        ctx = self._item_context(q_in, keys, dist, mask.unsqueeze(1))
        if self.use_intents:
            votes = self._votes(hist_intents, hist_intent_w, hist_mask, dist)  # [B,K]
            ictx, w = self._intent_context(q_in, votes.unsqueeze(1))
        else:
            ictx, w = torch.zeros_like(ctx), hist_vec.new_zeros(b, 1, 0)
        user = self._combine(q_in, ctx, hist_vec[:, -1].unsqueeze(1), ictx)
        return self.with_prior(user[:, 0]), w[:, 0]

    def _votes(self, ids: torch.Tensor, w: torch.Tensor, mask: torch.Tensor,
               dist: torch.Tensor) -> torch.Tensor:
        """[B,L,m] intent ids/weights -> recency-decayed vote per intent [B,K]."""
        k = max(int(self.intents.shape[0]), 1)
        decay = torch.sigmoid(self.intent_decay)[self._buckets(dist)] * mask  # [B,L]
        onehot = F.one_hot(ids.clamp(min=0), k).to(w.dtype)  # [B,L,m,K]
        return ((onehot * w.unsqueeze(-1)).sum(2) * decay.unsqueeze(-1)).sum(1)

    # -- training: one query per position (causal) -------------------------------------
    def causal(self, seq_vec: torch.Tensor, seq_domain: torch.Tensor, seq_mask: torch.Tensor,
               target_domain: torch.Tensor, dense_intents: torch.Tensor | None
               ) -> torch.Tensor:
        """Left-aligned sequences [B,L,...]; output t predicts item t+1 from items <= t.
        ``dense_intents`` [B,L,K] holds each item's intent weights (or None). Returns content
        user vectors [B,L,dim] (see ``with_prior``)."""
        seq_vec = seq_vec[..., : self.dim]
        b, length, _ = seq_vec.shape
        keys = seq_vec + self.domain_emb(seq_domain)
        q_in = self._query(seq_vec, target_domain)  # [B,L,2d]
        pos = torch.arange(length, device=seq_vec.device)
        dist = pos.view(-1, 1) - pos.view(1, -1)  # [L,L]: t - j
        mask = (dist >= 0).unsqueeze(0) & seq_mask.unsqueeze(1)
        ctx = self._item_context(q_in, keys, dist, mask)
        if self.use_intents and dense_intents is not None:
            decay = torch.sigmoid(self.intent_decay)[self._buckets(dist)] * mask  # [B,L,L]
            votes = decay @ dense_intents  # [B,L,K]
            ictx, _ = self._intent_context(q_in, votes)
        else:
            ictx = torch.zeros_like(ctx)
        return self._combine(q_in, ctx, seq_vec, ictx)


class AdapterExport(nn.Module):
    """The ONNX face of the adapter: ``item_row`` is the item's row in items.parquet for
    catalogue items (adds the collaborative part) and -1 for new items (text only). With
    fusion on, ``descriptions`` [B, n, S] and ``description_mask`` [B, n] (float, 1 =
    present) are inputs too; a new item feeds mask 0 (no descriptions online)."""

    def __init__(self, adapter: Adapter) -> None:
        super().__init__()
        self.adapter = adapter

    def forward(self, semantic: torch.Tensor, domain: torch.Tensor, item_row: torch.Tensor,
                descriptions: torch.Tensor | None = None,
                description_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.adapter.items(semantic, domain, item_row.clamp(min=0), item_row >= 0,
                                  descriptions, description_mask)
