"""Building and running the gRPC server.

``create_server(config, root) -> (server, port)`` builds a bound, unstarted server (tests use
port 0); ``serve`` runs one until SIGTERM/SIGINT: health goes NOT_SERVING, new calls are refused,
in-flight calls get ``shutdown_grace_s`` to finish. SIGHUP re-reads CURRENT at once.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from pathlib import Path

import faiss
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from xemb.errors import ConfigError, Unavailable
from xemb.serving.admission import Admission, AdmissionExecutor
from xemb.serving.holder import VersionHolder
from xemb.serving.interceptors import ServiceInterceptor, TokenAuth
from xemb.serving.metrics import Metrics
from xemb.serving.retrieval import SearchKnobs
from xemb.serving.servicer import EmbeddingServicer
from xemb.serving.version import load_version
from xemb.settings import XembConfig
from xemb.settings.serving import ServingConfig
from xemb.store import VersionStore
from xemb.v1 import xemb_pb2, xemb_pb2_grpc

__all__ = ["XembServer", "create_server", "serve", "SERVICE_NAME"]

log = logging.getLogger("xemb.serving")
SERVICE_NAME = xemb_pb2.DESCRIPTOR.services_by_name["EmbeddingService"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class XembServer:
    """The gRPC server plus what runs beside it: versions, health, metrics."""

    def __init__(self, server: grpc.Server, holder: VersionHolder,
                 health_servicer: health.HealthServicer, metrics: Metrics,
                 config: ServingConfig, port: int) -> None:
        self.grpc, self.holder, self.health = server, holder, health_servicer
        self.metrics, self.config, self.port = metrics, config, port

    def start(self) -> None:
        self.grpc.start()
        self.holder.start_polling(self.config.poll_interval_s)
        for name in ("", SERVICE_NAME):
            self.health.set(name, SERVING)

    def reload(self) -> bool:
        """Follow CURRENT now (also retrying versions refused before)."""
        return self.holder.refresh(retry_refused=True)

    def stop(self, grace: float | None = None, drain_delay: float = 0.0) -> threading.Event:
        """NOT_SERVING first, then refuse new calls; in-flight ones get ``grace`` seconds."""
        self.health.enter_graceful_shutdown()
        if drain_delay > 0:
            time.sleep(drain_delay)
        self.holder.stop()
        return self.grpc.stop(grace)

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self.grpc.wait_for_termination(timeout)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"serving.{what}: cannot read {path}: {exc.strerror}") from exc


def _credentials(cfg: ServingConfig) -> grpc.ServerCredentials | None:
    if cfg.tls_cert_file is None or cfg.tls_key_file is None:
        return None
    pair = [(_read(cfg.tls_key_file, "tls_key_file"), _read(cfg.tls_cert_file, "tls_cert_file"))]
    if cfg.tls_client_ca_file is None:
        return grpc.ssl_server_credentials(pair)
    return grpc.ssl_server_credentials(pair, _read(cfg.tls_client_ca_file, "tls_client_ca_file"),
                                       require_client_auth=True)


def _holder(config: XembConfig, root: Path | None, metrics: Metrics) -> VersionHolder:
    cfg = config.serving
    store = VersionStore(root or config.build.root)
    knobs = SearchKnobs(ef_search=cfg.ef_search, nprobe=cfg.nprobe, ann_max_k=cfg.ann_max_k,
                        exact=cfg.exact_search)
    holder = VersionHolder(store, lambda v: load_version(store, v, knobs), keep=cfg.keep_loaded,
                           on_switch=lambda v: metrics.serving(v.version),
                           on_refuse=lambda v, why: metrics.refused.inc())
    holder.switch_to(store.serving_target())  # fail fast: nothing to serve, or it is broken
    return holder


def _grpc_server(cfg: ServingConfig, metrics: Metrics) -> grpc.Server:
    """``max_concurrent_rpcs`` is enforced by the interceptor (counted), not by grpc."""
    auth = TokenAuth.from_file(cfg.auth_tokens_file) if cfg.auth_tokens_file else None
    admission = Admission(cfg.max_concurrent_rpcs)
    metrics.admitted.set_function(lambda: admission.active)
    return grpc.server(
        AdmissionExecutor(admission, cfg.max_workers),
        interceptors=[ServiceInterceptor(metrics, auth, admission)],
        options=[("grpc.max_receive_message_length", cfg.max_receive_message_bytes),
                 ("grpc.max_send_message_length", cfg.max_send_message_bytes),
                 ("grpc.so_reuseport", 0)])


def create_server(config: XembConfig, root: str | Path | None = None, *,
                  port: int | None = None) -> tuple[XembServer, int]:
    """Load the current version and bind a server (not started); return it and its port."""
    cfg = config.serving
    faiss.omp_set_num_threads(1)  # one query per call: OpenMP teams only add spin and hand-offs
    metrics = Metrics()
    holder = _holder(config, Path(root) if root else None, metrics)
    server = _grpc_server(cfg, metrics)
    xemb_pb2_grpc.add_EmbeddingServiceServicer_to_server(EmbeddingServicer(holder, cfg), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, NOT_SERVING)
    if cfg.reflection:
        from grpc_reflection.v1alpha import reflection

        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = f"{cfg.host}:{cfg.port if port is None else port}"
    creds = _credentials(cfg)
    try:
        bound = server.add_secure_port(address, creds) if creds else \
            server.add_insecure_port(address)
    except RuntimeError as exc:
        raise Unavailable(f"cannot bind {address}: {exc}") from exc
    return XembServer(server, holder, health_servicer, metrics, cfg, bound), bound


def serve(config: XembConfig, root: str | Path | None = None, *,
          port: int | None = None) -> int:
    """Run until SIGTERM/SIGINT, then drain; return the process exit status."""
    server, bound = create_server(config, root, port=port)
    cfg = config.serving
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=server.reload,
                                                              daemon=True).start())
    server.start()
    if cfg.metrics_port is not None:
        mport = server.metrics.serve_http(cfg.host, cfg.metrics_port)
        log.info("metrics on http://%s:%d/metrics", cfg.host, mport)
    print(f"xemb: serving {server.holder.current.version} on {cfg.host}:{bound}",
          file=sys.stdout, flush=True)
    while not stop.wait(0.5):
        pass
    log.info("draining (grace %.1fs)", cfg.shutdown_grace_s)
    server.stop(cfg.shutdown_grace_s, cfg.drain_delay_s).wait()
    print("xemb: stopped", flush=True)
    return 0
