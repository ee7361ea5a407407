"""Boots a gRPC server with health, reflection, auth and graceful shutdown on SIGTERM."""
from __future__ import annotations

import json
import logging
import os
import signal
import threading
from concurrent import futures
from pathlib import Path
from typing import Callable, Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from photostore import telemetry
from photostore.auth import AuthInterceptor, Authenticator
from photostore.metrics import MetricsInterceptor
from photostore.settings import Settings, TlsSettings, get_settings

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


# Calls safe to repeat: retried on UNAVAILABLE (another replica, or the same one back), within
# the caller's deadline. Uploads are not retried here: the client retries them with its request_id.
IDEMPOTENT_METHODS = {
    "photos.v1.IngestService": ["GetPhoto", "BatchGetPhotos", "ListPhotos", "DownloadPhoto",
                                "GetPhotoDownloadUrl", "DeletePhoto", "ReindexPhotos",
                                "BatchDeletePhotos", "UpdatePhoto"],
    "photos.v1.AlbumService": ["GetAlbum", "ListAlbums", "UpdateAlbum", "AddAlbumPhotos",
                               "RemoveAlbumPhotos"],
    "photos.v1.SearchService": ["SearchPhotos", "FindSimilar"],
    "photos.v1.EmbedService": ["EmbedText", "EmbedImages", "GetModelInfo", "AnalyzeImages"],
    "photos.v1.AuthService": ["GetCaller", "DeleteSession"],
}
SERVICE_CONFIG = json.dumps({
    # Spread calls over every address the target resolves to (the replicas): "ipv4:a:p1,b:p2"
    # lists them on one machine, "dns:///ingest-headless:7061" a headless Kubernetes Service.
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [{
        "name": [{"service": service, "method": method}
                 for service, methods in IDEMPOTENT_METHODS.items() for method in methods],
        "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.1s", "maxBackoff": "2s",
                        "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
    }],
})


def client_credentials(tls: TlsSettings) -> grpc.ChannelCredentials | None:
    """TLS for a client (with this process's certificate where it has one), or None: plaintext."""
    if not tls.client:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca_file),
        private_key=_read(tls.key_file) if tls.server else None,
        certificate_chain=_read(tls.cert_file) if tls.server else None)


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials | None:
    """The server's certificate, with client certificates required under client_auth; None: plaintext."""
    if not tls.server:
        return None
    if tls.client_auth and not tls.ca_file:
        raise ValueError("PHOTOSTORE_TLS__CLIENT_AUTH needs PHOTOSTORE_TLS__CA_FILE to verify clients with")
    return grpc.ssl_server_credentials([(_read(tls.key_file), _read(tls.cert_file))],
                                       root_certificates=_read(tls.ca_file),
                                       require_client_auth=tls.client_auth)


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path else None


def make_channel(target: str, settings: Settings | None = None) -> grpc.Channel:
    """A channel to another service's replicas (client-side round robin, retries of idempotent
    calls), over TLS where `settings` (default: this process's) say so. Create it after any fork."""
    options = CHANNEL_OPTIONS + [
        # A peer that is still starting is tried again within a fraction of a second, not after
        # gRPC's default backoff (1 s, then growing), which held searches back for 10 s at start.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2_000),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", SERVICE_CONFIG),
    ]
    credentials = client_credentials((settings or get_settings()).tls)
    channel = (grpc.insecure_channel(target, options=options) if credentials is None
               else grpc.secure_channel(target, credentials, options=options))
    return telemetry.instrument_channel(channel)


