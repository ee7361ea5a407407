"""Runs photos.v1.SearchService: `photostore serve search`."""
from __future__ import annotations

import threading

from photos.v1 import embed_pb2_grpc, ingest_pb2_grpc, search_pb2, search_pb2_grpc
from photostore.auth import Authenticator, bearer_metadata, service_api_key
from photostore.backends import open_vectors
from photostore.pagination import PageTokens, token_secret
from photostore.metrics import serve_metrics
from photostore.server import GrpcService, make_channel, setup_process, start_server
from photostore.settings import Settings, get_settings
from search_svc.service import Fusion, SearchService

SERVICE_NAME = search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name


def serve(settings: Settings, port: int) -> GrpcService:
    """Starts the server with channels to the embed and ingest services; stop() closes them."""
    embed_channel = make_channel(settings.target("embed"), settings)
    ingest_channel = make_channel(settings.target("ingest"), settings)
    vectors = open_vectors(settings)
    service_auth = bearer_metadata(service_api_key(settings))
    service = SearchService(vectors, embed_pb2_grpc.EmbedServiceStub(embed_channel),
                            ingest_pb2_grpc.IngestServiceStub(ingest_channel), Fusion.from_settings(settings),
                            PageTokens(token_secret(settings)), service_auth,
                            vocabulary_seconds=settings.search_vocabulary_seconds)
    svc = start_server(
        settings=settings, port=port,
        servicers=[(search_pb2_grpc.add_SearchServiceServicer_to_server, service)],
        service_names=[SERVICE_NAME],
        authenticator=Authenticator.remote(ingest_channel, settings.auth_cache_seconds))
    if settings.search_keep_warm_seconds > 0:
        stopped = threading.Event()
        threading.Thread(target=service.keep_warm, name="keep-warm", daemon=True, args=(
            service_auth, settings.search_keep_warm_seconds, stopped)).start()
        svc.on_stop(stopped.set)
    svc.on_stop(vectors.close, after_drain=True)
    svc.on_stop(embed_channel.close, after_drain=True)
    svc.on_stop(ingest_channel.close, after_drain=True)
    return svc


def main() -> None:
    setup_process("search")
    settings = get_settings()
    serve_metrics(settings.search_metrics_port, settings.host)
    serve(settings, settings.search_port).wait()


if __name__ == "__main__":
    main()
