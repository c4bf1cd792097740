"""The online half of xemb: a gRPC embedding service (``xemb.v1``) and its Python client.

Public API (imported lazily, so ``import xemb.serving`` stays cheap and never imports torch):

* :func:`create_server` / :func:`serve` (``xemb.serving.server``)
* :class:`XembClient` (``xemb.serving.client``)
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_server", "serve", "XembClient"]

_WHERE = {"create_server": "xemb.serving.server", "serve": "xemb.serving.server",
          "XembClient": "xemb.serving.client"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'serving' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_WHERE[name]), name)