class GrpcService:
    """A running server: call `set_serving` to flip a service's health, `wait` to block until SIGTERM."""

    def __init__(self, server: grpc.Server, health_servicer: health.HealthServicer,
                 service_names: list[str], port: int, grace_s: float):
        self.server = server
        self.health = health_servicer
        self.service_names = service_names
        self.port = port
        self._grace = grace_s
        self._stop_callbacks: list[Callable[[], None]] = []
        self._after_drain_callbacks: list[Callable[[], None]] = []
        self._stopped = threading.Event()

    @property
    def stopped(self) -> threading.Event:
        return self._stopped

    def set_serving(self, service: str, serving: bool) -> None:
        self.health.set(service, SERVING if serving else NOT_SERVING)

    def on_stop(self, callback: Callable[[], None], *, after_drain: bool = False) -> None:
        """Runs at shutdown, after health says NOT_SERVING: before the server drains in-flight
        RPCs (to end long streams and background work), or after it (to release what they use)."""
        (self._after_drain_callbacks if after_drain else self._stop_callbacks).append(callback)

    @staticmethod
    def _run(callbacks: list[Callable[[], None]]) -> None:
        for cb in callbacks:
            try:
                cb()
            except Exception:  # noqa: BLE001 - shutdown goes on regardless
                log.exception("stop callback failed")

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        log.info("shutting down (grace %.0fs)", self._grace)
        self.health.enter_graceful_shutdown()
        self._run(self._stop_callbacks)
        self.server.stop(self._grace).wait()
        self._run(self._after_drain_callbacks)

    def wait(self) -> None:
        """Blocks until SIGTERM/SIGINT (main thread) or stop(), then stops gracefully."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: threading.Thread(target=self.stop, daemon=True).start())
        self._stopped.wait()
        self.server.wait_for_termination()


def start_server(
    *,
    settings: Settings,
    port: int,
    servicers: Iterable[tuple[Callable, object]],
    service_names: list[str],
    authenticator: Authenticator | None,
    max_workers: int | None = None,
) -> GrpcService:
    """Starts serving `servicers` (pairs of add_XServicer_to_server and servicer) on `port`.

    Health answers from its own thread pool, so it stays responsive while workers are busy.
    """
    interceptors = [*telemetry.server_interceptors(), MetricsInterceptor(),
                    *([AuthInterceptor(authenticator)] if authenticator else [])]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers or settings.grpc_max_workers,
                                   thread_name_prefix="rpc"),
        interceptors=interceptors,
        options=CHANNEL_OPTIONS + [("grpc.max_connection_age_ms", int(settings.grpc_max_connection_age_seconds * 1000))])
    for add, servicer in servicers:
        add(servicer, server)
    # Health and reflection answer from threads of their own, so they answer however many
    # calls hold the server's threads.
    health_servicer = health.HealthServicer(
        experimental_non_blocking=True,
        experimental_thread_pool=futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="health"))
    _on_own_threads(health_servicer, "Check", thread_name="health-check")
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection_servicer = reflection.ReflectionServicer(
        [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME])
    _on_own_threads(reflection_servicer, "ServerReflectionInfo", thread_name="reflection")
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflection_servicer, server)
    address = f"{settings.host}:{port}"
    credentials = server_credentials(settings.tls)
    bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if not bound:
        raise RuntimeError(f"cannot listen on {settings.host}:{port}")
    server.start()
    health_servicer.set("", SERVING)
    for name in service_names:
        health_servicer.set(name, SERVING)
    log.info("serving %s on %s:%d%s", ", ".join(service_names) or health.SERVICE_NAME, settings.host, bound,
             " (TLS, client certificates required)" if settings.tls.client_auth and credentials
             else " (TLS)" if credentials else "")
    return GrpcService(server, health_servicer, service_names, bound, settings.shutdown_grace_seconds)


def _on_own_threads(servicer: object, method: str, *, thread_name: str, threads: int = 2) -> None:
    """Serves `servicer.method` from a small pool of its own rather than the server's."""
    behavior = getattr(servicer, method)

    def run(request, context):
        return behavior(request, context)

    run.experimental_thread_pool = futures.ThreadPoolExecutor(  # type: ignore[attr-defined]
        max_workers=threads, thread_name_prefix=thread_name)
    setattr(servicer, method, run)


def setup_process(component: str, *, tracing: bool = True) -> None:
    """For every service process (`component`: a deployment.SERVICE_MODULES key): logs in
    PHOTOSTORE_LOG_FORMAT, traces when an OTLP endpoint is set (unless `tracing` is False: the
    gunicorn master, whose workers start it after the fork), and the files it creates (photos,
    databases, spool) readable by their owner only."""
    os.umask(0o077)
    settings = get_settings()
    telemetry.configure_logging(settings.log_format, f"photostore-{component}", settings.access_log)
    if tracing:
        telemetry.configure_tracing(component, settings)


def lower_thread_priority(niceness: int) -> None:
    """Makes the calling thread `niceness` steps nicer than it is (Linux schedules each thread on
    its own), for background work the requests must not wait on; where that is refused, the
    thread runs on at the process's priority."""
    try:
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + niceness))
    except (AttributeError, OSError) as e:
        log.warning("cannot lower the priority of thread %s: %s", threading.current_thread().name, e)
