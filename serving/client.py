"""Typed Python client: NumPy arrays out, a deadline on every call, retries only when safe.

Every method is a read without side effects, so a call that never reached a handler
(UNAVAILABLE: connection refused, server draining) is retried by gRPC's own retry policy, within
the same deadline. Nothing else is retried: INVALID_ARGUMENT stays wrong, RESOURCE_EXHAUSTED
means back off, and DEADLINE_EXCEEDED has already spent the caller's budget. Failures come back
as the :mod:`xemb.errors` class that matches the status code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from xemb import errors
from xemb.serving.interceptors import FIELD_KEY
from xemb.serving.wire import from_tensor, to_tensor
from xemb.v1 import xemb_pb2 as pb
from xemb.v1 import xemb_pb2_grpc as pb_grpc

__all__ = ["XembClient", "ItemEmbeddings", "UserIntent", "Intent", "Retrieved",
           "EncodedItems", "error_from_rpc", "UserQuery", "RowError", "UserIntents",
           "RetrievedBatch"]

SERVICE = "xemb.v1.EmbeddingService"
PARTS = {"full": pb.PART_FULL, "transferable": pb.PART_TRANSFERABLE,
         "residual": pb.PART_RESIDUAL}
_ERRORS: dict[grpc.StatusCode, type[errors.XembError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.UNAUTHENTICATED: errors.Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: errors.Unauthenticated,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
    grpc.StatusCode.CANCELLED: errors.Cancelled,
}


def _retry_config(attempts: int) -> str:
    policy = {"maxAttempts": attempts, "initialBackoff": "0.05s", "maxBackoff": "1s",
              "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}
    return json.dumps({"methodConfig": [{"name": [{"service": SERVICE}],
                                         "retryPolicy": policy}]})


def error_from_rpc(exc: grpc.RpcError) -> errors.XembError:
    """The xemb error for a failed call; ``.code`` is the status, ``.field`` the bad field."""
    code = exc.code()
    err = _ERRORS.get(code, errors.XembError)(exc.details() or code.name)
    err.code = code  # type: ignore[attr-defined]
    trailing = dict(exc.trailing_metadata() or ())
    err.field = trailing.get(FIELD_KEY)  # type: ignore[attr-defined]
    return err


@dataclass(frozen=True)
class ItemEmbeddings:
    vectors: np.ndarray
    """float32 [n, d]; zero rows where ``found`` is False."""
    found: np.ndarray
    domains: Sequence[str]
    """Domain of each id ("" when not found)."""
    version: str


@dataclass(frozen=True)
class Intent:
    intent_id: int
    label: str
    weight: float
    domain_label: str = ""
    """Its most central titles within the target domain."""


@dataclass(frozen=True)
class RowError:
    """Why one row of a batch got no answer (the status a single call would have got)."""

    code: str
    field: str
    message: str


def _row_error(msg: pb.RowError) -> RowError | None:
    return RowError(msg.code, msg.field, msg.message) if msg.code else None


@dataclass(frozen=True)
class UserQuery:
    """One user of a batch: a history (oldest first) and/or a known user id."""

    history: Sequence[int] | np.ndarray | None = None
    target_domain: str = ""
    """Ignored by ``retrieve_batch`` (its ``domain`` is the target)."""
    user_id: str = ""
    domains: Sequence[str] | None = None
    timestamps: Sequence[int] | None = None
    top_intents: int = 0

    def message(self) -> pb.ComposeUserIntentRequest:
        return _user_request(self.history, self.user_id, self.target_domain, self.domains,
                             self.timestamps, self.top_intents, "")


@dataclass(frozen=True)
class UserIntent:
    vector: np.ndarray
    intents: list[Intent]
    source: str
    """``composed`` (from the history) or ``stored`` (the known user's vector)."""
    unknown_item_ids: np.ndarray
    items_used: int
    version: str
    intent_entropy: float = 0.0
    """Entropy (nats) of the composed intent weights over the intents that got votes."""
    intent_entropy_ratio: float = 0.0
    """``intent_entropy / log(#voted intents)``: 1 = flat weights, 0 = one intent."""
    error: RowError | None = None
    """Batch rows only: set when the row got no vector (then ``vector`` is zero)."""


@dataclass(frozen=True)
class UserIntents:
    """A batch composition: ``vectors[i]`` is ``results[i].vector``."""

    vectors: np.ndarray
    results: list[UserIntent]
    version: str


@dataclass(frozen=True)
class Retrieved:
    item_ids: np.ndarray
    scores: np.ndarray
    exact: bool
    version: str
    error: RowError | None = None
    """Batch rows only: set when the row had no query (unknown user or item)."""


@dataclass(frozen=True)
class RetrievedBatch:
    results: list[Retrieved]
    version: str


@dataclass(frozen=True)
class EncodedItems:
    full: np.ndarray
    transferable: np.ndarray
    residual: np.ndarray
    version: str


def _history(item_ids: Sequence[int] | np.ndarray | None, domains: Sequence[str] | None,
             timestamps: Sequence[int] | None) -> pb.History:
    return pb.History(item_ids=np.asarray(item_ids if item_ids is not None else [],
                                          np.int64).tolist(),
                      domains=list(domains or []), timestamps=list(timestamps or []))


def _user_request(history, user_id, target_domain, domains, timestamps, top_intents,
                  version) -> pb.ComposeUserIntentRequest:
    return pb.ComposeUserIntentRequest(history=_history(history, domains, timestamps),
                                       user_id=user_id, target_domain=target_domain,
                                       top_intents=top_intents, version=version)


class XembClient:
    """One channel to an xemb server; use as a context manager or call ``close()``."""

    def __init__(self, target: str, *, timeout: float = 2.0, token: str | None = None,
                 root_certificates: bytes | None = None, client_cert: bytes | None = None,
                 client_key: bytes | None = None, tls: bool | None = None,
                 server_name: str | None = None, retries: int = 3,
                 max_message_bytes: int = 64 << 20) -> None:
        options: list[tuple[str, Any]] = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.enable_retries", int(retries > 1))]
        if retries > 1:
            options.append(("grpc.service_config", _retry_config(retries)))
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        if tls or (tls is None and (root_certificates or client_cert)):
            creds = grpc.ssl_channel_credentials(root_certificates, client_key, client_cert)
            self.channel = grpc.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._stub = pb_grpc.EmbeddingServiceStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> XembClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, request, timeout: float | None):
        try:
            return getattr(self._stub, method)(request, timeout=timeout or self.timeout,
                                               metadata=self._metadata)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc

    def get_item_embeddings(self, item_ids: Sequence[int] | np.ndarray, part: str = "full", *,
                            version: str = "", timeout: float | None = None) -> ItemEmbeddings:
        req = pb.GetItemEmbeddingsRequest(item_ids=np.asarray(item_ids, np.int64).tolist(),
                                          part=PARTS[part], version=version)
        r = self._call("GetItemEmbeddings", req, timeout)
        return ItemEmbeddings(from_tensor(r.vectors, "vectors"), np.array(r.found, bool),
                              r.domains, r.version)

    def compose_user_intent(self, history: Sequence[int] | np.ndarray | None = None, *,
                            target_domain: str, user_id: str = "",
                            domains: Sequence[str] | None = None,
                            timestamps: Sequence[int] | None = None, top_intents: int = 0,
                            version: str = "", timeout: float | None = None) -> UserIntent:
        req = _user_request(history, user_id, target_domain, domains, timestamps, top_intents,
                            version)
        r = self._call("ComposeUserIntent", req, timeout)
        return UserIntent(
            vector=from_tensor(r.user_vector, "user_vector"),
            intents=[Intent(i.intent_id, i.label, i.weight, i.domain_label) for i in r.intents],
            source=pb.IntentSource.Name(r.source).removeprefix("INTENT_SOURCE_").lower(),
            unknown_item_ids=np.array(r.unknown_item_ids, np.int64), items_used=r.items_used,
            version=r.version, intent_entropy=r.intent_entropy,
            intent_entropy_ratio=r.intent_entropy_ratio)

    def retrieve(self, domain: str, k: int = 10, *, vector: np.ndarray | None = None,
                 item_id: int | None = None, history: Sequence[int] | None = None,
                 user_id: str = "", exclude_ids: Sequence[int] = (), version: str = "",
                 timeout: float | None = None) -> Retrieved:
        """Top-k of ``domain`` for one query: a vector, an item id, or a history/user id."""
        req = pb.RetrieveRequest(domain=domain, k=k, exclude_ids=list(exclude_ids),
                                 version=version)
        if vector is not None:
            req.vector.CopyFrom(to_tensor(vector))
        elif item_id is not None:
            req.item_id = int(item_id)
        elif history is not None or user_id:
            req.user.CopyFrom(_user_request(history, user_id, domain, None, None, 0, ""))
        r = self._call("Retrieve", req, timeout)
        return Retrieved(np.array(r.item_ids, np.int64), np.array(r.scores, np.float32),
                         r.exact, r.version)

    def compose_user_intents(self, users: Sequence[UserQuery], *, version: str = "",
                             timeout: float | None = None) -> UserIntents:
        """Many users in one call, all from one version (ComposeUserIntentBatch)."""
        req = pb.ComposeUserIntentBatchRequest(requests=[u.message() for u in users],
                                               version=version)
        r = self._call("ComposeUserIntentBatch", req, timeout)
        vectors = from_tensor(r.user_vectors, "user_vectors")
        results = [UserIntent(
            vector=vectors[i],
            intents=[Intent(i.intent_id, i.label, i.weight, i.domain_label) for i in row.intents],
            source=pb.IntentSource.Name(row.source).removeprefix("INTENT_SOURCE_").lower(),
            unknown_item_ids=np.array(row.unknown_item_ids, np.int64),
            items_used=row.items_used, version=r.version, intent_entropy=row.intent_entropy,
            intent_entropy_ratio=row.intent_entropy_ratio, error=_row_error(row.error))
            for i, row in enumerate(r.results)]
        return UserIntents(vectors, results, r.version)

    def retrieve_batch(self, domain: str, k: int = 10, *, vectors: np.ndarray | None = None,
                       item_ids: Sequence[int] | None = None,
                       users: Sequence[UserQuery] | None = None,
                       exclude_ids: Sequence[Sequence[int]] | None = None, version: str = "",
                       timeout: float | None = None) -> RetrievedBatch:
        """Top-k of ``domain`` for many queries in one call, all from one version: rows of
        ``vectors`` [n, d], or ``item_ids``, or ``users``; ``exclude_ids`` one list per row."""
        req = pb.RetrieveBatchRequest(
            domain=domain, k=k, version=version,
            exclude_ids=[pb.ItemIdList(ids=list(e)) for e in exclude_ids or []])
        if vectors is not None:
            req.vectors.CopyFrom(to_tensor(np.asarray(vectors, np.float32).reshape(
                len(vectors), -1)))
        elif item_ids is not None:
            req.item_ids.ids.extend(np.asarray(item_ids, np.int64).tolist())
        elif users is not None:
            req.users.requests.extend(u.message() for u in users)
        r = self._call("RetrieveBatch", req, timeout)
        return RetrievedBatch([Retrieved(np.array(x.item_ids, np.int64),
                                         np.array(x.scores, np.float32), x.exact, r.version,
                                         _row_error(x.error)) for x in r.results], r.version)

    def encode_items(self, texts: Sequence[str], domain: str, *, version: str = "",
                     timeout: float | None = None) -> EncodedItems:
        req = pb.EncodeItemsRequest(texts=list(texts), domain=domain, version=version)
        r = self._call("EncodeItems", req, timeout or max(self.timeout, 30.0))
        return EncodedItems(from_tensor(r.full, "full"),
                            from_tensor(r.transferable, "transferable"),
                            from_tensor(r.residual, "residual"), r.version)

    def get_version(self, version: str = "", *, timeout: float | None = None) -> pb.VersionInfo:
        return self._call("GetVersion", pb.GetVersionRequest(version=version), timeout)

    def list_versions(self, *, timeout: float | None = None) -> pb.ListVersionsResponse:
        return self._call("ListVersions", pb.ListVersionsRequest(), timeout)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """``SERVING``, ``NOT_SERVING``, ... of ``service`` ("" = the whole server)."""
        try:
            r = self._health.Check(health_pb2.HealthCheckRequest(service=service),
                                   timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc
        return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
