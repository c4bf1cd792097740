"""`xemb report`: one self-contained HTML page (``index.html`` + PNGs beside it) about one
published version: valid and test metrics beside baselines and yardsticks, HR@K curves, the
ablation table, training curves, the atomic intents, the quality gate and serving latency.

:func:`collect` gathers everything (scoring valid and test through the served path, exactly as
``xemb eval``); :func:`xemb.embedders.report_html.render` draws it. Every input may be missing (an
older manifest, no ablation run, no benchmark file): its section then says why.

Input files (all optional):

- ablations (default ``<root>/reports/ablations.json``): ``{"rows": [{"variant", "description",
  "valid": {domain: {"HR@10", "NDCG@10", "Recall@50", "n"}}, "test": {...}}], "selected": str}``
- yardsticks (``--yardsticks``, default ``<data.path>/yardsticks.json``): published figures of
  other models on this very dataset and protocol: ``{"dataset", "source", "split",
  "targets": {domain: n}, "rows": [{"name", "metrics": {domain: {"HR@10", "NDCG@10"}}}]}``;
  shown only when the split's target counts per domain match ``targets``.
- benchmark (``--bench``, written by ``benchmarks/bench_serving.py --json-out``):
  ``{"cases": [{"name": str, "latencies_ms": [float, ...]}]}``
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from xemb import layout
from xemb.embedders.evaluate import Ranks, baseline_ranks, served_items, served_ranks
from xemb.embedders.intents import IntentLibrary, intent_report
from xemb.intent_stats import intent_entropy, row_entropy
from xemb.settings import XembConfig
from xemb.store import Manifest, VersionStore

__all__ = ["Missing", "SplitResult", "IntentView", "ReportInputs", "collect", "read_bench",
           "read_ablations", "check_yardsticks", "intent_view", "MODEL"]

MODEL = "xemb (served path)"
SPLITS = ("valid", "test")


@dataclass(frozen=True)
class Missing:
    """An input the report could not have, and why (shown in its section)."""

    why: str


@dataclass
class SplitResult:
    ranks: dict[str, Ranks]  # model -> ranks of every eval row; MODEL first
    entropy: dict[str, float] = field(default_factory=dict)  # intent_entropy of the weights
    entropy_ratio: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per row


@dataclass
class IntentView:
    lib: IntentLibrary
    report: dict[str, Any]  # intent_report
    source: str  # where ``report`` came from


@dataclass
class ReportInputs:
    manifest: Manifest
    splits: dict[str, SplitResult | Missing]
    intents: IntentView | Missing
    ablations: dict[str, Any] | Missing
    yardsticks: dict[str, Any] | Missing
    bench: dict[str, Any] | Missing
    recall_k: int = 50
    switched_to: bool = False
    """Whether the root's switch log ever made this version current (the manifest is sealed
    before the gate's decision takes effect, so it cannot say)."""


