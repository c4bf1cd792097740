"""Overload, deadlines, metrics and SIGTERM draining."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
import pytest
import yaml

from serving import ops
from serving.client import XembClient
from tests.helpers.synthetic_serving import publish_synthetic, running
from xemb.errors import DeadlineExceeded, ResourceExhausted
from xemb.v1 import xemb_pb2 as pb

pytestmark = pytest.mark.integration


def ops_request(ids):
    return pb.GetItemEmbeddingsRequest(item_ids=ids)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("life")
    publish_synthetic(path, n_items=200)
    return path


@pytest.fixture()
def gate(monkeypatch):
    """GetItemEmbeddings for id 1 blocks until the gate opens; every call's ids are recorded."""
    opened, calls, real = threading.Event(), [], ops.embeddings

    def slow(v, ids, part):
        calls.append(ids.tolist())
        if ids.tolist() == [1]:
            opened.wait(10)
        return real(v, ids, part)

    monkeypatch.setattr(ops, "embeddings", slow)
    yield opened, calls
    opened.set()


def test_excess_calls_are_refused_fast(root, gate):
    opened, _ = gate
    with running(root, max_concurrent_rpcs=2, max_workers=4) as (_, client):
        busy = [client._stub.GetItemEmbeddings.future(
            ops_request([1]), timeout=10) for _ in range(2)]
        time.sleep(0.2)
        start = time.perf_counter()
        with pytest.raises(ResourceExhausted):
            client.get_item_embeddings([2])
        assert time.perf_counter() - start < 0.5
        opened.set()
        assert all(f.result().version for f in busy)
        assert client.get_item_embeddings([2]).found.all()


def test_encode_concurrency_is_bounded(root, monkeypatch):
    opened, real = threading.Event(), ops.encode
    monkeypatch.setattr(ops, "encode", lambda *a: (opened.wait(10), real(*a))[1])
    with running(root, max_concurrent_encodes=1) as (_, client):
        first = threading.Thread(target=client.encode_items, args=(["tea"], "kitchen"))
        first.start()
        time.sleep(0.2)
        with pytest.raises(ResourceExhausted, match="EncodeItems"):
            client.encode_items(["salt"], "kitchen")
        opened.set()
        first.join(10)
        assert client.encode_items(["salt"], "kitchen").full.shape[0] == 1


def test_no_work_after_the_deadline(root, gate):
    opened, calls = gate
    with running(root, max_workers=1) as (server, client):
        blocker = client._stub.GetItemEmbeddings.future(ops_request([1]), timeout=10)
        time.sleep(0.2)
        with pytest.raises(DeadlineExceeded):
            client.get_item_embeddings([2], timeout=0.2)  # queued behind the blocker
        opened.set()
        blocker.result()
        time.sleep(0.2)
        assert [2] not in calls  # the expired call never reached the work
        assert server.metrics.registry.get_sample_value(
            "xemb_requests_total", {"method": "GetItemEmbeddings", "code": "OK"}) == 1


def test_metrics_endpoint(root):
    with running(root) as (server, client):
        client.get_item_embeddings([1, 2])
        port = server.metrics.serve_http("127.0.0.1", 0)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    text = text.decode()
    assert 'xemb_request_latency_seconds_bucket{le="0.001",method="GetItemEmbeddings"}' in text
    assert 'xemb_requests_total{code="OK",method="GetItemEmbeddings"}' in text
    assert "xemb_version_info{version=" in text


SLOW_SERVE = """
import sys, time
from serving import ops
real = ops.embeddings
def slow(v, ids, part):
    time.sleep(2.0)
    return real(v, ids, part)
ops.embeddings = slow
from xemb.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _start(root, tmp_path) -> tuple[subprocess.Popen, int]:
    cfg = tmp_path / "xemb.yaml"
    cfg.write_text(yaml.safe_dump({"serving": {"port": 0, "shutdown_grace_s": 5,
                                               "drain_delay_s": 0.5, "poll_interval_s": 0}}))
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SERVE, "serve", "-c", str(cfg),
                             "--root", str(root), "--port", "0", "--log-level", "WARNING"],
                            stdout=subprocess.PIPE, text=True, env={**os.environ})
    line = proc.stdout.readline()  # "xemb: serving <version> on host:port"
    assert "serving" in line, line
    return proc, int(line.rsplit(":", 1)[1])


def test_sigterm_drains_in_flight_calls(root, tmp_path):
    proc, port = _start(root, tmp_path)
    try:
        client = XembClient(f"127.0.0.1:{port}", timeout=10, retries=1)
        assert client.health() == "SERVING"
        in_flight = [client._stub.GetItemEmbeddings.future(ops_request([i]), timeout=10)
                     for i in (1, 2, 3)]
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        seen = set()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and "UNAVAILABLE" not in seen:
            try:
                seen.add(client.health(timeout=1))
            except Exception as exc:  # noqa: BLE001 - recording what a client sees
                seen.add(getattr(exc, "code", grpc.StatusCode.UNKNOWN).name)
            time.sleep(0.02)
        assert "NOT_SERVING" in seen
        assert [list(f.result().found) for f in in_flight] == [[True]] * 3
        assert proc.wait(timeout=10) == 0
        assert "stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sighup_follows_current_at_once(tmp_path):
    from tests.helpers.synthetic_serving import clone_version

    root = tmp_path / "root"
    v1 = publish_synthetic(root, n_items=100).version
    proc, port = _start(root, tmp_path)  # poll_interval_s: 0, only SIGHUP reloads
    try:
        with XembClient(f"127.0.0.1:{port}", timeout=5) as client:
            v2 = clone_version(root, v1, scale=3.0, make_current=True).version
            assert client.get_version().version == v1
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while client.get_version().version != v2:
                assert time.monotonic() < deadline, "SIGHUP did not switch"
                time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
