"""``xemb feast ...`` / ``python -m xemb.feature_repo ...``: Feast publishing outside a build.

    publish -c xemb.yaml [--version V] [--set-current]   export, apply, materialize, verify
    export --root DIR                                     offline history from the switch log
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from xemb.errors import XembError
from xemb.settings import load_config
from xemb.store import VersionStore

__all__ = ["register", "main"]


def _publish(args: argparse.Namespace) -> dict[str, Any]:
    from xemb.feature_repo.publish import publish_to_feast

    overrides = {"build.root": str(args.root.resolve())} if args.root else None
    cfg = load_config(args.config, overrides)
    store = VersionStore(cfg.build.root)
    version = args.version or store.current()
    out = publish_to_feast(cfg, store, version)
    if args.set_current:
        from xemb.feature_repo.publish import after_switch

        store.set_current(version)
        out["history"] = after_switch(store)
    return {"version": version, **out}


def _export(args: argparse.Namespace) -> dict[str, Any]:
    from xemb.feature_repo.offline import sync_history

    return sync_history(VersionStore(args.root))


def _run(args: argparse.Namespace) -> int:
    print(json.dumps(args.feast_func(args), indent=2, default=str))
    return 0


def _add_commands(sub: argparse._SubParsersAction) -> None:
    pub = sub.add_parser("publish", help="export, apply, materialize and verify one version")
    pub.add_argument("-c", "--config", type=Path, required=True, help="xemb YAML config")
    pub.add_argument("--root", type=Path, default=None, help="overrides build.root")
    pub.add_argument("--version", default=None, help="default: the CURRENT version")
    pub.add_argument("--set-current", action="store_true", help="then make it CURRENT")
    pub.set_defaults(func=_run, feast_func=_publish)
    exp = sub.add_parser("export", help="bring the offline history up to the switch log")
    exp.add_argument("--root", type=Path, required=True, help="xemb build root")
    exp.set_defaults(func=_run, feast_func=_export)


def register(sub: argparse._SubParsersAction) -> None:
    """Hook for ``xemb.cli``: adds ``xemb feast publish|export``."""
    p = sub.add_parser("feast", help="publish versions into the Feast feature store")
    _add_commands(p.add_subparsers(dest="feast_command", required=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xemb.feature_repo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except XembError as exc:
        print(f"xemb: error: {exc}", file=sys.stderr)
        return exc.exit_code
