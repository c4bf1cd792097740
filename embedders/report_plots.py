"""The report's figures (matplotlib, Agg backend: no display needed). Each function draws one
PNG from plain data and returns its file name; nothing here reads a build."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
except ImportError as exc:  # pragma: no cover - the offline extra is missing
    from xemb.errors import ConfigError

    raise ConfigError("xemb report needs matplotlib: pip install 'xemb[offline]'") from exc

__all__ = ["metric_bars", "hr_curves", "ablation_bars", "training_curves", "intent_map",
           "latency_hists", "entropy_hist"]

DPI = 110
Metrics = Mapping[str, Mapping[str, Mapping[str, float]]]  # model -> domain -> metric -> value


def _save(fig: plt.Figure, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path.name


def _bars(ax: plt.Axes, groups: Sequence[str], series: Mapping[str, Sequence[float]],
          horizontal: bool = False) -> None:
    n = max(len(series), 1)
    width = 0.8 / n
    x = np.arange(len(groups))
    for i, (name, values) in enumerate(series.items()):
        pos = x - 0.4 + width * (i + 0.5)
        vals = np.nan_to_num(np.asarray(values, float))
        (ax.barh if horizontal else ax.bar)(pos, vals, width, label=name)
    (ax.set_yticks if horizontal else ax.set_xticks)(x, groups)
    ax.grid(axis="x" if horizontal else "y", alpha=0.3)


def metric_bars(rows: Metrics, domains: Sequence[str], path: Path, title: str,
                metrics: Sequence[str] = ("HR@10", "NDCG@10")) -> str:
    """Grouped bars: one panel per metric, a group per domain, a bar per model."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        series = {m: [rows[m].get(d, {}).get(metric, np.nan) for d in domains] for m in rows}
        _bars(ax, domains, series)
        ax.set_ylim(bottom=0)
        ax.set_title(f"{title}: {metric}")
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return _save(fig, path)


def hr_curves(curves: Mapping[str, Mapping[str, np.ndarray]], domains: Sequence[str],
              path: Path, title: str) -> str:
    """HR@K for K = 1..len(curve): one panel per domain, a line per model."""
    fig, axes = plt.subplots(1, len(domains), figsize=(5.5 * len(domains), 3.8), squeeze=False)
    for ax, d in zip(axes[0], domains):
        for model, per_domain in curves.items():
            if d in per_domain:
                y = per_domain[d]
                ax.plot(np.arange(1, len(y) + 1), y, label=model, lw=1.8)
        ax.set(title=f"{title}: {d}", xlabel="K", ylabel="HR@K", ylim=(0, None))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    return _save(fig, path)


def ablation_bars(variants: Sequence[str], values: Mapping[str, Sequence[float]], path: Path,
                  metric: str = "valid HR@10") -> str:
    """Horizontal bars per variant, one colour per domain."""
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(variants) + 1.4))
    _bars(ax, list(variants), values, horizontal=True)
    ax.invert_yaxis()
    ax.set(title=f"Ablations: {metric}", xlabel=metric)
    ax.legend(fontsize=8)
    return _save(fig, path)


def training_curves(phases: Mapping[str, Sequence[Mapping]], best: Mapping[str, int],
                    domains: Sequence[str], path: Path) -> str:
    """Per training phase: loss (top) and valid HR@10 per domain (bottom) by epoch."""
    fig, axes = plt.subplots(2, len(phases), figsize=(5.5 * len(phases), 6.2), squeeze=False)
    for col, (phase, epochs) in enumerate(phases.items()):
        x = [e.get("epoch", i + 1) for i, e in enumerate(epochs)]
        axes[0][col].plot(x, [e.get("loss", np.nan) for e in epochs], marker="o")
        axes[0][col].set(title=f"{phase}: training loss", xlabel="epoch", ylabel="loss")
        for d in domains:
            y = [e.get("valid", {}).get(d, {}).get("HR@10", np.nan) for e in epochs]
            axes[1][col].plot(x, y, marker="o", label=d)
        axes[1][col].set(title=f"{phase}: valid HR@10", xlabel="epoch", ylabel="HR@10")
        for row in (0, 1):
            axes[row][col].xaxis.set_major_locator(MaxNLocator(integer=True))
            if phase in best:
                axes[row][col].axvline(best[phase], color="grey", ls="--", lw=1)
            axes[row][col].grid(alpha=0.3)
        axes[1][col].legend(fontsize=8)
    return _save(fig, path)


def intent_map(xy: np.ndarray, share: np.ndarray, support: np.ndarray, labels: Sequence[str],
               domains: Sequence[str], path: Path) -> str:
    """Intents in 2-D; colour = share of domains[0] among members (two domains) or dominant
    domain (more), size = support; ``labels`` (empty = unlabelled) drawn beside points."""
    fig, ax = plt.subplots(figsize=(11, 8))
    size = 12 + 300 * np.sqrt(support / max(float(support.max()), 1.0))
    if len(domains) == 2:
        pts = ax.scatter(xy[:, 0], xy[:, 1], s=size, c=share, cmap="coolwarm_r", vmin=0,
                         vmax=1, alpha=0.75, edgecolors="k", linewidths=0.3)
        fig.colorbar(pts, ax=ax, label=f"share of {domains[0]} among its items "
                                       f"(1 = all {domains[0]}, 0 = all {domains[1]})")
    else:
        pts = ax.scatter(xy[:, 0], xy[:, 1], s=size, c=share, cmap="tab10", vmin=0, vmax=9,
                         alpha=0.75, edgecolors="k", linewidths=0.3)
    for (x, y), text in zip(xy, labels):
        if text:
            ax.annotate(text, (x, y), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set(title="Atomic intents (PCA of intent vectors; size = items whose top intent it is)",
           xlabel="PC 1", ylabel="PC 2")
    ax.grid(alpha=0.2)
    return _save(fig, path)


def latency_hists(cases: Sequence[tuple[str, np.ndarray]], path: Path) -> str:
    """One histogram of call latency per benchmark case, p50 and p99 marked."""
    cols = min(3, len(cases))
    rows = -(-len(cases) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), squeeze=False)
    for ax, (name, ms) in zip(axes.flat, cases):
        ax.hist(ms, bins=50, color="tab:blue", alpha=0.8)
        for q, ls in ((50, "-"), (99, "--")):
            v = float(np.percentile(ms, q))
            ax.axvline(v, color="k", ls=ls, lw=1, label=f"p{q} {v:.3f} ms")
        ax.set(title=name, xlabel="ms", ylabel="calls")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(cases):]:
        ax.axis("off")
    return _save(fig, path)


def entropy_hist(ratios: Mapping[str, np.ndarray], path: Path) -> str:
    """Per eval row: entropy of the composed intent weights / log(#voted intents)."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for name, r in ratios.items():
        ax.hist(r, bins=np.linspace(0, 1, 41).tolist(), alpha=0.6, label=name)
    ax.set(title="Composed intent weights: entropy / uniform entropy over voted intents",
           xlabel="ratio (1 = flat, 0 = one intent)", ylabel="users")
    ax.title.set_fontsize(10)
    ax.legend(fontsize=8)
    return _save(fig, path)
