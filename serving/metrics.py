"""Prometheus metrics of one server, in a registry of its own (several servers per process in
tests never collide); exported over HTTP when ``serving.metrics_port`` is set."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client import values as _values

__all__ = ["Metrics"]

BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
           1.0, 2.5, 5.0)


def _in_process_values() -> None:
    """Importing Feast sets PROMETHEUS_MULTIPROCESS_DIR, which switches prometheus_client to
    mmap-file values keyed by metric name and pid: every server in the process would then
    share one set of counters. Ours live in a registry per server, so in-process values."""
    _values.ValueClass = _values.MutexValue


class Metrics:
    def __init__(self) -> None:
        _in_process_values()
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram("xemb_request_latency_seconds", "Handler latency per method",
                                 ["method"], buckets=BUCKETS, registry=r)
        self.requests = Counter("xemb_requests", "Calls by method and status code",
                                ["method", "code"], registry=r)
        self.errors = Counter("xemb_errors", "Failed calls by method and status code",
                              ["method", "code"], registry=r)
        self.in_flight = Gauge("xemb_in_flight_requests", "Calls being handled", registry=r)
        self.admitted = Gauge("xemb_admitted_calls", "Calls admitted and not finished "
                              "(queued or running; at most max_concurrent_rpcs)", registry=r)
        self.version = Gauge("xemb_version_info", "1 for the version being served",
                             ["version"], registry=r)
        self._served: str | None = None
        self._ok: dict[str, tuple[Histogram, Counter]] = {}
        self.refused = Counter("xemb_version_refused", "Versions refused at load",
                               registry=r)

    def observe(self, method: str, code: str, seconds: float) -> None:
        children = self._ok.get(method) if code == "OK" else None
        if children is None:
            children = (self.latency.labels(method), self.requests.labels(method, code))
            if code == "OK":
                self._ok[method] = children  # the hot path skips the label lookups
            else:
                self.errors.labels(method, code).inc()
        children[0].observe(seconds)
        children[1].inc()

    def serving(self, version: str) -> None:
        """1 for ``version``, 0 for those served before (no ``clear``: multiprocess-safe)."""
        if self._served and self._served != version:
            self.version.labels(self._served).set(0)
        self.version.labels(version).set(1)
        self._served = version

    def serve_http(self, host: str, port: int) -> int:
        """Start the /metrics endpoint; return the port it bound."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return server.server_port
