"""Fuzzing every request field of every method: never INTERNAL, never a non-finite number,
and the server healthy and exact afterwards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.reliability.grpc_fuzz import ALLOWED, METHODS, fuzz_grpc
from tests.reliability.serving_env import served

pytestmark = pytest.mark.reliability


def test_fuzzed_requests_get_client_errors_only(tmp_path: Path) -> None:
    with served(tmp_path) as (server, client, hints):
        before = client.get_item_embeddings(list(hints.ids[:5])).vectors.copy()
        figures = fuzz_grpc(client.channel, hints, examples=600)
        assert figures.unexpected == 0, figures.examples
        assert set(figures.codes) <= ALLOWED
        assert figures.codes["OK"] > 50 and figures.codes["INVALID_ARGUMENT"] > 50  # both reached
        assert client.health() == "SERVING"
        np.testing.assert_array_equal(client.get_item_embeddings(list(hints.ids[:5])).vectors,
                                      before)
        registry = server.metrics.registry
        for method in METHODS:
            assert not registry.get_sample_value(
                "xemb_errors_total", {"method": method, "code": "INTERNAL"})
        refused = sum(n for code, n in figures.codes.items() if code != "OK")
        counted = sum(registry.get_sample_value(
            "xemb_errors_total", {"method": m, "code": c}) or 0
            for m in METHODS for c in ALLOWED - {"OK"})
        assert counted == refused  # every refusal is in xemb_errors_total
