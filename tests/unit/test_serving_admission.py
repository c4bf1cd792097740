"""max_concurrent_rpcs in xemb's hands: an exact count, refusals on their own threads."""

from __future__ import annotations

import threading

from tests.helpers.wait import wait_for
from xemb.serving.admission import Admission, AdmissionExecutor


def test_admits_up_to_the_limit_and_frees_places_when_calls_end():
    admission = Admission(2)
    assert [admission.enter() for _ in range(3)] == [True, True, False]
    assert admission.active == 2
    admission.leave()
    assert admission.enter() and admission.active == 2


def test_executor_routes_by_the_latest_verdict_and_releases_on_completion():
    admission = Admission(1)
    pool = AdmissionExecutor(admission, workers=1)
    release, names = threading.Event(), []

    def work() -> None:
        names.append(threading.current_thread().name)
        release.wait(5)

    try:
        assert admission.enter()
        busy = pool.submit(work)
        assert not admission.enter()  # the only place is taken
        refused = pool.submit(lambda: threading.current_thread().name)
        assert "refuse" in refused.result(timeout=5)  # did not wait behind the busy worker
        assert admission.active == 1
        release.set()
        busy.result(timeout=5)
        wait_for(lambda: admission.active == 0, 5, what="the place to be released")
        assert admission.take_verdict() is None
        pool.submit(lambda: None).result(timeout=5)  # not looked up: holds no place
        assert admission.active == 0
    finally:
        release.set()
        pool.shutdown()

