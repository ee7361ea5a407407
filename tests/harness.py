"""Small pieces several in-process suites share."""
from __future__ import annotations

import dataclasses

from photos.v1 import auth_pb2, auth_pb2_grpc, embed_pb2
from photostore.auth import (Authenticator, AuthServicer, bearer_metadata, hash_key, new_api_key,
                             register_service_key, service_api_key)
from photostore.backends import open_users
from photostore.server import GrpcService, start_server
from photostore.settings import Settings

AUTH_SERVICE_NAME = auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name


def start_auth_service(settings: Settings) -> tuple[GrpcService, Settings]:
    """The real AuthService over the users store (as the ingest service runs it), on a free port;
    returns it and the settings with ingest_target pointing at it, for services that check keys."""
    users = open_users(settings)
    register_service_key(settings, users)
    svc = start_server(settings=settings, port=0,
                       servicers=[(auth_pb2_grpc.add_AuthServiceServicer_to_server, AuthServicer(users))],
                       service_names=[AUTH_SERVICE_NAME], authenticator=Authenticator.local(users))
    return svc, settings.model_copy(update={"ingest_target": f"127.0.0.1:{svc.port}"})


def service_auth(settings: Settings) -> list[tuple[str, str]]:
    """Call metadata with the services' own key (EmbedService is internal)."""
    return bearer_metadata(service_api_key(settings))


def add_user(settings: Settings, name: str) -> tuple[str, str]:
    """(user id, API key) of a new user."""
    key = new_api_key()
    return open_users(settings).create_user(name, hash_key(key)).id, key


@dataclasses.dataclass
class ClipInfo:
    """GetModelInfo seen from CLIP's side: its ModelStatus, the device and every model."""
    model: str
    ready: bool
    reason: str
    dimension: int
    device: str
    models: list


def clip_info(response: embed_pb2.GetModelInfoResponse) -> ClipInfo:
    clip = next(m for m in response.models if m.role == embed_pb2.MODEL_ROLE_CLIP)
    return ClipInfo(model=clip.model, ready=clip.ready, reason=clip.reason, dimension=clip.dimension,
                    device=response.device, models=list(response.models))
