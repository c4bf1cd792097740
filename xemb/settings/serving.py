"""Config section for the gRPC service (owned by ``serving``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ServingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)

    host: str = "127.0.0.1"
    """Address to bind."""
    port: int = Field(50051, ge=0, le=65535)
    """Port to bind; 0 picks a free one."""

    # ---- capacity ------------------------------------------------------------------
    max_workers: int = Field(8, ge=1, le=256)
    """Handler threads (numpy, faiss and ONNX Runtime release the GIL while they work)."""
    max_concurrent_rpcs: int = Field(64, ge=1)
    """Calls admitted at once (running + queued); the excess is refused at once with
    RESOURCE_EXHAUSTED instead of queueing without bound."""
    max_concurrent_encodes: int = Field(2, ge=1)
    """EncodeItems calls running at once (each runs a transformer); more get RESOURCE_EXHAUSTED."""
    max_receive_message_bytes: int = Field(16 << 20, ge=1024)
    """Largest request the server accepts (also the client's default)."""
    max_send_message_bytes: int = Field(64 << 20, ge=1024)
    """Largest response the server sends (also the client's default)."""

    # ---- request limits (INVALID_ARGUMENT beyond them) -----------------------------
    max_ids: int = Field(10_000, ge=1)
    """Item ids per GetItemEmbeddings call, and ids to exclude per Retrieve call."""
    max_sequence_len: int = Field(1000, ge=1)
    """History items per ComposeUserIntent call; the composer reads the most recent
    ``composer_max_len`` of them (a manifest param)."""
    max_k: int = Field(1000, ge=1)
    """Largest k a Retrieve call may ask for."""
    max_encode_texts: int = Field(256, ge=1)
    """Texts per EncodeItems call."""
    max_text_chars: int = Field(10_000, ge=1)
    """Characters per text in EncodeItems (the tokenizer truncates long texts anyway)."""
    max_batch_rows: int = Field(1000, ge=1)
    """Rows (histories, users, vectors or item ids) per ComposeUserIntentBatch or
    RetrieveBatch call; each row also obeys the single-call limits."""

    # ---- retrieval -----------------------------------------------------------------
    ann_max_k: int = Field(1000, ge=1)
    """Above this many candidates (k plus excluded ids), Retrieve searches exactly."""
    ef_search: int | None = Field(None, ge=1)
    """HNSW search breadth (raised to the candidate count when that is larger); None: the
    value publish tuned to ``index.recall_target`` for each domain (``params.search`` of the
    manifest), 256 for versions without one."""
    nprobe: int | None = Field(None, ge=1)
    """IVF lists probed per query; None: the value publish tuned for each domain, 32 for
    versions without one."""
    exact_search: bool = False
    """Always search exactly (brute-force inner product) instead of the faiss indexes."""

    # ---- versions ------------------------------------------------------------------
    poll_interval_s: float = Field(5.0, ge=0)
    """How often to look at CURRENT for a new version; 0 = only on SIGHUP."""
    keep_loaded: int = Field(2, ge=1, le=8)
    """Versions held in memory (the serving one and recent ones, for instant rollback and for
    requests that pin a version)."""
    encode_batch_size: int = Field(32, ge=1)
    """Texts per ONNX encoder run in EncodeItems."""

    # ---- lifecycle -----------------------------------------------------------------
    shutdown_grace_s: float = Field(10.0, ge=0)
    """On SIGTERM, how long in-flight calls may take to finish before they are cancelled."""
    drain_delay_s: float = Field(0.0, ge=0)
    """On SIGTERM, how long to report NOT_SERVING before refusing new calls (lets load
    balancers notice)."""
    reflection: bool = False
    """Register gRPC server reflection (for grpcurl and friends)."""
    metrics_port: int | None = Field(None, ge=0, le=65535)
    """Serve Prometheus metrics over HTTP on this port; None = off, 0 = a free port."""

    # ---- security ------------------------------------------------------------------
    tls_cert_file: Path | None = None
    """PEM certificate chain of the server; with ``tls_key_file`` the port speaks TLS."""
    tls_key_file: Path | None = None
    """PEM private key of the server."""
    tls_client_ca_file: Path | None = None
    """PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS)."""
    auth_tokens_file: Path | None = None
    """File of accepted bearer tokens, one a line; when set, every call but health checks needs
    ``authorization: Bearer <token>`` metadata."""

    @model_validator(mode="after")
    def _tls_pairs(self) -> ServingConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mutual TLS) needs tls_cert_file/tls_key_file")
        return self
