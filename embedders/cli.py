"""`xemb build` and `xemb eval`. Imports of torch happen inside the commands, so `xemb --help`
and the serving commands stay light."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from xemb.cli import add_config_args, config_from_args
from xemb.errors import ConfigError

__all__ = ["register"]


def _need_offline() -> None:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise ConfigError("the offline job needs torch and transformers: "
                          "pip install torch==2.13.0 'xemb[offline]'") from exc


def _cmd_build(args: argparse.Namespace) -> int:
    _need_offline()
    from xemb.embedders.pipeline import build

    cfg = config_from_args(args, build_overrides(args))
    stages = [s.strip() for s in args.stages.split(",")] if args.stages else None
    manifest = build(cfg, stages=stages, force=args.force, wait=args.wait)
    if manifest is None:
        return 0
    from xemb.store import VersionStore

    current = VersionStore(cfg.build.root).current_or_none() == manifest.version
    gate = (manifest.metrics.get("quality") or {}).get("gate", {})
    print(json.dumps({"version": manifest.version, "current": current,
                      "gate": {"passed": gate.get("passed"), "reasons": gate.get("reasons")},
                      "counts": manifest.counts, "root": str(cfg.build.root)}))
    return 0 if current else 3  # published, but the gate kept it from becoming current


def build_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--accept``, ``--engine`` and ``--ray-address`` as config overrides (validated with
    the YAML: e.g. an address without the Ray engine is refused naming the field)."""
    out: dict[str, Any] = {}
    if args.accept:
        out["gate.accept"] = True
    if args.engine:
        out["build.engine"] = args.engine
    if args.ray_address:
        out["build.ray_address"] = args.ray_address
    return out


def _cmd_eval(args: argparse.Namespace) -> int:
    _need_offline()
    from xemb.embedders.data import load_dataset
    from xemb.embedders.evaluate import baseline_metrics, served_metrics, tuned_pop_text_beta
    from xemb.embedders.pipeline import semantic_vectors
    from xemb.store import VersionStore

    cfg = config_from_args(args)
    store = VersionStore(cfg.build.root)
    version = args.version or store.current()
    manifest = store.verify(version)
    ds = load_dataset(cfg.data)
    e = cfg.eval
    max_len = int(manifest.params["composer_max_len"])
    result: dict[str, dict] = served_metrics(store.path(version), ds, args.split, max_len,
                                             e.negatives, e.seed, e.recall_k)
    semantic = semantic_vectors(cfg)
    result["baselines"] = baseline_metrics(ds, semantic, args.split, e.negatives, e.seed,
                                           e.recall_k)
    result["variants"] = {}
    if manifest.params.get("prior"):
        result["variants"]["prior_weight_0"] = served_metrics(
            store.path(version), ds, args.split, max_len, e.negatives, e.seed, e.recall_k,
            prior_weight=0.0)
    result["selected_on_valid"] = {
        "prior_weight": manifest.params.get("prior_scale"),
        "popularity_text_beta": tuned_pop_text_beta(ds, semantic, e.negatives, e.seed)}
    print(f"[xemb] eval: version {version}, split {args.split}", file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="run the offline job and publish a new version")
    add_config_args(p)
    p.add_argument("--stages", default=None,
                   help="comma-separated subset of describe,profile (when on),encode,adapt,"
                        "intents,compose,publish")
    p.add_argument("--force", action="store_true",
                   help="publish a new version even if nothing changed")
    p.add_argument("--accept", action="store_true",
                   help="make the new version current even if the quality gate says no")
    p.add_argument("--wait", action="store_true",
                   help="wait for a build already running on this root (default: fail at once)")
    p.add_argument("--engine", choices=("local", "ray"), default=None,
                   help="where the stages run (overrides build.engine): this process, or Ray "
                        "Data pipelines and Ray tasks (needs the 'ray' extra)")
    p.add_argument("--ray-address", default=None,
                   help="Ray cluster to join (overrides build.ray_address; default: start a "
                        "local Ray)")
    p.set_defaults(func=_cmd_build)
    p = sub.add_parser("eval", help="evaluate a published version on the valid/test split")
    add_config_args(p)
    p.add_argument("--split", choices=("valid", "test"), default="test")
    p.add_argument("--version", default=None, help="version id (default: current)")
    p.set_defaults(func=_cmd_eval)
    _register_report(sub)


def _cmd_report(args: argparse.Namespace) -> int:
    _need_offline()
    from xemb.embedders.report import collect
    from xemb.embedders.report_html import render

    inputs = collect(config_from_args(args), args.version, args.yardsticks, args.bench,
                     args.ablations)
    page = render(inputs, args.out)
    print(json.dumps({"version": inputs.manifest.version, "report": str(page)}))
    return 0


def _register_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="an HTML report (index.html + PNG plots) of a version")
    add_config_args(p)
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    p.add_argument("--version", default=None, help="version id (default: current)")
    p.add_argument("--yardsticks", type=Path, default=None,
                   help="published figures on this dataset (default: <data.path>/yardsticks.json)")
    p.add_argument("--bench", type=Path, default=None,
                   help="latency file from benchmarks/bench_serving.py --json-out")
    p.add_argument("--ablations", type=Path, default=None,
                   help="ablation results (default: <root>/reports/ablations.json)")
    p.set_defaults(func=_cmd_report)
