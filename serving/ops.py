"""What each method computes, on one loaded version and already-checked NumPy inputs.

No protobuf here: the servicer translates messages in and out, so these functions are what a
batch job or a test can call directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from xemb.errors import FailedPrecondition, InvalidArgument, NotFound
from xemb.intent_stats import row_entropy
from xemb.serving.version import LoadedVersion

__all__ = ["Composed", "embeddings", "compose", "retrieve", "encode"]


def embeddings(v: LoadedVersion, ids: np.ndarray,
               part: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of ``part`` for ``ids`` (zeros where not found), found flags, domain codes."""
    rows, found = v.items.lookup(ids)
    table = v.items.parts[part]
    if found.all():
        return table[rows], found, v.items.domain[rows]
    out = np.zeros((len(ids), table.shape[1]), dtype=table.dtype)
    out[found] = table[rows[found]]
    return out, found, np.where(found, v.items.domain[rows], -1)


IntentRow = tuple[int, str, float, str]  # id, label, weight, label in the target domain


def _intent_row(v: LoadedVersion, i: int, w: float, target: int) -> IntentRow:
    per_domain = v.intents.domain_labels[i] if v.intents.domain_labels else {}
    return i, v.intents.labels[i], w, per_domain.get(v.domains[target], "")


@dataclass
class Composed:
    vector: np.ndarray
    intents: list[IntentRow]
    stored: bool
    unknown: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    used: int = 0
    entropy: float = 0.0
    """Entropy (nats) of the composed intent weights over the voted intents (0 if stored)."""
    entropy_ratio: float = 0.0
    """``entropy / log(#voted)``: 1 = flat, 0 = one intent (0 if stored)."""


def _top(v: LoadedVersion, weights: np.ndarray, n: int, target: int) -> list[IntentRow]:
    top = np.argsort(-weights, kind="stable")[:n].tolist()  # K is small: a full sort is cheap
    return [_intent_row(v, i, w, target) for i, w in zip(top, weights[top].tolist(), strict=True)]


def _stored(v: LoadedVersion, user_id: str, target: int, top: int, unknown: np.ndarray
            ) -> Composed:
    row = v.users.get(user_id, target)
    if row is None:
        raise NotFound(f"unknown user {user_id!r} for domain {v.domains[target]!r} and no "
                       f"known item in the history", field="user_id")
    n = min(top, int(v.users.top_len[row]))
    ids, weights = v.users.top_ids[row, :n].tolist(), v.users.top_w[row, :n].tolist()
    intents = [_intent_row(v, i, w, target) for i, w in zip(ids, weights, strict=True)]
    return Composed(v.users.vectors[row], intents, stored=True, unknown=unknown)


def compose(v: LoadedVersion, history: np.ndarray, target: int, user_id: str,
            top: int) -> Composed:
    """User-intent vector for ``target``: composed from the known part of ``history``, else the
    vector stored for ``user_id``. Unknown history ids are skipped and reported."""
    rows, found = v.items.lookup(history)
    unknown = history[~found]
    rows = rows[found][-v.composer.max_len:]
    if len(rows) == 0:
        if user_id:
            return _stored(v, user_id, target, top, unknown)
        if len(history):
            raise FailedPrecondition(f"none of the {len(history)} items is known in version "
                                     f"{v.version}, and no user_id", field="history.item_ids")
        raise InvalidArgument("give a history or a user_id", field="history")
    vector, weights = v.composer.run(v.composer.feed(rows, target))
    h, u = row_entropy(weights)
    return Composed(vector, _top(v, weights, top, target), stored=False, unknown=unknown,
                    used=len(rows), entropy=float(h[0]),
                    entropy_ratio=float(h[0] / u[0]) if u[0] > 0 else 0.0)


def item_query(v: LoadedVersion, item_id: int) -> np.ndarray:
    rows, found = v.items.lookup(np.array([item_id], np.int64))
    if not found[0]:
        raise NotFound(f"unknown item {item_id}", field="item_id")
    query = v.items.parts["full"][rows[0]].copy()
    scale = v.manifest.params.get("prior_scale")
    if v.manifest.params.get("prior") and scale is not None:
        query[-1] = scale  # the item's content as the query, weighted by the user-side prior
    return query


def retrieve(v: LoadedVersion, query: np.ndarray, target: int, k: int,
             exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    q = np.ascontiguousarray(query, dtype=np.float32)
    return v.indexes[target].search(q, k, exclude)


def encode(v: LoadedVersion, texts: list[str], target: int, batch: int,
           alive: Callable[[], None]) -> dict[str, np.ndarray]:
    """Cold-start vectors; ``alive`` raises when the deadline passed (checked per batch)."""
    if v.encoder is None:
        raise FailedPrecondition(f"version {v.version} has no cold-start encoder "
                                 f"(built with encoder.export_onnx: false)")
    order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths pad less
    chunks = []
    for start in range(0, len(texts), batch):
        alive()
        chunks.append(v.encoder.semantic([texts[i] for i in order[start:start + batch]]))
    semantic = np.empty_like(np.concatenate(chunks))
    semantic[order] = np.concatenate(chunks)
    alive()
    return v.encoder.adapt(semantic, target)
