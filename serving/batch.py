"""Many users per call: ComposeUserIntentBatch and RetrieveBatch on one loaded version.

Every row goes through the same checks and operations as the single calls (so row i of a
batch is bit-identical to the single call for it). All rows are checked before any work: a
bad row fails the call with INVALID_ARGUMENT naming it (``requests[3].history.item_ids``). A
row that is valid but has no answer (NOT_FOUND / FAILED_PRECONDITION in a single call) gets a
RowError and a zero vector instead of failing the page of users it came with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from xemb.errors import FailedPrecondition, InvalidArgument, NotFound
from xemb.serving import ops
from xemb.serving import validation as check
from xemb.serving.version import LoadedVersion
from xemb.serving.wire import to_tensor
from xemb.settings.serving import ServingConfig
from xemb.v1 import xemb_pb2 as pb

__all__ = ["compose_batch", "retrieve_batch", "compose_row", "intent_msg", "UserRow"]

RowFailure = (NotFound, FailedPrecondition)


def intent_msg(intents: list[ops.IntentRow]) -> list[pb.Intent]:
    return [pb.Intent(intent_id=i, label=label, weight=w, domain_label=dl)
            for i, label, w, dl in intents]


@dataclass(frozen=True)
class UserRow:
    """One checked composition request."""

    history: np.ndarray
    user: str
    target: int
    top: int


def user_row(v: LoadedVersion, r: pb.ComposeUserIntentRequest, target: int,
             cfg: ServingConfig, prefix: str = "") -> UserRow:
    return UserRow(check.history(v, r.history, cfg, prefix + "history"),
                   check.user_id(r.user_id, prefix + "user_id"), target,
                   check.top_intents(v, r.top_intents, prefix + "top_intents"))


def compose_row(v: LoadedVersion, row: UserRow) -> ops.Composed:
    return ops.compose(v, row.history, row.target, row.user, row.top)


def _row_error(exc: Exception, prefix: str, inner: bool = True) -> pb.RowError:
    """The row's error, with the field the exception names (within the row when ``inner``;
    else the row itself is the field, as an item id of ``item_ids.ids``)."""
    field = getattr(exc, "field", None) if inner else None
    code = "NOT_FOUND" if isinstance(exc, NotFound) else "FAILED_PRECONDITION"
    return pb.RowError(code=code, field=prefix + field if field else prefix.rstrip("."),
                       message=str(exc))


def _rows(values: Sequence, field: str, cfg: ServingConfig) -> int:
    n = len(values)
    if n == 0:
        raise InvalidArgument("must not be empty", field=field)
    if n > cfg.max_batch_rows:
        raise InvalidArgument(f"{n} rows, at most {cfg.max_batch_rows} per call", field=field)
    return n


def _needs_input(row: UserRow, prefix: str) -> None:
    if not len(row.history) and not row.user:
        raise InvalidArgument("give a history or a user_id", field=prefix + "history")


def _composed_msg(out: ops.Composed) -> pb.ComposedUser:
    source = pb.INTENT_SOURCE_STORED if out.stored else pb.INTENT_SOURCE_COMPOSED
    return pb.ComposedUser(source=source, intents=intent_msg(out.intents),
                           unknown_item_ids=out.unknown.tolist(), items_used=out.used,
                           intent_entropy=out.entropy, intent_entropy_ratio=out.entropy_ratio)


def _check_users(v: LoadedVersion, requests: Sequence[pb.ComposeUserIntentRequest],
                 field: str, cfg: ServingConfig, version: str,
                 target: int | None = None) -> list[UserRow]:
    """Every row checked up front; ``target`` None: each row names its own target domain."""
    _rows(requests, field, cfg)
    rows = []
    for i, r in enumerate(requests):
        prefix = f"{field}[{i}]."
        if target is None and r.version not in ("", v.version):
            raise InvalidArgument(f"{check.shown(r.version)} differs from the batch's version "
                                  f"{v.version!r} (leave it empty)", field=prefix + "version")
        code = check.domain(v, r.target_domain, prefix + "target_domain") \
            if target is None else target
        row = user_row(v, r, code, cfg, prefix)
        _needs_input(row, prefix)
        rows.append(row)
    return rows


def compose_batch(v: LoadedVersion, request: pb.ComposeUserIntentBatchRequest,
                  cfg: ServingConfig, alive: Callable[[], None]
                  ) -> pb.ComposeUserIntentBatchResponse:
    rows = _check_users(v, request.requests, "requests", cfg, request.version)
    vectors = np.zeros((len(rows), v.dim), np.float32)
    results = []
    for i, row in enumerate(rows):
        alive()
        try:
            out = compose_row(v, row)
        except RowFailure as exc:
            results.append(pb.ComposedUser(error=_row_error(exc, f"requests[{i}].")))
            continue
        vectors[i] = out.vector
        results.append(_composed_msg(out))
    return pb.ComposeUserIntentBatchResponse(user_vectors=to_tensor(vectors), results=results,
                                             version=v.version)


def _excludes(request: pb.RetrieveBatchRequest, n: int, cfg: ServingConfig
              ) -> list[np.ndarray]:
    lists = request.exclude_ids
    if len(lists) not in (0, n):
        raise InvalidArgument(f"{len(lists)} lists for {n} queries (give none or one per "
                              f"query)", field="exclude_ids")
    if not lists:
        return [np.empty(0, np.int64)] * n
    return [check.ids(e.ids, f"exclude_ids[{i}].ids", cfg.max_ids, allow_empty=True)
            for i, e in enumerate(lists)]


Query = Callable[[], np.ndarray]


def _given(q: np.ndarray) -> np.ndarray:
    return q


def _user_query(v: LoadedVersion, row: UserRow) -> np.ndarray:
    return compose_row(v, row).vector


def _queries(v: LoadedVersion, request: pb.RetrieveBatchRequest, target: int,
             cfg: ServingConfig) -> tuple[list[Query], list[int | None], str]:
    """Per row: how to get its query vector (may raise a row failure), the item id it must
    leave out (item queries), and the field rows are named by."""
    kind = request.WhichOneof("queries")
    if kind == "vectors":
        matrix = check.query_matrix(v, request.vectors, target, cfg.max_batch_rows)
        return [partial(_given, q) for q in matrix], [None] * len(matrix), "vectors"
    if kind == "item_ids":
        ids = check.ids(request.item_ids.ids, "item_ids.ids", cfg.max_batch_rows)
        return ([partial(ops.item_query, v, i) for i in ids.tolist()], ids.tolist(),
                "item_ids.ids")
    if kind == "users":
        rows = _check_users(v, request.users.requests, "users.requests", cfg, request.version,
                            target)
        return ([partial(_user_query, v, r) for r in rows], [None] * len(rows),
                "users.requests")
    raise InvalidArgument("set one of vectors, item_ids, users", field="queries")


def retrieve_batch(v: LoadedVersion, request: pb.RetrieveBatchRequest, cfg: ServingConfig,
                   alive: Callable[[], None]) -> pb.RetrieveBatchResponse:
    target = check.domain(v, request.domain, "domain")
    k = check.k(request.k, cfg)
    queries, own, field = _queries(v, request, target, cfg)
    excludes = _excludes(request, len(queries), cfg)
    results = []
    for i, (query, item, exclude) in enumerate(zip(queries, own, excludes, strict=True)):
        alive()
        try:
            q = query()
        except RowFailure as exc:
            results.append(pb.RetrieveResult(error=_row_error(exc, f"{field}[{i}].",
                                                              field != "item_ids.ids")))
            continue
        if item is not None:
            exclude = np.append(exclude, np.int64(item))
        ids, scores, exact = ops.retrieve(v, q, target, k, exclude)
        results.append(pb.RetrieveResult(item_ids=ids.tolist(), scores=scores.tolist(),
                                         exact=exact))
    return pb.RetrieveBatchResponse(results=results, version=v.version)
