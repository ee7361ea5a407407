"""Runs photos.v1.SearchService: `python -m search_svc`."""
from __future__ import annotations

from photos.v1 import embed_pb2_grpc, ingest_pb2_grpc, search_pb2, search_pb2_grpc
from photostore.auth import Authenticator
from photostore.backends import open_metadata, open_vectors
from photostore.server import make_channel, setup_logging, start_server
from photostore.settings import get_settings
from search_svc.service import SearchService

SERVICE_NAME = search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name


def main() -> None:
    setup_logging()
    settings = get_settings()
    vectors = open_vectors(settings)
    metadata = open_metadata(settings)
    embed_channel = make_channel(settings.target("embed"))
    ingest_channel = make_channel(settings.target("ingest"))
    service = SearchService(vectors, embed_pb2_grpc.EmbedServiceStub(embed_channel),
                            ingest_pb2_grpc.IngestServiceStub(ingest_channel))
    server = start_server(
        settings=settings, port=settings.search_port,
        servicers=[(search_pb2_grpc.add_SearchServiceServicer_to_server, service)],
        service_names=[SERVICE_NAME], authenticator=Authenticator(metadata))
    server.wait()
    embed_channel.close()
    ingest_channel.close()


if __name__ == "__main__":
    main()
