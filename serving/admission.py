"""``max_concurrent_rpcs``, enforced by xemb so that every refusal is counted.

grpc's own ``maximum_concurrent_rpcs`` refuses a call after the interceptor ran and outside
of it, so a refusal never reached ``xemb_errors_total``. Here the interceptor asks
:meth:`Admission.enter` for every call (grpc calls it on its one serving thread, right before
it hands the call to the thread pool). An admitted call holds its place until its pool task
ends; a refused one gets a handler that answers RESOURCE_EXHAUSTED through the interceptor,
and :class:`AdmissionExecutor` runs that handler on a small pool of its own, so a refusal
never waits behind the admitted calls (it costs microseconds, as grpc's did).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

__all__ = ["Admission", "AdmissionExecutor"]


class Admission:
    """A count of admitted calls, bounded by ``limit``; the verdict of the latest call
    waits for the executor's next ``submit`` (same thread, same grpc lock)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._active = 0
        self._lock = threading.Lock()
        self._verdict = threading.local()

    @property
    def active(self) -> int:
        return self._active

    def enter(self) -> bool:
        """Admit the call being looked up now, or refuse it (False)."""
        with self._lock:
            admitted = self._active < self.limit
            self._active += admitted
        self._verdict.value = admitted
        return admitted

    def leave(self, _: object = None) -> None:
        with self._lock:
            self._active -= 1

    def take_verdict(self) -> bool | None:
        """The verdict on the call whose task is being submitted (None: not looked up)."""
        value = getattr(self._verdict, "value", None)
        self._verdict.value = None
        return value


class AdmissionExecutor(Executor):
    """The server's thread pool: admitted calls on ``workers`` threads, refusals beside."""

    def __init__(self, admission: Admission, workers: int, prefix: str = "xemb-rpc") -> None:
        self.admission = admission
        self._work = ThreadPoolExecutor(workers, thread_name_prefix=prefix)
        self._refusals = ThreadPoolExecutor(2, thread_name_prefix=f"{prefix}-refuse")

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        verdict = self.admission.take_verdict()
        if verdict is False:
            return self._refusals.submit(fn, *args, **kwargs)
        future = self._work.submit(fn, *args, **kwargs)
        if verdict:
            future.add_done_callback(self.admission.leave)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._work.shutdown(wait, cancel_futures=cancel_futures)
        self._refusals.shutdown(wait, cancel_futures=cancel_futures)
