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

from tests.helpers.synthetic_serving import publish_synthetic, running
from tests.helpers.wait import wait_for
from xemb.errors import DeadlineExceeded, ResourceExhausted
from xemb.serving import ops
from xemb.serving.client import XembClient
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
    opened, calls = gate
    with running(root, max_concurrent_rpcs=2, max_workers=4) as (server, client):
        busy = [client._stub.GetItemEmbeddings.future(
            ops_request([1]), timeout=10) for _ in range(2)]
        wait_for(lambda: len(calls) == 2, what="both calls inside the handler")
        start = time.perf_counter()
        for _ in range(3):
            with pytest.raises(ResourceExhausted, match="more than 2 calls at once"):
                client.get_item_embeddings([2])
        assert time.perf_counter() - start < 0.5
        assert _sample(server, "xemb_errors_total", "GetItemEmbeddings",
                       "RESOURCE_EXHAUSTED") == 3  # every refusal is counted
        assert [2] not in calls
        opened.set()
        assert all(f.result().version for f in busy)
        assert client.get_item_embeddings([2]).found.all()


def _sample(server, name: str, method: str, code: str) -> float:
    return server.metrics.registry.get_sample_value(
        name, {"method": method, "code": code}) or 0.0


@pytest.fixture()
def slow_encoder(monkeypatch):
    """Patches the cold-start encoder (after the server loaded): each batch is recorded and
    the first one waits until the test opens the gate. ``contexts`` are the calls' server
    contexts, so the test can wait until the server saw the caller leave."""
    from xemb.serving import servicer
    from xemb.serving.models import ColdStartEncoder

    entered, opened, batches, contexts = threading.Event(), threading.Event(), [], []
    real, real_guard = ColdStartEncoder.semantic, servicer.deadline_guard

    def install() -> None:
        def semantic(self, texts):
            batches.append(list(texts))
            entered.set()
            opened.wait(10)
            return real(self, texts)
        monkeypatch.setattr(ColdStartEncoder, "semantic", semantic)
        monkeypatch.setattr(servicer, "deadline_guard",
                            lambda ctx: (contexts.append(ctx), real_guard(ctx))[1])

    yield install, entered, opened, batches, contexts
    opened.set()


@pytest.mark.parametrize("gives_up", ["deadline", "cancel"])
def test_encode_items_stops_when_the_caller_gives_up(root, slow_encoder, gives_up):
    install, entered, opened, batches, contexts = slow_encoder
    texts = [f"tea pot {i}" for i in range(8)]
    code = "DEADLINE_EXCEEDED" if gives_up == "deadline" else "CANCELLED"
    with running(root, encode_batch_size=1) as (server, client):
        install()
        call = client._stub.EncodeItems.future(
            pb.EncodeItemsRequest(texts=texts, domain="kitchen"),
            timeout=0.5 if gives_up == "deadline" else 10)
        assert entered.wait(10), "EncodeItems never started"
        if gives_up == "cancel":
            assert call.cancel()
        with pytest.raises(grpc.FutureCancelledError if gives_up == "cancel" else grpc.RpcError):
            call.result()
        wait_for(lambda: not contexts[0].is_active(), what="the server to see the caller go")
        opened.set()  # the first batch finishes only after the caller is gone
        wait_for(lambda: _sample(server, "xemb_errors_total", "EncodeItems", code) == 1,
                 what=f"EncodeItems to end with {code}")
        assert len(batches) == 1, f"{len(batches)} of 8 batches ran for a caller that left"
        assert client.encode_items(["tea"], "kitchen").full.shape[0] == 1


def test_encode_concurrency_is_bounded(root, monkeypatch):
    entered, opened, real = threading.Event(), threading.Event(), ops.encode
    monkeypatch.setattr(ops, "encode",
                        lambda *a: (entered.set(), opened.wait(10), real(*a))[2])
    with running(root, max_concurrent_encodes=1) as (_, client):
        first = threading.Thread(target=client.encode_items, args=(["tea"], "kitchen"))
        first.start()
        assert entered.wait(10), "the first EncodeItems never started"
        with pytest.raises(ResourceExhausted, match="EncodeItems"):
            client.encode_items(["salt"], "kitchen")
        opened.set()
        first.join(10)
        assert client.encode_items(["salt"], "kitchen").full.shape[0] == 1


def test_no_work_after_the_deadline(root, gate):
    opened, calls = gate
    with running(root, max_workers=1) as (server, client):
        blocker = client._stub.GetItemEmbeddings.future(ops_request([1]), timeout=10)
        wait_for(lambda: calls == [[1]], what="the blocker inside the handler")
        with pytest.raises(DeadlineExceeded):
            client.get_item_embeddings([2], timeout=0.2)  # queued behind the blocker
        opened.set()
        blocker.result()
        wait_for(lambda: server.metrics.registry.get_sample_value(  # the queued call's turn
            "xemb_admitted_calls") == 0, what="the queued call to leave the pool")
        assert [2] not in calls  # ...never reached the work
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
import os, sys, time
from pathlib import Path
from xemb.serving import ops
real = ops.embeddings
gate = Path(os.environ["XEMB_TEST_GATE"])
def slow(v, ids, part):  # signal entry, then hold the call until the test opens the gate
    with open(gate / "entered", "a") as f:
        f.write("x")
    deadline = time.monotonic() + 10
    while not (gate / "open").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
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
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "XEMB_TEST_GATE": str(tmp_path)})
    line = proc.stdout.readline()  # "xemb: serving <version> on host:port"
    assert "serving" in line, line
    return proc, int(line.rsplit(":", 1)[1])


def _health(client: XembClient) -> str:
    try:
        return client.health(timeout=1)
    except Exception as exc:  # noqa: BLE001 - recording what a client sees
        return getattr(exc, "code", grpc.StatusCode.UNKNOWN).name


def test_sigterm_drains_in_flight_calls(root, tmp_path):
    proc, port = _start(root, tmp_path)
    try:
        client = XembClient(f"127.0.0.1:{port}", timeout=10, retries=1)
        assert client.health() == "SERVING"
        in_flight = [client._stub.GetItemEmbeddings.future(ops_request([i]), timeout=10)
                     for i in (1, 2, 3)]
        entered = tmp_path / "entered"
        wait_for(lambda: entered.exists() and len(entered.read_text()) == 3,
                 what="three calls inside the handler")
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: _health(client) == "NOT_SERVING", timeout=5, what="NOT_SERVING")
        (tmp_path / "open").touch()  # the in-flight calls finish only now, while draining
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
            wait_for(lambda: client.get_version().version == v2, what="SIGHUP to switch")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
