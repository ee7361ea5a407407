"""HTTP/JSON gateway and web page in front of the photos.v1 gRPC services."""
from gateway.app import create_app

__all__ = ["create_app"]
