"""`xemb serve` and `xemb query`: run the service, and try each method from the shell.

Examples::

    xemb serve -c examples/food-kitchen/xemb.yaml --port 50051
    xemb query -c examples/food-kitchen/xemb.yaml items 1 2 3
    xemb query --target localhost:50051 compose --domain kitchen --history 12,845,9001
    xemb query --target localhost:50051 retrieve --domain grocery -k 10 --item 845
    xemb query --target localhost:50051 encode --domain kitchen "cast iron skillet"
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.json_format import MessageToDict

from xemb.cli import add_config_args, config_from_args

__all__ = ["register"]


def _cmd_serve(args: argparse.Namespace) -> int:
    from xemb.serving.server import serve

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s")
    return serve(config_from_args(args), port=args.port)


def _ids(text: str) -> list[int]:
    return [int(x) for x in text.replace(",", " ").split()]


def _vec(a: np.ndarray, full: bool) -> Any:
    return a.tolist() if full else {"shape": list(a.shape), "head": np.round(
        a.reshape(-1)[:6], 5).tolist()}


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path else None


def _client(args: argparse.Namespace):
    from xemb.serving.client import XembClient

    target = args.target
    if target is None:
        if args.config is None:
            raise SystemExit("xemb query: give --target HOST:PORT or -c CONFIG")
        s = config_from_args(args).serving
        target = f"{s.host}:{s.port}"
    return XembClient(target, timeout=args.timeout, token=args.token,
                      root_certificates=_read(args.ca), client_cert=_read(args.cert),
                      client_key=_read(args.key), tls=args.tls or None)


def _run_query(c, args: argparse.Namespace) -> Any:
    what, full = args.what, args.full
    if what == "items":
        r = c.get_item_embeddings(_ids(" ".join(args.ids)), args.part, version=args.version)
        return {"version": r.version, "found": r.found.tolist(), "domains": list(r.domains),
                "vectors": _vec(r.vectors, full)}
    if what == "compose":
        r = c.compose_user_intent(_ids(args.history or ""), target_domain=args.domain,
                                  user_id=args.user or "", version=args.version)
        return {"version": r.version, "source": r.source, "items_used": r.items_used,
                "unknown_item_ids": r.unknown_item_ids.tolist(),
                "intent_entropy": round(r.intent_entropy, 4),
                "intent_entropy_ratio": round(r.intent_entropy_ratio, 4),
                "intents": [vars(i) for i in r.intents], "vector": _vec(r.vector, full)}
    if what == "retrieve":
        vector = np.load(args.vector) if args.vector else None
        r = c.retrieve(args.domain, args.k, vector=vector, item_id=args.item,
                       history=_ids(args.history) if args.history else None,
                       user_id=args.user or "", exclude_ids=_ids(args.exclude or ""),
                       version=args.version)
        return {"version": r.version, "exact": r.exact, "item_ids": r.item_ids.tolist(),
                "scores": np.round(r.scores, 5).tolist()}
    if what == "encode":
        r = c.encode_items(args.texts, args.domain, version=args.version)
        return {"version": r.version, **{p: _vec(getattr(r, p), full)
                                         for p in ("full", "transferable", "residual")}}
    if what == "version":
        return MessageToDict(c.get_version(args.version))
    if what == "versions":
        return MessageToDict(c.list_versions())
    return {"status": c.health(args.service)}


def _cmd_query(args: argparse.Namespace) -> int:
    with _client(args) as c:
        print(json.dumps(_run_query(c, args), indent=2))
    return 0


def _query_methods(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("items", help="GetItemEmbeddings")
    p.add_argument("ids", nargs="+", help="item ids (spaces or commas)")
    p.add_argument("--part", choices=("full", "transferable", "residual"), default="full")
    p = sub.add_parser("compose", help="ComposeUserIntent")
    p.add_argument("--domain", required=True, help="target domain")
    p.add_argument("--history", help="item ids, oldest first (commas)")
    p.add_argument("--user", help="user id (its stored vector when no history)")
    p = sub.add_parser("retrieve", help="Retrieve")
    p.add_argument("--domain", required=True)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--item", type=int, help="query: items like this one")
    p.add_argument("--history", help="query: compose from these item ids")
    p.add_argument("--user", help="query: this user's intent")
    p.add_argument("--vector", type=Path, help="query: a .npy vector")
    p.add_argument("--exclude", help="item ids to leave out (commas)")
    p = sub.add_parser("encode", help="EncodeItems (cold start)")
    p.add_argument("--domain", required=True)
    p.add_argument("texts", nargs="+")
    p = sub.add_parser("version", help="GetVersion")
    p.add_argument("version", nargs="?", default="")
    sub.add_parser("versions", help="ListVersions")
    p = sub.add_parser("health", help="grpc.health.v1 Check")
    p.add_argument("--service", default="")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="run the gRPC embedding service")
    add_config_args(p)
    p.add_argument("--port", type=int, default=None, help="port (overrides serving.port)")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=_cmd_serve)

    q = subparsers.add_parser("query", help="call the gRPC service once and print JSON")
    add_config_args(q, required=False)
    q.add_argument("--target", help="HOST:PORT (default: serving.host/port of the config)")
    q.add_argument("--timeout", type=float, default=5.0, help="deadline in seconds")
    q.add_argument("--token", help="bearer token")
    q.add_argument("--tls", action="store_true", help="use TLS (system roots unless --ca)")
    q.add_argument("--ca", type=Path, help="PEM roots to trust")
    q.add_argument("--cert", type=Path, help="client certificate (mutual TLS)")
    q.add_argument("--key", type=Path, help="client key (mutual TLS)")
    q.add_argument("--version", default="", help="pin a loaded version")
    q.add_argument("--full", action="store_true", help="print whole vectors")
    q.set_defaults(func=_cmd_query)
    _query_methods(q.add_subparsers(dest="what", required=True))
