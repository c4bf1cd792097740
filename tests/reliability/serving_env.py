"""A served synthetic version for the reliability scenarios, and what it knows."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq

from tests.helpers.synthetic_serving import publish_synthetic, running
from tests.reliability.grpc_fuzz import Hints
from xemb import layout
from xemb.store import VersionStore

__all__ = ["served", "hints_for"]

LIMITS = {"max_ids": 50, "max_sequence_len": 20, "max_k": 30, "max_encode_texts": 4,
          "max_text_chars": 200}


def hints_for(root: Path) -> Hints:
    store = VersionStore(root)
    version = store.current()
    manifest = store.manifest(version)
    items = pq.read_table(store.path(version) / layout.ITEMS, columns=["item_id", "text"])
    ids = items.column("item_id").to_pylist()
    words = sorted({w for t in items.column("text").to_pylist()[:50] for w in t.split()})
    users = pq.read_table(store.path(version) / layout.USERS, columns=["user_id"])
    return Hints(ids=tuple(ids[:: max(1, len(ids) // 40)]),
                 strings=(*manifest.domains, version, *sorted(set(users["user_id"].to_pylist())),
                          *words[:10], " ".join(words[:3])),
                 dim=manifest.dims["embedding"])


@contextmanager
def served(root: Path, *, n_items: int = 600, dim: int = 16, **serving: object
           ) -> Iterator[tuple[object, object, Hints]]:
    """Publish a synthetic version under ``root`` and serve it: (server, client, hints)."""
    publish_synthetic(root, n_items=n_items, d=dim)
    with running(root, **{**LIMITS, **serving}) as (server, client):
        yield server, client, hints_for(root)
