"""An overload ramp: more and more concurrent callers against a bounded server.

Each step runs ``callers`` threads calling GetItemEmbeddings for ``seconds``. The property:
every call ends OK or RESOURCE_EXHAUSTED (refused at once, never queued into a timeout), and
the server's ``xemb_errors_total`` counts exactly the refusals the callers saw.
"""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np

from tests.reliability.figures import Figures
from xemb.v1 import xemb_pb2 as pb
from xemb.v1 import xemb_pb2_grpc as pb_grpc

__all__ = ["ramp", "ALLOWED"]

ALLOWED = frozenset({"OK", "RESOURCE_EXHAUSTED"})


def _caller(stub: pb_grpc.EmbeddingServiceStub, ids: list[int], until: float,
            figures: Figures, lock: threading.Lock, refusals: list[float]) -> None:
    request = pb.GetItemEmbeddingsRequest(item_ids=ids)
    while time.monotonic() < until:
        start = time.perf_counter()
        try:
            stub.GetItemEmbeddings(request, timeout=5)
            code, detail = "OK", ""
        except grpc.RpcError as exc:
            code, detail = exc.code().name, exc.details() or ""
        seconds = time.perf_counter() - start
        with lock:
            figures.record(code, seconds, expected=code in ALLOWED, example=detail)
            if code == "RESOURCE_EXHAUSTED":
                refusals.append(seconds)


def step(channel: grpc.Channel, ids: list[int], callers: int, seconds: float) -> Figures:
    figures, lock = Figures(f"overload ramp: {callers} callers"), threading.Lock()
    refusals: list[float] = []
    stub = pb_grpc.EmbeddingServiceStub(channel)
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=_caller, args=(stub, ids, until, figures, lock, refusals))
               for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    refused = figures.codes.get("RESOURCE_EXHAUSTED", 0)
    figures.notes.append(f"{refused / max(figures.calls, 1):.0%} refused")
    _caller_note(figures, refusals)
    return figures


def _caller_note(figures: Figures, refusal_seconds: list[float]) -> None:
    if refusal_seconds:
        figures.notes.append(f"refusals p99 {np.percentile(refusal_seconds, 99) * 1e3:.2f} ms")


def ramp(channel: grpc.Channel, ids: list[int], steps: tuple[int, ...] = (1, 4, 16, 64),
         seconds: float = 1.0) -> list[Figures]:
    return [step(channel, ids, n, seconds) for n in steps]
