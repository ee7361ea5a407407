"""A photo's renditions besides the original: where they are stored, which blob a download
variant reads, and the preview made on first request for photos stored before previews were made
at upload."""
from __future__ import annotations

import logging

import grpc

from ingest_svc import imaging
from ingest_svc.spool import Spool
from photos.v1 import ingest_pb2
from photostore.backends.base import BlobNotFoundError, BlobStore, MetadataStore, PhotoRecord
from photostore.convert import photo_name
from photostore.errors import ServiceError, not_found

log = logging.getLogger(__name__)

SPOOL_CHUNK_BYTES = 1024 * 1024


def variant_blob(record: PhotoRecord, variant: int) -> tuple[str, str]:
    """(blob key, content type) of a download variant; anything but a rendition is the original.
    The preview's key must be set (Previews.ensure)."""
    if variant == ingest_pb2.PHOTO_VARIANT_THUMBNAIL:
        return record.thumbnail_key, "image/jpeg"
    if variant == ingest_pb2.PHOTO_VARIANT_PREVIEW:
        return record.preview_key, "image/jpeg"
    return record.blob_key, record.content_type


def preview_key(owner: str, photo_id: str) -> str:
    """Where a photo's preview is stored (beside its thumbnail, one key per photo)."""
    return f"renditions/{owner}/{photo_id}.preview.jpg"


def rendition_keys(record: PhotoRecord) -> list[str]:
    """The blobs of the photo alone (not its original, which photos of the same bytes share):
    what removing the photo removes. The preview's key is named even when the row has none yet,
    so a preview made while the photo was being removed goes too."""
    return list(dict.fromkeys([record.thumbnail_key, record.model_copy_key,
                               record.preview_key or preview_key(record.owner, record.id)]))


class Previews:
    """Makes the preview of a photo stored without one, from its original: decoded once, under
    the process's pixel budget, stored, and named on the row (update_photo)."""

    def __init__(self, blobs: BlobStore, metadata: MetadataStore, spool: Spool, max_pixels: int):
        self._blobs = blobs
        self._metadata = metadata
        self._spool = spool
        self._max_pixels = max_pixels

    def ensure(self, record: PhotoRecord) -> PhotoRecord:
        """`record` with its preview_key set, the preview made first when it had none. Raises
        NOT_FOUND when the photo went meanwhile or its original cannot be made into one."""
        if record.preview_key:
            return record
        name = photo_name(record.id)
        key = preview_key(record.owner, record.id)
        with self._spool.file() as spool:
            try:
                with self._blobs.open(record.blob_key) as reader:
                    for chunk in reader.chunks(SPOOL_CHUNK_BYTES):
                        spool.write(chunk)
            except BlobNotFoundError:
                raise not_found(f"{name} not found") from None
            spool.flush()
            try:
                data = imaging.make_preview(spool.name, max_pixels=self._max_pixels)
            except ServiceError as e:
                log.warning("cannot make the preview of %s: %s", name, e.message)
                # NOT_FOUND: the photo has no preview (a pixel limit lowered since upload stays
                # RESOURCE_EXHAUSTED).
                code = grpc.StatusCode.NOT_FOUND if e.code == grpc.StatusCode.INVALID_ARGUMENT else e.code
                raise ServiceError(code, f"{name} has no preview, and its original cannot be made "
                                   f"into one: {e.message}", reason="PREVIEW_NOT_AVAILABLE") from e
        self._blobs.put_bytes(key, data, "image/jpeg")
        updated = self._metadata.update_photo(record.id, preview_key=key)
        if updated is None:  # deleted meanwhile
            self._blobs.delete(key)
            raise not_found(f"{name} not found")
        log.info("made the missing preview of %s", name)
        return updated