def _read_json(path: Path | None, what: str) -> dict[str, Any] | Missing:
    if path is None:
        return Missing(f"no {what} file given")
    if not path.is_file():
        return Missing(f"no {what} file at {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return Missing(f"{path} is not readable JSON: {exc}")
    return data if isinstance(data, dict) else Missing(f"{path}: expected a JSON object")


def read_bench(path: Path | None) -> dict[str, Any] | Missing:
    data = _read_json(path, "benchmark (--bench)")
    if isinstance(data, Missing):
        return data
    cases = [c for c in data.get("cases", []) if isinstance(c, dict) and c.get("latencies_ms")]
    if not cases:
        return Missing(f"{path}: no case with latencies_ms")
    return {**data, "cases": cases}


def read_ablations(path: Path | None) -> dict[str, Any] | Missing:
    data = _read_json(path, "ablations")
    if isinstance(data, Missing):
        return data
    rows = [r for r in data.get("rows", []) if isinstance(r, dict) and "variant" in r]
    return {**data, "rows": rows} if rows else Missing(f"{path}: no rows with a variant")


def check_yardsticks(data: dict[str, Any] | Missing, domains: list[str],
                     targets: dict[str, int]) -> dict[str, Any] | Missing:
    """Yardsticks apply only to the dataset and split they were measured on: the file names
    its target counts per domain, and they must be this build's."""
    if isinstance(data, Missing):
        return data
    want = {d: int(n) for d, n in data.get("targets", {}).items()}
    if not want or want != {d: targets.get(d, 0) for d in want} or not set(want) <= set(domains):
        return Missing(f"yardsticks for {data.get('dataset', '?')} ({want or 'no targets'} "
                       f"{data.get('split', '')} targets) do not match this build's "
                       f"{targets}")
    return data


def intent_view(version_dir: Path, manifest: Manifest) -> IntentView | Missing:
    path = version_dir / layout.INTENTS
    if not path.is_file():
        return Missing(f"{path} not found")
    t = pq.read_table(path).sort_by("intent_id")
    cols = set(t.column_names)
    vec = np.stack(t.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)
    _, items = served_items(version_dir)
    lib = IntentLibrary(
        vec, t.column("label").to_pylist(), t.column("support").to_numpy(),
        t.column("domain_support").to_pylist(), items.intent_ids, items.intent_weights,
        t.column("domain_labels").to_pylist() if "domain_labels" in cols else [],
        t.column("top_terms").to_pylist() if "top_terms" in cols else [])
    if "intents" in manifest.metrics:
        return IntentView(lib, manifest.metrics["intents"], "the manifest")
    return IntentView(lib, intent_report(lib, items.domain, manifest.domains),
                      "the published tables (this manifest predates intent metrics)")


def _split(version_dir: Path, ds, split: str, manifest: Manifest, semantic: np.ndarray,  # type: ignore[no-untyped-def]
           cfg: XembConfig) -> SplitResult | Missing:
    if not any(len(s) >= 2 for _, s in ds.sequences.get(split, [])):
        return Missing(f"the dataset has no {split} rows")
    e = cfg.eval
    model, weights = served_ranks(version_dir, ds, split, int(manifest.params["composer_max_len"]),
                                  e.negatives, e.seed)
    h, u = row_entropy(weights)
    ratio = np.where(u > 0, h / np.maximum(u, 1e-12), 0.0)[u > 0]
    return SplitResult({MODEL: model, **baseline_ranks(ds, semantic, split, e.negatives, e.seed)},
                       intent_entropy(weights), ratio)


def _targets(result: SplitResult | Missing, domains: list[str]) -> dict[str, int]:
    if isinstance(result, Missing):
        return {}
    r = result.ranks[MODEL]
    return {d: int((r.target_domain == i).sum()) for i, d in enumerate(domains)}


def collect(cfg: XembConfig, version: str | None = None, yardsticks: Path | None = None,
            bench: Path | None = None, ablations: Path | None = None) -> ReportInputs:
    """Score ``version`` (default: current) on valid and test and read the optional inputs."""
    from xemb.embedders.data import load_dataset
    from xemb.embedders.pipeline import semantic_vectors

    store = VersionStore(cfg.build.root)
    version = version or store.current()
    manifest = store.verify(version)
    version_dir = store.path(version)
    ds = load_dataset(cfg.data)
    semantic = semantic_vectors(cfg)
    splits = {s: _split(version_dir, ds, s, manifest, semantic, cfg) for s in SPLITS}
    data_dir = cfg.data.path or (cfg.data.items.parent if cfg.data.items else None)
    if yardsticks is None and data_dir and (data_dir / "yardsticks.json").is_file():
        yardsticks = data_dir / "yardsticks.json"
    ysplit = _read_json(yardsticks, "yardsticks (--yardsticks)")
    on = ysplit.get("split", "test") if isinstance(ysplit, dict) else "test"
    return ReportInputs(
        manifest=manifest, splits=splits, intents=intent_view(version_dir, manifest),
        ablations=read_ablations(ablations or cfg.build.root / "reports" / "ablations.json"),
        yardsticks=check_yardsticks(ysplit, manifest.domains,
                                    _targets(splits.get(on, Missing("")), manifest.domains)),
        bench=read_bench(bench), recall_k=cfg.eval.recall_k,
        switched_to=any(sw.version == version for sw in store.switches()))
