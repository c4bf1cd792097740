"""Ablations and robustness in one table: build variants of the model (switches) or of the
data (food-kitchen with fewer users, shorter histories, per-domain training rows), evaluate
each through the served path on valid (and test for ablations), beside popularity and text.

    python benchmarks/quality.py ablations -c examples/food-kitchen/xemb.yaml --root DIR
    python benchmarks/quality.py datasets  -c examples/food-kitchen/xemb.yaml --root DIR

Every variant builds into ``DIR/<kind>/<variant>/`` (sharing DIR's encode cache, so titles
are encoded once); the ablation table goes to ``<build.root>/reports/ablations.json``, which
``xemb report`` shows. Selection reads valid only; test is printed for the record.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import _repo  # noqa: F401  (repository root on sys.path)
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ABLATIONS: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {
    "default": ("everything on (the shipped defaults)", {}),
    "no_prior": ("no learned item prior (unit-length vectors)", {"adapter": {"prior": False}}),
    "prior_learned": ("learned prior (per-item bias + text head, trained with the model)",
                      {"adapter": {"prior_fit": "learned"}}),
    "prior_counts": ("fixed log-count prior, part of the training score",
                     {"adapter": {"prior_fit": "counts"}}),
    "prior_tuned": ("log-count prior left out of training, weight chosen on valid",
                    {"adapter": {"prior_fit": "tuned"}}),
    "no_logq": ("no logQ correction of the sampled softmax", {"adapter": {"logq": False}}),
    "no_id_embedding": ("no per-item vectors (text only)", {"adapter": {"id_embedding": False}}),
    "no_residual": ("no domain residual heads", {"adapter": {"residual": False}}),
    "no_alignment": ("no cross-domain alignment loss", {"adapter": {"align_weight": 0.0}}),
    "no_orthogonality": ("no residual/transferable orthogonality",
                         {"adapter": {"orth_weight": 0.0}}),
    "no_intents": ("composer without the atomic-intent pathway", {"composer": {"intents": False}}),
    "no_recency": ("composer blind to item order", {"composer": {"recency": False}}),
}


def _parse_sets(items: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"--set {item!r}: expected SECTION.KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def _variant_config(base: Path, root: Path, overrides: dict, data: Path | None = None,
                    extra: dict[str, Any] | None = None) -> Any:
    from xemb.settings import load_config

    ov: dict[str, Any] = dict(extra or {})
    ov.update({f"{s}.{k}": v for s, kv in overrides.items() for k, v in kv.items()})
    # the gate's valid pass would repeat what _evaluate measures: every variant is kept
    ov.update({"build.root": str(root), "feast.enabled": False, "gate.enabled": False})
    if data is not None:
        ov["data.path"] = str(data)
    return load_config(base, ov)


def _share_encode_cache(shared: Path, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (shared / "cache").mkdir(parents=True, exist_ok=True)
    if not (root / "cache").exists():
        os.symlink(shared / "cache", root / "cache")


_BASELINES: dict[tuple[str, str], dict[str, Any]] = {}


def _evaluate(cfg: Any, manifest: Any, splits: tuple[str, ...]) -> dict[str, Any]:
    from xemb.embedders.evaluate import baseline_metrics, served_metrics
    from xemb.embedders.pipeline import prepare
    from xemb.store import VersionStore

    ctx = prepare(cfg)
    vdir = VersionStore(cfg.build.root).path(manifest.version)
    e, max_len = cfg.eval, int(manifest.params["composer_max_len"])
    out: dict[str, Any] = {}
    for split in splits:
        out[split] = served_metrics(vdir, ctx.ds, split, max_len, e.negatives, e.seed,
                                    e.recall_k)
        key = (str(cfg.data.path), split)  # the baselines depend on the data only
        if key not in _BASELINES:
            _BASELINES[key] = baseline_metrics(ctx.ds, ctx.semantic(), split, e.negatives,
                                               e.seed, e.recall_k)
        out[f"{split}_baselines"] = _BASELINES[key]
    out["best_epoch"] = manifest.metrics.get("training", {}).get("best_epoch")
    out["prior_weight"] = manifest.params.get("prior_scale")
    return out


def _build_and_eval(cfg: Any, splits: tuple[str, ...]) -> dict[str, Any]:
    from xemb.embedders.pipeline import build

    manifest = build(cfg)
    return _evaluate(cfg, manifest, splits)


# ---- data variants --------------------------------------------------------------------------
def _write_variant(src: Path, dst: Path, name: str, seed: int = 0) -> Path:
    """food-kitchen with its valid/test rows untouched and the training rows changed."""
    seqs = pq.read_table(src / "sequences.parquet")
    train = seqs.filter(pc.equal(seqs["split"], "train")).to_pylist()
    held = seqs.filter(pc.not_equal(seqs["split"], "train"))
    rng = np.random.default_rng(seed)
    if name in ("users_8k", "per_domain_8k"):
        train = [train[i] for i in sorted(rng.choice(len(train), 8000, replace=False))]
    if name == "per_domain_8k":  # each user's events split into one row per domain
        train = [r for row in train for r in _split_domains(row)]
    if name == "short_5":
        train = [{**r, "item_ids": r["item_ids"][-5:]} for r in train]
    dst.mkdir(parents=True, exist_ok=True)
    out = pa.concat_tables([pa.Table.from_pylist(train, schema=seqs.schema), held])
    pq.write_table(out, dst / "sequences.parquet")
    if not (dst / "items.parquet").exists():
        os.symlink(src / "items.parquet", dst / "items.parquet")
    return dst


def _split_domains(row: dict) -> list[dict]:
    ids = row["item_ids"]
    grocery = [i for i in ids if i <= 8661]  # food-kitchen: ids 1..8661 are grocery
    kitchen = [i for i in ids if i > 8661]
    return [{**row, "user_id": f"{row['user_id']}-{d}", "item_ids": part}
            for d, part in (("g", grocery), ("k", kitchen)) if len(part) >= 2]


DATASETS = {"full": "food-kitchen as shipped", "users_8k": "8,000 random training users",
            "per_domain_8k": "8,000 users, one training row per domain (no mixed rows)",
            "short_5": "every training history cut to its last 5 items"}


# ---- tables -------------------------------------------------------------------------------
def _row(name: str, desc: str, m: dict | None, domains: list[str]) -> str:
    cells = [f"{m[d]['HR@10']:.3f} / {m[d]['NDCG@10']:.3f}" if m and d in m else ""
             for d in domains]
    return f"| {name} | {desc} | " + " | ".join(cells) + " |"


def _print_table(title: str, results: dict[str, dict], descs: dict[str, str], split: str,
                 domains: list[str]) -> None:
    print(f"\n{title} ({split}, HR@10 / NDCG@10)\n")
    print("| variant | what | " + " | ".join(domains) + " |")
    print("|---|---|" + "---|" * len(domains))
    for name, r in results.items():
        print(_row(name, descs[name], r.get(split), domains))
        base = r.get(f"{split}_baselines") or {}
        for b in ("popularity", "popularity_text"):
            if b in base and title.startswith("Data"):
                print(_row(f"  {b}", "baseline on this data", base[b], domains))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=("ablations", "datasets"))
    ap.add_argument("-c", "--config", type=Path, required=True)
    ap.add_argument("--root", type=Path, required=True, help="where variants are built")
    ap.add_argument("--only", default=None, help="comma-separated variant names")
    ap.add_argument("--data", default=None, choices=sorted(DATASETS),
                    help="ablations: build them on this food-kitchen variant (cheaper)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="a config override for every variant (YAML value; repeatable)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from xemb.settings import load_config

    base_cfg = load_config(args.config)
    table = ABLATIONS if args.kind == "ablations" else {k: (v, {}) for k, v in DATASETS.items()}
    names = args.only.split(",") if args.only else list(table)
    results: dict[str, dict] = {}
    out_file = args.root / f"{args.kind}.json"
    if out_file.exists():
        results = json.loads(out_file.read_text())
    for name in names:
        desc, overrides = table[name]
        root = args.root / args.kind / name
        _share_encode_cache(args.root, root)
        data = None
        variant = name if args.kind == "datasets" else args.data
        if variant and variant != "full":
            data = _write_variant(base_cfg.data.path, args.root / "data" / variant, variant)
        cfg = _variant_config(args.config, root, overrides, data, _parse_sets(args.set))
        print(f"[quality] {args.kind}: {name} ({desc})", file=sys.stderr, flush=True)
        splits = ("valid", "test") if args.kind == "ablations" else ("valid",)
        results[name] = {"description": desc, **_build_and_eval(cfg, splits)}
        out_file.write_text(json.dumps(results, indent=2))
    domains = base_cfg.data.domains or sorted(next(iter(results.values()))["valid"])
    descs = {k: v["description"] for k, v in results.items()}
    for split in (("valid", "test") if args.kind == "ablations" else ("valid",)):
        _print_table("Ablations" if args.kind == "ablations" else "Data variants", results,
                     descs, split, domains)
    if args.kind == "ablations":
        _write_report_file(base_cfg.build.root, results)
    return 0


def _write_report_file(root: Path, results: dict[str, dict]) -> None:
    """``xemb report`` reads this: the variants, and the one valid supports."""
    from xemb.embedders.evaluate import valid_score

    rows = [{"variant": k, "description": v["description"], "valid": v["valid"],
             "test": v.get("test")} for k, v in results.items()]
    best = max(rows, key=lambda r: valid_score(r["valid"]))["variant"]
    (root / "reports").mkdir(parents=True, exist_ok=True)
    (root / "reports" / "ablations.json").write_text(
        json.dumps({"rows": rows, "selected": best}, indent=2))
    print(f"\nbest on valid: {best}")


if __name__ == "__main__":
    raise SystemExit(main())
