"""TLS, mutual TLS and bearer tokens, each switched on by config."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import pytest

from tests.helpers.synthetic_serving import publish_synthetic, running
from xemb.errors import Unauthenticated, Unavailable
from xemb.serving.client import XembClient

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
             "-subj", f"/CN={name}", cwd=d)


def _leaf(d: Path, name: str, ca: str, san: str) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
             cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "ca")
    _ca(d, "other-ca")
    _leaf(d, "server", "ca", "DNS:localhost,IP:127.0.0.1")
    _leaf(d, "client", "ca", "DNS:client")
    _leaf(d, "intruder", "other-ca", "DNS:client")
    return d


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sec")
    publish_synthetic(path, n_items=100)
    return path


def _client(server, pki: Path, *, cert: str | None = None, token: str | None = None,
            tls: bool = True) -> XembClient:
    def read(name: str) -> bytes:
        return (pki / name).read_bytes()

    return XembClient(f"127.0.0.1:{server.port}", timeout=3, retries=1, token=token, tls=tls,
                      root_certificates=read("ca.pem") if tls else None,
                      client_cert=read(f"{cert}.pem") if cert else None,
                      client_key=read(f"{cert}.key") if cert else None,
                      server_name="localhost")


def test_tls(root, pki):
    tls = {"tls_cert_file": pki / "server.pem", "tls_key_file": pki / "server.key"}
    with running(root, **tls) as (server, _):
        with _client(server, pki) as c:
            assert c.get_item_embeddings([1]).found.all()
        with _client(server, pki, tls=False) as plain, pytest.raises(Unavailable):
            plain.get_item_embeddings([1])


def test_mutual_tls_rejects_other_ca_and_no_cert(root, pki):
    mtls = {"tls_cert_file": pki / "server.pem", "tls_key_file": pki / "server.key",
            "tls_client_ca_file": pki / "ca.pem"}
    with running(root, **mtls) as (server, _):
        with _client(server, pki, cert="client") as c:
            assert c.get_item_embeddings([1]).found.all()
        for cert in ("intruder", None):
            with _client(server, pki, cert=cert) as c, pytest.raises(Unavailable):
                c.get_item_embeddings([1])


def test_bearer_tokens(root, pki, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("# accepted tokens\nalpha-123\nbeta-456\n")
    with running(root, auth_tokens_file=tokens) as (server, _):
        for token in (None, "wrong", "alpha-12"):
            with _client(server, pki, token=token, tls=False) as c:
                with pytest.raises(Unauthenticated):
                    c.get_item_embeddings([1])
                assert c.health() == "SERVING"  # probes need no token
        for token in ("alpha-123", "beta-456"):
            with _client(server, pki, token=token, tls=False) as c:
                assert c.get_item_embeddings([1]).found.all()
        assert server.metrics.registry.get_sample_value(
            "xemb_errors_total", {"method": "GetItemEmbeddings", "code": "UNAUTHENTICATED"}) == 3


def test_streaming_reflection_needs_a_token_too(root, tmp_path):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    tokens = tmp_path / "tokens"
    tokens.write_text("alpha-123\n")
    with running(root, auth_tokens_file=tokens, reflection=True) as (_, client):
        with pytest.raises(grpc.RpcError) as info:
            ProtoReflectionDescriptorDatabase(client.channel).get_services()
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
