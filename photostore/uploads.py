"""The client side of IngestService.UploadPhoto: metadata first, then the bytes in chunks."""
from __future__ import annotations

import hashlib
from typing import BinaryIO, Iterator

from photos.v1 import ingest_pb2

CHUNK_BYTES = 1024 * 1024  # the most the server takes in one message


def digest(stream: BinaryIO) -> tuple[str, int]:
    """Hex sha256 and size of what is left in `stream` (which it reads to the end)."""
    start = stream.tell()
    sha256 = hashlib.file_digest(stream, "sha256").hexdigest()
    return sha256, stream.tell() - start


def upload_requests(stream: BinaryIO, *, filename: str, content_type: str, size: int, sha256: str,
                    request_id: str, chunk_bytes: int = CHUNK_BYTES
                    ) -> Iterator[ingest_pb2.UploadPhotoRequest]:
    """UploadMetadata, then the rest of `stream` in chunks, never holding it whole in memory."""
    yield ingest_pb2.UploadPhotoRequest(metadata=ingest_pb2.UploadMetadata(
        filename=filename, content_type=content_type, size_bytes=size, sha256=sha256,
        request_id=request_id))
    while chunk := stream.read(chunk_bytes):
        yield ingest_pb2.UploadPhotoRequest(chunk=chunk)
