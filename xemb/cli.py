"""`xemb` command line. Each layer registers its own subcommands; heavy imports stay lazy so
`xemb serve` never imports torch."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xemb.errors import NotPublished, XembError
from xemb.settings import XembConfig, load_config
from xemb.store import VersionStore

__all__ = ["main", "add_config_args", "config_from_args", "store_from"]


def add_config_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument("-c", "--config", type=Path, required=required, help="xemb YAML config")
    p.add_argument("--root", type=Path, default=None,
                   help="version store root (overrides build.root)")


def config_from_args(args: argparse.Namespace, extra: dict[str, Any] | None = None
                     ) -> XembConfig:
    """The YAML with ``--root`` and ``extra`` (dotted ``section.key`` overrides of other
    flags) applied before validation, so a bad flag is refused like a bad YAML field."""
    overrides = dict(extra or {})
    if args.root:
        overrides["build.root"] = str(args.root.resolve())
    return load_config(args.config, overrides)


def store_from(args: argparse.Namespace) -> VersionStore:
    if getattr(args, "config", None):
        return VersionStore(config_from_args(args).build.root)
    if args.root:
        return VersionStore(args.root)
    raise XembError("give -c CONFIG or --root DIR")


def _cmd_versions(args: argparse.Namespace) -> int:
    print(json.dumps(store_from(args).describe(), indent=2))
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    store = store_from(args)
    target = args.to or store.previous()
    store.require_selectable(target)
    _require_feast_slot(store, target)
    manifest = store.set_current(target, reason="rollback")
    _after_switch(store)
    print(json.dumps({"current": manifest.version}))
    return 0


def _require_feast_slot(store: VersionStore, version: str) -> None:
    """Where the root publishes into Feast, the version's online slot must be ready."""
    if not (store.root / "feast" / "feature_store.yaml").is_file():
        return
    try:
        from xemb.feature_repo.publish import slot_ready
    except ImportError:
        return
    if not slot_ready(store.root, version):
        raise NotPublished(f"version {version} has no ready Feast online slot; publish it "
                           f"first (`xemb feast publish --version {version}`)")


def _after_switch(store: VersionStore) -> None:
    """The offline history follows the switch log (rows stamped with the rollback time)."""
    if not (store.root / "feast").is_dir():
        return
    try:
        from xemb.feature_repo.publish import after_switch
    except ImportError:
        return
    after_switch(store)


def _cmd_add_items(args: argparse.Namespace) -> int:
    from xemb.add_items import add_items

    print(json.dumps(add_items(config_from_args(args), args.file, wait=args.wait)))
    return 0


def _register_store_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("versions", help="list published versions")
    add_config_args(p, required=False)
    p.set_defaults(func=_cmd_versions)
    p = sub.add_parser("rollback", help="make an earlier published version current again")
    add_config_args(p, required=False)
    p.add_argument("--to", default=None, help="version id (default: the previous current)")
    p.set_defaults(func=_cmd_rollback)
    p = sub.add_parser("add-items", help="add new items to a version derived from CURRENT "
                                         "(published encoder + adapter; no retraining)")
    add_config_args(p)
    p.add_argument("file", type=Path, help="items table (CSV/TSV/Parquet): item_id, domain, "
                                           "the data.text_fields, optional image_path")
    p.add_argument("--wait", action="store_true", help="queue behind a running build")
    p.set_defaults(func=_cmd_add_items)


def _registrars() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Subcommands of each layer; a layer whose extra is not installed is skipped."""
    out: list[Callable[[argparse._SubParsersAction], None]] = [_register_store_commands]
    for module in ("xemb.embedders.cli", "xemb.serving.cli", "xemb.feature_repo.cli"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ImportError:
            continue
        out.append(mod.register)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xemb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for register in _registrars():
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except XembError as exc:
        print(f"xemb: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def console_main() -> None:
    """The ``xemb`` command: :func:`main` in a process of its own, so Feast is imported
    without typeguard's import-time instrumentation (see ``xemb.feast_import``)."""
    from xemb.feast_import import skip_feast_typechecks

    skip_feast_typechecks()
    sys.exit(main())


if __name__ == "__main__":
    console_main()
