"""One published version loaded into memory and checked before it may serve.

``load_version`` is the only way in: it verifies checksums through the VersionStore, loads the
tables, indexes and models, and runs a smoke request through each, so a broken or incomplete
version fails here, beside the one serving, and never reaches a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from xemb import layout
from xemb.errors import VersionIntegrityError
from xemb.serving.models import ColdStartEncoder, Composer
from xemb.serving.retrieval import DomainIndex, SearchKnobs, load_index
from xemb.serving.tables import (
    IntentTable,
    ItemTable,
    UserTable,
    load_items,
    load_users,
    read_intents,
)
from xemb.store import Manifest, VersionStore

__all__ = ["LoadedVersion", "load_version"]

REQUIRED = (layout.ITEMS, layout.INTENTS, layout.COMPOSER_ONNX)
REQUIRED_PARAMS = ("composer_max_len", "top_m", "top_intents")


@dataclass(frozen=True)
class LoadedVersion:
    manifest: Manifest
    items: ItemTable
    intents: IntentTable
    users: UserTable
    composer: Composer
    encoder: ColdStartEncoder | None
    indexes: dict[int, DomainIndex]

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def domains(self) -> list[str]:
        return self.manifest.domains

    @property
    def dim(self) -> int:
        return self.manifest.dims["embedding"]

    @cached_property
    def domain_names(self) -> np.ndarray:
        """Object array of names indexed by domain code; code -1 (not found) gives ""."""
        return np.array([*self.manifest.domains, ""], dtype=object)

    def domain_id(self, name: str) -> int | None:
        try:
            return self.manifest.domains.index(name)
        except ValueError:
            return None


def _check_manifest(manifest: Manifest) -> None:
    missing = [f for f in REQUIRED if f not in manifest.files]
    missing += [f"params.{p}" for p in REQUIRED_PARAMS if p not in manifest.params]
    missing += [] if "embedding" in manifest.dims else ["dims.embedding"]
    if missing:
        raise VersionIntegrityError(f"version {manifest.version} is incomplete: "
                                    f"missing {', '.join(missing)}")


def _indexes(base: Path, manifest: Manifest, items: ItemTable,
             knobs: SearchKnobs) -> dict[int, DomainIndex]:
    """One per domain over its slice of the items (views: no copy of the vectors), with the
    search knobs publish tuned for it unless the config sets them."""
    out = {}
    tuned = manifest.params.get("search") or {}
    for code, name in enumerate(manifest.domains):
        rows = items.domain_rows(code)
        rel = layout.index_file(name)
        path = base / rel if rel in manifest.files else None
        out[code] = load_index(path, items.ids[rows], items.parts["full"][rows],
                               knobs.resolved(tuned.get(name)))
    return out


def _smoke(v: LoadedVersion) -> None:
    """One request through every model and index; any wrong shape or NaN refuses the version."""
    user_vec, weights = v.composer.run(v.composer.feed(np.arange(min(3, len(v.items))), 0))
    if user_vec.shape != (v.dim,) or not np.isfinite(user_vec).all() or \
            len(weights) != len(v.intents.labels):
        raise VersionIntegrityError(f"version {v.version}: composer smoke test failed")
    for code, index in v.indexes.items():
        if len(index.ids):
            ids, _, _ = index.search(index.matrix[0].copy(), 5, np.empty(0, np.int64))
            if not np.isin(ids, index.ids).all():
                raise VersionIntegrityError(
                    f"version {v.version}: index of {v.domains[code]} returns foreign ids")
    if v.encoder is not None:
        parts = v.encoder.adapt(v.encoder.semantic(["smoke test"]), 0)
        if parts["full"].shape != (1, v.dim):
            raise VersionIntegrityError(f"version {v.version}: cold-start encoder smoke failed")


def load_version(store: VersionStore, version: str, knobs: SearchKnobs) -> LoadedVersion:
    """Verify, load and smoke-test ``version``; raise VersionIntegrityError when it is unfit."""
    manifest = store.verify(version)
    _check_manifest(manifest)
    base = store.path(version)
    d, p = manifest.dims["embedding"], manifest.params
    try:
        items = load_items(base, manifest.files, manifest.domains, d, int(p["top_m"]))
        intents = read_intents(base / layout.INTENTS, d)
        users = load_users(base, manifest.files, manifest.domains, d)
    except (OSError, KeyError, ValueError) as exc:  # pyarrow errors derive from these
        raise VersionIntegrityError(f"version {version}: unreadable table: {exc}") from exc
    if manifest.counts.get("items", len(items)) != len(items):
        raise VersionIntegrityError(f"version {version}: {len(items)} items, manifest says "
                                    f"{manifest.counts['items']}")
    has_encoder = layout.ENCODER_ONNX in manifest.files and layout.ADAPTER_ONNX in manifest.files
    loaded = LoadedVersion(
        manifest=manifest, items=items, intents=intents, users=users,
        composer=Composer(base / layout.COMPOSER_ONNX, int(p["composer_max_len"]), items),
        encoder=ColdStartEncoder(base / layout.ENCODER_DIR, base / layout.ADAPTER_ONNX)
        if has_encoder else None,
        indexes=_indexes(base, manifest, items, knobs),
    )
    _smoke(loaded)
    return loaded
