"""Runs photos.v1.EmbedService; the models load in the background while health already answers."""
from __future__ import annotations

import logging
import os
import sys

from embed_svc.model import ClipModel
from embed_svc.service import SERVICE_NAME, EmbedService
from embed_svc.signals import ImageAnalyzer
from photos.v1 import embed_pb2_grpc
from photostore.auth import Authenticator
from photostore.memory import release_memory
from photostore.metrics import serve_metrics
from photostore.server import GrpcService, make_channel, setup_process, start_server
from photostore.settings import Settings, get_settings


def serve(settings: Settings, port: int) -> GrpcService:
    """Starts the server at once; its health for EmbedService says SERVING once any model is ready
    (the labels, OCR and sentence models are useful without CLIP); GetModelInfo tells which."""
    release_memory()  # also caps glibc's arenas before the model threads start
    model = ClipModel(settings)
    analyzer = ImageAnalyzer(settings) if settings.signals_enabled else None
    ingest_channel = make_channel(settings.target("ingest"), settings)  # checks callers' keys
    svc = start_server(
        settings=settings, port=port,
        servicers=[(embed_pb2_grpc.add_EmbedServiceServicer_to_server, EmbedService(model, analyzer))],
        service_names=[SERVICE_NAME],
        authenticator=Authenticator.remote(ingest_channel, settings.auth_cache_seconds))
    svc.on_stop(ingest_channel.close, after_drain=True)
    svc.set_serving(SERVICE_NAME, False)

    def on_ready() -> None:
        svc.set_serving(SERVICE_NAME, True)

    svc.on_stop(model.close, after_drain=True)
    model.start_loading(on_ready=on_ready)
    if analyzer is not None:
        svc.on_stop(analyzer.close, after_drain=True)
        analyzer.start_loading(on_ready=on_ready)
    return svc


def main() -> None:
    setup_process("embed")
    settings = get_settings()
    serve_metrics(settings.embed_metrics_port, settings.host)
    serve(settings, settings.embed_port).wait()
    # Drained and released: leave without running the interpreter's teardown, where torch's and
    # gRPC's native threads can abort the process ("terminate called without an active exception").
    logging.shutdown()
    sys.stdout.flush()
    os._exit(0)
