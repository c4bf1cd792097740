"""``python -m feature_repo``: publish a version into Feast outside ``xemb build``.

    python -m feature_repo publish -c xemb.yaml [--version V] [--set-current]
    python -m feature_repo export --root DIR     # offline history only (for `feast` CLI use)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from xemb.errors import XembError
from xemb.settings import load_config
from xemb.store import VersionStore


def _publish(args: argparse.Namespace) -> dict:
    from feature_repo.publish import publish_to_feast

    overrides = {"build.root": str(args.root.resolve())} if args.root else None
    cfg = load_config(args.config, overrides)
    store = VersionStore(cfg.build.root)
    version = args.version or store.current()
    out = publish_to_feast(cfg, store, version)
    if args.set_current:
        store.set_current(version)
    return {"version": version, **out}


def _export(args: argparse.Namespace) -> dict:
    from feature_repo.offline import export_version

    store = VersionStore(args.root)
    return {v: export_version(store, v) for v in store.list_ids()}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m feature_repo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    pub = sub.add_parser("publish", help="export, apply, materialize and verify one version")
    pub.add_argument("-c", "--config", type=Path, required=True)
    pub.add_argument("--root", type=Path, default=None, help="overrides build.root")
    pub.add_argument("--version", default=None, help="default: the CURRENT version")
    pub.add_argument("--set-current", action="store_true", help="then make it CURRENT")
    pub.set_defaults(func=_publish)
    exp = sub.add_parser("export", help="write every version into the offline history")
    exp.add_argument("--root", type=Path, required=True)
    exp.set_defaults(func=_export)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        print(json.dumps(args.func(args), indent=2, default=str))
    except XembError as exc:
        print(f"xemb: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
