"""The xemb.v1.EmbeddingService methods: messages in, checks, operations, messages out.

Each method takes the version reference once (``self.holder.get``) and uses it to the end, so a
hot swap never changes a response half-way. Errors are raised, never caught here: the status
interceptor maps them.
"""

from __future__ import annotations

import json
import threading

import grpc
import numpy as np

from xemb.errors import Cancelled, DeadlineExceeded, InvalidArgument, ResourceExhausted
from xemb.serving import batch, ops
from xemb.serving import validation as check
from xemb.serving.holder import VersionHolder
from xemb.serving.version import LoadedVersion
from xemb.serving.wire import to_tensor
from xemb.settings.serving import ServingConfig
from xemb.store import Manifest
from xemb.v1 import xemb_pb2 as pb
from xemb.v1 import xemb_pb2_grpc as pb_grpc

__all__ = ["EmbeddingServicer", "deadline_guard"]


def deadline_guard(context: grpc.ServicerContext):
    """A callable that raises once the caller gave up: DeadlineExceeded when its deadline
    passed, Cancelled when it cancelled the call or went away."""
    def alive() -> None:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceeded("deadline expired before the work finished")
        if not context.is_active():
            raise Cancelled("the caller cancelled the call")
    return alive


class EmbeddingServicer(pb_grpc.EmbeddingServiceServicer):
    def __init__(self, holder: VersionHolder, config: ServingConfig) -> None:
        self.holder, self.cfg = holder, config
        self._encode_slots = threading.BoundedSemaphore(config.max_concurrent_encodes)

    def GetItemEmbeddings(self, request, context):
        v = self.holder.get(request.version)
        ids = check.ids(request.item_ids, "item_ids", self.cfg.max_ids)
        vectors, found, domains = ops.embeddings(v, ids, check.part(request.part))
        return pb.GetItemEmbeddingsResponse(vectors=to_tensor(vectors), found=found.tolist(),
                                            version=v.version,
                                            domains=v.domain_names[domains].tolist())

    def _compose(self, v: LoadedVersion, request: pb.ComposeUserIntentRequest, target: int,
                 prefix: str = "") -> ops.Composed:
        return batch.compose_row(v, batch.user_row(v, request, target, self.cfg, prefix))

    def ComposeUserIntent(self, request, context):
        v = self.holder.get(request.version)
        target = check.domain(v, request.target_domain, "target_domain")
        out = self._compose(v, request, target)
        source = pb.INTENT_SOURCE_STORED if out.stored else pb.INTENT_SOURCE_COMPOSED
        return pb.ComposeUserIntentResponse(
            user_vector=to_tensor(out.vector), intents=batch.intent_msg(out.intents),
            version=v.version, source=source, unknown_item_ids=out.unknown.tolist(),
            items_used=out.used, intent_entropy=out.entropy,
            intent_entropy_ratio=out.entropy_ratio)

    def Retrieve(self, request, context):
        v = self.holder.get(request.version)
        target = check.domain(v, request.domain, "domain")
        k = check.k(request.k, self.cfg)
        exclude = check.ids(request.exclude_ids, "exclude_ids", self.cfg.max_ids,
                            allow_empty=True)
        query = self._query(v, request, target)
        if request.WhichOneof("query") == "item_id":
            exclude = np.append(exclude, np.int64(request.item_id))
        ids, scores, exact = ops.retrieve(v, query, target, k, exclude)
        return pb.RetrieveResponse(item_ids=ids.tolist(), scores=scores.tolist(),
                                   version=v.version, exact=exact)

    def _query(self, v: LoadedVersion, request: pb.RetrieveRequest, target: int) -> np.ndarray:
        kind = request.WhichOneof("query")
        if kind == "vector":
            return check.query_vector(v, request.vector, target)
        if kind == "item_id":
            return ops.item_query(v, request.item_id)
        if kind == "user":
            return self._compose(v, request.user, target, "user.").vector
        raise InvalidArgument("set one of vector, item_id, user", field="query")

    def ComposeUserIntentBatch(self, request, context):
        v = self.holder.get(request.version)
        return batch.compose_batch(v, request, self.cfg, deadline_guard(context))

    def RetrieveBatch(self, request, context):
        v = self.holder.get(request.version)
        return batch.retrieve_batch(v, request, self.cfg, deadline_guard(context))

    def EncodeItems(self, request, context):
        v = self.holder.get(request.version)
        target = check.domain(v, request.domain, "domain")
        texts = check.texts(request.texts, self.cfg)
        if not self._encode_slots.acquire(blocking=False):
            raise ResourceExhausted(f"{self.cfg.max_concurrent_encodes} EncodeItems calls "
                                    "already running; retry later")
        try:
            parts = ops.encode(v, texts, target, self.cfg.encode_batch_size,
                               deadline_guard(context))
        finally:
            self._encode_slots.release()
        return pb.EncodeItemsResponse(**{p: to_tensor(a) for p, a in parts.items()},
                                      version=v.version)

    def _info(self, m: Manifest, current: str | None) -> pb.VersionInfo:
        loaded = m.version in self.holder.loaded_ids()
        return pb.VersionInfo(
            version=m.version, created_at=m.created_at, domains=m.domains, dims=m.dims,
            counts=m.counts, serving=m.version == self.holder.current.version, loaded=loaded,
            current=m.version == current,
            params_json=json.dumps(m.params, sort_keys=True, default=str))

    def GetVersion(self, request, context):
        v = self.holder.get(request.version)
        return self._info(v.manifest, self.holder.store.current_or_none())

    def ListVersions(self, request, context):
        store = self.holder.store
        current = store.current_or_none()
        infos = [self._info(store.manifest(v), current) for v in store.list_ids()]
        return pb.ListVersionsResponse(versions=infos, serving=self.holder.current.version)
