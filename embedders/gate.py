"""The quality gate: a candidate version is scored on valid through the served path
(``composer.onnx`` over inputs from ``xemb.composer_io``, the published ``full`` vectors, dot
product) beside popularity, the text baselines and the version serving now, and becomes
CURRENT only when it beats popularity in every domain and is not worse than the serving
version by more than ``gate.tolerance`` (mean HR@10 over domains), unless the user accepts it.
The figures and the verdict go into the manifest (``metrics["quality"]``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from xemb.composer_io import ItemArrays, compose_batched
from xemb.embedders.evaluate import (
    baseline_metrics,
    eval_set,
    rank_metrics,
    served_metrics,
    valid_score,
)
from xemb.errors import XembError

if TYPE_CHECKING:
    from xemb.embedders.context import BuildContext

__all__ = ["assess", "describe", "verdict"]

Metrics = dict[str, dict[str, float]]


def verdict(candidate: Metrics, popularity: Metrics, serving: Metrics | None,
            tolerance: float) -> list[str]:
    """Reasons the candidate must not become current (empty: it may)."""
    reasons = [f"{d}: HR@10 {m['HR@10']:.3f} is below popularity's "
               f"{popularity[d]['HR@10']:.3f}"
               for d, m in candidate.items()
               if d in popularity and m["HR@10"] < popularity[d]["HR@10"]]
    if serving:
        c, s = valid_score(candidate), valid_score(serving)
        if c < s - tolerance:
            reasons.append(f"mean HR@10 {c:.3f} is below the serving version's {s:.3f} by "
                           f"more than the tolerance {tolerance:g}")
    return reasons


def _serving(ctx: BuildContext) -> dict[str, Any] | None:
    """The serving version on this build's valid split, or its own recorded figures when it
    was built from another catalogue."""
    store = ctx.store
    current = store.current_or_none()
    if current is None:
        return None
    e = ctx.cfg.eval
    try:
        m = store.manifest(current)
        figures = served_metrics(store.path(current), ctx.ds, "valid",
                                 int(m.params["composer_max_len"]), e.negatives, e.seed,
                                 e.recall_k)
        return {"version": current, "metrics": figures, "source": "this valid split"}
    except XembError as exc:
        recorded = (m.metrics.get("quality") or {}).get("candidate")
        return {"version": current, "metrics": recorded,
                "source": f"its own build's figures ({exc})"} if recorded else None


def _candidate(ctx: BuildContext, csess: Any, items: ItemArrays) -> dict[str, Metrics]:
    e = ctx.cfg.eval
    es = eval_set(ctx.ds, "valid", e.negatives, e.seed)
    users, _ = compose_batched(csess, items, es.histories, es.target_domain,
                               ctx.cfg.composer.max_len)
    full = items.full

    def score(u: np.ndarray) -> Metrics:
        return rank_metrics(lambda i, pool: full[pool] @ u[i], es, ctx.ds.item_domain,
                            ctx.ds.domains, recall_k=e.recall_k)

    out = {"candidate": score(users)}
    if ctx.cfg.adapter.prior:  # the same vectors with the prior's weight set to 0
        no_prior = users.copy()
        no_prior[:, -1] = 0.0
        out["candidate_without_prior"] = score(no_prior)
    return out


def assess(ctx: BuildContext, csess: Any, items: ItemArrays) -> dict[str, Any]:
    """The ``quality`` block of the manifest for a staged candidate."""
    g = ctx.cfg.gate
    block: dict[str, Any] = {"split": "valid"}
    if not g.enabled or not any(len(s) >= 2 for _, s in ctx.ds.sequences.get("valid", [])):
        why = "gate disabled (gate.enabled: false)" if not g.enabled else "no valid split"
        block["gate"] = {"passed": True, "reasons": [], "note": why,
                         "tolerance": g.tolerance}
        return block
    e = ctx.cfg.eval
    block.update(_candidate(ctx, csess, items))
    block["baselines"] = baseline_metrics(ctx.ds, ctx.semantic(), "valid", e.negatives,
                                          e.seed, e.recall_k)
    block["serving"] = _serving(ctx)
    serving = (block["serving"] or {}).get("metrics")
    reasons = verdict(block["candidate"], block["baselines"]["popularity"], serving,
                      g.tolerance)
    block["gate"] = {"passed": not reasons, "reasons": reasons, "tolerance": g.tolerance}
    return block


def describe(block: dict[str, Any]) -> list[str]:
    """Lines for the build's output: the candidate beside what it was compared with."""
    lines = []
    rows = [("candidate", block.get("candidate")),
            ("candidate, prior weight 0", block.get("candidate_without_prior")),
            *((f"baseline {k}", v) for k, v in (block.get("baselines") or {}).items()),
            (f"serving {(block.get('serving') or {}).get('version')}",
             (block.get("serving") or {}).get("metrics"))]
    for name, m in rows:
        if m:
            lines.append(f"  {name:<34} " + "  ".join(
                f"{d} HR@10 {v['HR@10']:.3f} NDCG@10 {v['NDCG@10']:.3f}" for d, v in m.items()))
    gate = block.get("gate", {})
    if gate.get("note"):
        lines.append(f"  gate: {gate['note']}")
    lines += [f"  gate: {r}" for r in gate.get("reasons", [])]
    return lines
