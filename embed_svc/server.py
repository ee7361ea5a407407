"""Runs photos.v1.EmbedService; the model loads in the background while health already answers."""
from __future__ import annotations

from embed_svc.model import ClipModel
from embed_svc.service import SERVICE_NAME, EmbedService
from photos.v1 import embed_pb2_grpc
from photostore.auth import Authenticator
from photostore.backends import open_metadata
from photostore.server import GrpcService, setup_logging, start_server
from photostore.settings import Settings, get_settings


def serve(settings: Settings, port: int) -> GrpcService:
    """Starts the server at once; its health for EmbedService says SERVING once the model is ready."""
    model = ClipModel(settings)
    svc = start_server(
        settings=settings, port=port,
        servicers=[(embed_pb2_grpc.add_EmbedServiceServicer_to_server, EmbedService(model))],
        service_names=[SERVICE_NAME], authenticator=Authenticator(open_metadata(settings)))
    svc.set_serving(SERVICE_NAME, False)
    svc.on_stop(model.close, after_drain=True)
    model.start_loading(on_ready=lambda: svc.set_serving(SERVICE_NAME, True))
    return svc


def main() -> None:
    setup_logging()
    settings = get_settings()
    serve(settings, settings.embed_port).wait()
