"""The overload ramp: only OK or RESOURCE_EXHAUSTED at any concurrency, every refusal fast
and counted by the server."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.reliability.overload import ALLOWED, ramp
from tests.reliability.serving_env import served
from xemb.serving import ops

pytestmark = pytest.mark.reliability


def test_overload_ramp_is_refused_fast_and_counted(tmp_path: Path, monkeypatch) -> None:
    real, slow = ops.embeddings, threading.Event()

    def embeddings(v, ids, part):  # simulated work: 5 ms a call keeps 2 places busy
        slow.wait(0.005)
        return real(v, ids, part)

    monkeypatch.setattr(ops, "embeddings", embeddings)
    with served(tmp_path, max_concurrent_rpcs=2, max_workers=2) as (server, client, hints):
        steps = ramp(client.channel, list(hints.ids[:20]), steps=(1, 2, 8, 32), seconds=1.0)
        for figures in steps:
            assert figures.unexpected == 0, figures.examples
            assert set(figures.codes) <= ALLOWED
            assert figures.codes["OK"] > 0
        assert steps[0].codes["RESOURCE_EXHAUSTED"] == 0  # one caller is never refused
        assert steps[-1].codes["RESOURCE_EXHAUSTED"] > 0
        seen = sum(f.codes["RESOURCE_EXHAUSTED"] for f in steps)
        counted = server.metrics.registry.get_sample_value(
            "xemb_errors_total", {"method": "GetItemEmbeddings", "code": "RESOURCE_EXHAUSTED"})
        assert counted == seen
        refusal_ms = sorted(ms for f in steps for ms in f.latencies)  # all calls, OK included
        assert refusal_ms[int(0.99 * (len(refusal_ms) - 1))] < 1.0  # p99 under a second
        assert client.health() == "SERVING"
