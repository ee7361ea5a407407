"""TLS between the services and their clients: server certificates, and mutual TLS, with
certificates the test makes (trustme)."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import trustme

from ingest_svc.server import serve as serve_ingest
from photos.v1 import ingest_pb2, ingest_pb2_grpc, search_pb2, search_pb2_grpc
from photostore.auth import bearer_metadata
from photostore.server import make_channel
from photostore.settings import Settings, TlsSettings
from search_svc.server import serve as serve_search
from tests.harness import add_user
from tests.stack import free_port

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A CA, and a certificate for 127.0.0.1 signed by it (the services') and one by another CA."""
    root = tmp_path_factory.mktemp("pki")
    ca, stranger = trustme.CA(), trustme.CA()
    paths = {"ca": root / "ca.pem"}
    ca.cert_pem.write_to_path(paths["ca"])
    for name, issuer in (("service", ca), ("stranger", stranger)):
        issued = issuer.issue_cert("127.0.0.1", "localhost")
        paths[f"{name}_cert"], paths[f"{name}_key"] = root / f"{name}.pem", root / f"{name}.key"
        paths[f"{name}_cert"].write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(paths[f"{name}_key"])
    return paths


def tls(pki, *, client_auth: bool = False, identity: str = "service", ca: bool = True) -> TlsSettings:
    return TlsSettings(cert_file=pki[f"{identity}_cert"] if identity else None,
                       key_file=pki[f"{identity}_key"] if identity else None,
                       ca_file=pki["ca"] if ca else None, client_auth=client_auth)


@contextlib.contextmanager
def ingest_over_tls(tmp_path, tls_settings: TlsSettings):
    settings = Settings(data_dir=tmp_path, host="127.0.0.1", shutdown_grace_seconds=0.5, grpc_max_workers=8,
                        tls=tls_settings)
    _, key = add_user(settings, "alice")
    server = serve_ingest(settings, port=0)
    try:
        yield settings, f"127.0.0.1:{server.port}", bearer_metadata(key)
    finally:
        server.stop()


def list_photos(target: str, tls_settings: TlsSettings | None, auth) -> ingest_pb2.ListPhotosResponse:
    settings = Settings(tls=tls_settings) if tls_settings else Settings(tls=TlsSettings())
    with make_channel(target, settings) as channel:
        return ingest_pb2_grpc.IngestServiceStub(channel).ListPhotos(ingest_pb2.ListPhotosRequest(),
                                                                      metadata=auth, timeout=10)


def refused(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as failed:
        call()
    return failed.value.code()


def test_servers_speak_tls_to_clients_that_trust_their_ca(tmp_path, pki):
    with ingest_over_tls(tmp_path, tls(pki)) as (_, target, auth):
        assert list_photos(target, tls(pki, identity=""), auth).photos == []  # the CA alone suffices
        assert refused(lambda: list_photos(target, None, auth)) == grpc.StatusCode.UNAVAILABLE  # plaintext
        untrusting = TlsSettings(ca_file=pki["stranger_cert"])  # a CA that did not sign it
        assert refused(lambda: list_photos(target, untrusting, auth)) == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_admits_only_clients_with_a_certificate_of_the_ca(tmp_path, pki):
    with ingest_over_tls(tmp_path, tls(pki, client_auth=True)) as (settings, target, auth):
        assert list_photos(target, tls(pki), auth).photos == []
        assert refused(lambda: list_photos(target, tls(pki, identity=""), auth)) == grpc.StatusCode.UNAVAILABLE
        assert refused(lambda: list_photos(target, tls(pki, identity="stranger"), auth)) \
            == grpc.StatusCode.UNAVAILABLE

        # Another service (search) reaches ingest over mutual TLS to check the caller's key, and is
        # reached over TLS itself.
        search_settings = settings.model_copy(update={"ingest_target": target,
                                                      "embed_target": f"127.0.0.1:{free_port()}",
                                                      "search_keep_warm_seconds": 0})
        search = serve_search(search_settings, 0)
        try:
            with make_channel(f"127.0.0.1:{search.port}", search_settings) as channel:
                stub = search_pb2_grpc.SearchServiceStub(channel)
                answer = stub.SearchPhotos(search_pb2.SearchPhotosRequest(query="beach"), metadata=auth, timeout=30)
                assert list(answer.hits) == []
                wrong_key = bearer_metadata("psk_not-a-key")
                assert refused(lambda: stub.SearchPhotos(search_pb2.SearchPhotosRequest(query="beach"),
                                                         metadata=wrong_key, timeout=30)) \
                    == grpc.StatusCode.UNAUTHENTICATED
        finally:
            search.stop()


def test_the_health_probe_speaks_tls_with_the_ca_setting(tmp_path, pki):
    """`photostore probe` (the containers' health check, and `up`'s) reaches a TLS server."""
    with ingest_over_tls(tmp_path, tls(pki)) as (_, target, _auth):
        photostore = [str(Path(sys.executable).parent / "photostore"), "probe", "--grpc", target, "--timeout", "10"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSTORE_TLS__")}
        trusting = subprocess.run(photostore, env={**env, "PHOTOSTORE_TLS__CA_FILE": str(pki["ca"])},
                                  capture_output=True, text=True, timeout=60)
        assert trusting.returncode == 0, trusting.stderr
        plaintext = subprocess.run(photostore, env=env, capture_output=True, text=True, timeout=60)
        assert plaintext.returncode == 1 and "not ready" in plaintext.stderr


def test_client_auth_without_a_ca_is_refused_at_start(tmp_path, pki):
    settings = Settings(data_dir=tmp_path, host="127.0.0.1",
                        tls=TlsSettings(cert_file=pki["service_cert"], key_file=pki["service_key"],
                                        client_auth=True))
    with pytest.raises(ValueError, match="CA_FILE"):
        serve_ingest(settings, port=0)
