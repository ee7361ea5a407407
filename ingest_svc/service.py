"""photos.v1.IngestService: upload, read, list, delete, download and watch the caller's photos."""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import re
import uuid
from typing import Iterator, Sequence

import grpc
from prometheus_client import Counter

from ingest_svc import imaging, places
from ingest_svc.browse import PlaceBackfill, summary_to_proto
from ingest_svc.renditions import Previews, rendition_keys, variant_blob
from ingest_svc.spool import Spool
from ingest_svc.watch import WatchHub
from photos.v1 import embed_pb2, embed_pb2_grpc, events_pb2, ingest_pb2, ingest_pb2_grpc, photo_pb2
from photostore import events as photo_events
from photostore.auth import current_user
from photostore.backends.base import (
    STATUS_INDEXED,
    STATUS_UPLOADED,
    DISK_FULL_ERRNOS,
    BlobNotFoundError,
    BlobStore,
    BlobUnavailableError,
    Event,
    EventLogUnavailableError,
    EventProducer,
    MetadataStore,
    PhotoFilter,
    PhotoRecord,
    StorageFullError,
    VectorStore,
    utcnow,
)
from photostore.convert import (
    role_name,
    STATUS_FROM_PROTO,
    TEXT_STATE_FROM_PROTO,
    album_id_from_name,
    from_timestamp,
    photo_id_from_name,
    photo_name,
    photo_to_proto,
    to_timestamp,
)
from photostore.errors import (ServiceError, failed_precondition, invalid, not_found, storage_full, too_large,
                               unavailable)
from photostore.limits import IdleStreams, StreamSlots
from photostore.duplicates import DuplicateFinder, Group
from photostore.pagination import PageTokens, position_time, time_position
from photostore.pagination import page_size as read_page_size
from photostore.settings import Settings

log = logging.getLogger(__name__)

SERVICE_NAME = ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name
DOWNLOAD_CHUNK_BYTES = 256 * 1024
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_BATCH_NAMES = 1000
DEFAULT_GROUP_PAGE_SIZE = 20
MAX_GROUP_PAGE_SIZE = 100
MAX_FILENAME_CHARS = 255
MAX_REQUEST_ID_CHARS = 128
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# How often a WatchPhotos stream looks whether its client is still there.
WATCH_POLL_S = 1.0
EMBED_TIMEOUT_S = 30.0
# GetModelInfo roles whose ready model makes vectors: CLIP, and the text model of labels + OCR text.
VECTOR_MODEL_ROLES = (embed_pb2.MODEL_ROLE_CLIP, embed_pb2.MODEL_ROLE_SENTENCE)
# Events per durable write when ReindexPhotos queues photos or the outbox relays them.
SEND_BATCH = 500
# A photo ReindexPhotos queued is not queued again by later calls for this long (it is waiting in
# the event log, or done); `all` after that queues it again.
REINDEX_IN_FLIGHT_S = 3600.0

UPLOADS_ACCEPTED = Counter("photostore_uploads_accepted_total",
                           "Uploads answered with a photo", ["duplicate"])
UPLOADS_REJECTED = Counter("photostore_uploads_rejected_total",
                           "Uploads rejected, by reason", ["reason"])
UPLOADED_BYTES = Counter("photostore_uploaded_bytes_total", "Bytes of the photos stored by uploads")


def change_message(message: events_pb2.PhotoEvent) -> ingest_pb2.WatchPhotosResponse:
    """What WatchPhotos streams for a photos.changes record."""
    return ingest_pb2.WatchPhotosResponse(photo=message.changed.photo,
                                          change_type=message.changed.change_type,
                                          event_time=message.event_time)


def record_message(r: PhotoRecord) -> ingest_pb2.WatchPhotosResponse:
    """A photo's current state as WatchPhotos streams it (send_initial)."""
    return ingest_pb2.WatchPhotosResponse(photo=photo_to_proto(r),
                                          change_type=photo_pb2.PHOTO_CHANGE_TYPE_UPDATED,
                                          event_time=to_timestamp(utcnow()))


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(self, settings: Settings, blobs: BlobStore, metadata: MetadataStore,
                 producer: EventProducer, vectors: VectorStore, hub: WatchHub,
                 embed: embed_pb2_grpc.EmbedServiceStub, page_tokens: PageTokens,
                 max_watchers: int | None = None):
        self._settings = settings
        self._upload_slots = StreamSlots("upload", per_user=settings.max_uploads_per_user,
                                         total=settings.max_concurrent_uploads, reason="TOO_MANY_UPLOADS")
        self._watch_slots = StreamSlots("watch", per_user=settings.max_watches_per_user,
                                        total=max_watchers or settings.max_concurrent_watches,
                                        reason="TOO_MANY_WATCHERS")
        self._idle_uploads = IdleStreams(settings.upload_idle_timeout_seconds)
        self._page_tokens = page_tokens
        self._embed = embed
        self._blobs = blobs
        self._metadata = metadata
        self._producer = producer
        self._vectors = vectors
        self._hub = hub
        self._spool = Spool(settings.data_dir / "tmp")
        self.duplicates = DuplicateFinder(
            metadata, vectors, blobs, max_distance=settings.near_duplicate_max_distance,
            min_cosine=settings.near_duplicate_min_cosine,
            clip_max_photos=settings.near_duplicate_clip_max_photos)
        self._place_backfill = PlaceBackfill(metadata)
        self._previews = Previews(blobs, metadata, self._spool, settings.max_image_pixels)
        self._trash_retention = dt.timedelta(days=settings.trash_retention_days)

    @property
    def max_streams(self) -> int:
        """Server threads the upload and watch streams may hold at once."""
        return self._upload_slots.total + self._watch_slots.total

    def close(self) -> None:
        self._place_backfill.close()
        self._idle_uploads.close()
        self._spool.close()

    # Upload

    def UploadPhoto(self, request_iterator, context):
        try:
            owner = current_user().id
            with self._upload_slots.hold(owner):
                requests = self._idle_uploads.guard(request_iterator, context, "an upload")
                try:
                    response = self._upload(owner, requests)
                except StorageFullError as e:  # the blob store's or the metadata store's disk
                    raise storage_full(str(e)) from e
                except OSError as e:  # the spool's disk
                    if e.errno not in DISK_FULL_ERRNOS:
                        raise
                    raise storage_full(f"cannot spool the upload under {self._spool.dir}") from e
        except ServiceError as e:
            UPLOADS_REJECTED.labels(reason=e.reason).inc()
            e.abort(context)
        UPLOADS_ACCEPTED.labels(duplicate=str(response.duplicate).lower()).inc()
        return response

    def _upload(self, owner: str, requests: Iterator[ingest_pb2.UploadPhotoRequest]
                ) -> ingest_pb2.UploadPhotoResponse:
        first = next(requests, None)
        if first is None or first.WhichOneof("data") != "metadata":
            raise invalid("the first message must carry metadata", field="metadata")
        meta = first.metadata
        sha256 = meta.sha256.lower()
        self._check_metadata(meta, sha256)

        if meta.request_id and (earlier := self._metadata.photo_by_request(owner, meta.request_id)):
            if earlier.sha256 != sha256:
                raise invalid("request_id was already used for different bytes",
                              field="metadata.request_id")
            return ingest_pb2.UploadPhotoResponse(photo=self._photo(earlier), duplicate=False)
        # The owner already has these bytes: answer without receiving them again (a photo in
        # the trash comes back out of it).
        if existing := self._metadata.photo_by_sha256(owner, sha256):
            return ingest_pb2.UploadPhotoResponse(photo=self._photo(self._restored(existing)),
                                                  duplicate=True)

        with self._spool.file() as spool:
            self._receive(requests, spool, meta.size_bytes, sha256)
            info = imaging.inspect_image(spool.name, max_pixels=self._settings.max_image_pixels,
                                         thumbnail_px=self._settings.thumbnail_px,
                                         model_copy_px=self._settings.model_copy_px)
            record, created = self._store(owner, meta, sha256, spool.name, info)
        if created:
            UPLOADED_BYTES.inc(record.size_bytes)
            self._publish_uploaded(record)
        else:
            record = self._restored(record)
        similar = self._similar_photos(record) if created else []
        return ingest_pb2.UploadPhotoResponse(photo=self._photo(record), duplicate=not created,
                                              similar_photos=similar)

    def _check_metadata(self, meta: ingest_pb2.UploadMetadata, sha256: str) -> None:
        if meta.size_bytes <= 0:
            raise invalid("the photo is empty: size_bytes must be positive",
                          field="metadata.size_bytes", reason="EMPTY_UPLOAD")
        if meta.size_bytes > self._settings.max_upload_bytes:
            raise too_large(f"{meta.size_bytes} bytes exceeds the upload limit of "
                            f"{self._settings.max_upload_bytes} bytes", field="metadata.size_bytes",
                            reason="UPLOAD_TOO_LARGE",
                            metadata={"size_bytes": str(meta.size_bytes),
                                      "limit_bytes": str(self._settings.max_upload_bytes)})
        if not SHA256_HEX.fullmatch(sha256):
            raise invalid("sha256 must be 64 hex digits", field="metadata.sha256")
        if len(meta.filename) > MAX_FILENAME_CHARS:
            raise invalid(f"filename is longer than {MAX_FILENAME_CHARS} characters",
                          field="metadata.filename")
        if len(meta.request_id) > MAX_REQUEST_ID_CHARS:
            raise invalid(f"request_id is longer than {MAX_REQUEST_ID_CHARS} characters",
                          field="metadata.request_id")

    def _receive(self, requests, spool, declared_size: int, sha256: str) -> None:
        """Writes the chunks to `spool` while counting and hashing them; checks both at the end."""
        limit, max_chunk = self._settings.max_upload_bytes, self._settings.max_chunk_bytes
        digest = hashlib.sha256()
        received = 0
        for request in requests:
            if request.WhichOneof("data") != "chunk":
                raise invalid("only the first message may carry metadata", field="metadata")
            chunk = request.chunk
            if len(chunk) > max_chunk:
                raise invalid(f"a chunk of {len(chunk)} bytes exceeds the {max_chunk}-byte limit",
                              field="chunk", reason="CHUNK_TOO_LARGE",
                              metadata={"chunk_bytes": str(len(chunk)), "limit_bytes": str(max_chunk)})
            received += len(chunk)
            if received > limit:
                raise too_large(f"more than the upload limit of {limit} bytes",
                                field="chunk", reason="UPLOAD_TOO_LARGE",
                                metadata={"limit_bytes": str(limit)})
            if received > declared_size:
                raise invalid(f"more bytes than the declared {declared_size}",
                              field="metadata.size_bytes", reason="SIZE_MISMATCH")
            digest.update(chunk)
            spool.write(chunk)
        spool.flush()
        if received != declared_size:
            raise invalid(f"received {received} bytes but size_bytes says {declared_size}",
                          field="metadata.size_bytes", reason="SIZE_MISMATCH")
        if digest.hexdigest() != sha256:
            raise invalid(f"the bytes hash to sha256 {digest.hexdigest()}, not {sha256}",
                          field="metadata.sha256", reason="CHECKSUM_MISMATCH")

    def _store(self, owner: str, meta: ingest_pb2.UploadMetadata, sha256: str, path: str,
               info: imaging.ImageInfo) -> tuple[PhotoRecord, bool]:
        """Blob, thumbnail, then the row (unpublished). Returns (stored record, created)."""
        photo_id = uuid.uuid4().hex
        now = utcnow()
        record = PhotoRecord(
            id=photo_id, owner=owner, filename=meta.filename, sha256=sha256,
            content_type=info.content_type, size_bytes=meta.size_bytes,
            width=info.width, height=info.height,
            blob_key=f"originals/{owner}/{sha256}", thumbnail_key=f"thumbnails/{owner}/{photo_id}.jpg",
            phash=info.phash,
            created_at=now, updated_at=now, taken_at=info.exif.taken_at,
            camera_make=info.exif.camera_make, camera_model=info.exif.camera_model,
            latitude=info.exif.latitude, longitude=info.exif.longitude, altitude=info.exif.altitude,
            status=STATUS_UPLOADED, published=False, **_place_fields(info.exif))
        try:
            self._blobs.put_file(record.blob_key, path, record.content_type)
            self._blobs.put_bytes(record.thumbnail_key, info.thumbnail_jpeg, "image/jpeg")
            self._blobs.put_bytes(record.model_copy_key, info.model_copy_jpeg, "image/jpeg")
            stored, created = self._metadata.insert_photo(record, meta.request_id)
        except Exception:
            self._remove_blobs(record)
            raise
        if not created:  # a concurrent upload of these bytes or this request won the race
            self._remove_blobs(record)
        return stored, created

    def _remove_blobs(self, record: PhotoRecord) -> None:
        """Removes the photo's thumbnail, preview and copy, and its original unless a stored photo
        uses it."""
        for key in rendition_keys(record):
            self._blobs.delete(key)
        if self._metadata.photo_by_sha256(record.owner, record.sha256) is None:
            self._blobs.delete(record.blob_key)

    def _publish_uploaded(self, record: PhotoRecord) -> None:
        """Queues the photo for indexing, tells every replica's watchers, and flags the row; on
        failure the outbox sends both later."""
        try:
            self._producer.send_many([photo_events.uploaded_record(record),
                                      photo_events.changed_record(record, photo_events.CREATED)])
            self._metadata.mark_published([record.id])
        except Exception:  # noqa: BLE001 - the photo is stored; the outbox retries the event
            log.exception("could not publish the upload of %s; the outbox will", record.id)

    def relay_unpublished(self, min_age_s: float = 0.0) -> int:
        """Outbox: sends the upload events of rows stored at least min_age_s ago but not yet
        published, a batch per durable write."""
        sent = 0
        cutoff = utcnow().timestamp() - min_age_s
        while True:
            batch = [r for r in self._metadata.unpublished_photos(limit=SEND_BATCH)
                     if r.created_at.timestamp() <= cutoff]
            if batch:
                self._producer.send_many([photo_events.uploaded_record(r) for r in batch])
                self._metadata.mark_published([r.id for r in batch])
            sent += len(batch)
            if len(batch) < SEND_BATCH:
                return sent

    # Previews, made after the upload from photos.uploaded (one replica each: group semantics)

    def make_previews(self, events: Sequence[Event]) -> int:
        """Makes the preview of each newly uploaded photo that has none yet; returns how many were
        made. A photo gone meanwhile, or whose original cannot be made into one, is passed over
        (a preview download says why); a failing blob store raises, to be retried."""
        made = 0
        # Reindex requests and retries ride on the same topic; older photos get theirs when asked.
        for _, message in photo_events.of_kind(events, "uploaded", others_expected=True):
            record = self._metadata.get_photo(message.uploaded.subject.photo_id)
            if record is None or record.preview_key:
                continue
            try:
                self._previews.ensure(record)
                made += 1
            except ServiceError as e:
                log.info("previews: %s", e.message)
        return made

    # Status changes from the embed worker (one replica applies each: group semantics)

    def apply_status_events(self, events: Sequence[Event]) -> None:
        """Writes each photos.status event to its row, then tells every replica's watchers
        through photos.changes (before the caller commits the batch)."""
        changes = []
        for event, message in photo_events.of_kind(events, "status_changed"):
            change = message.status_changed
            status = STATUS_FROM_PROTO.get(change.status)
            text_state = TEXT_STATE_FROM_PROTO.get(change.text_state)
            if not change.photo_id or (status is None and text_state is None):
                log.warning("skipping status event without photo or status at %s[%d]@%d",
                            event.topic, event.partition, event.offset)
                continue
            # A failure leaves the models of the vectors the photo still has as they are; a later
            # stage's outcome (no status) leaves the status and its reason.
            indexed = status == STATUS_INDEXED
            later_stage = status is None
            record = self._metadata.update_status(
                change.photo_id, status, reason=None if later_stage else change.reason,
                attempts=None if later_stage else change.attempts,
                embedding_model=change.clip_model if indexed else None,
                labels=[(label.text, label.score) for label in change.labels] if change.analysed else None,
                ocr_text=change.ocr_text if change.analysed else None,
                embedding_models=list(change.embedding_models) if indexed or change.embedding_models else None,
                text_state=text_state,
                text_state_reason=(change.reason if later_stage else "") if text_state is not None else None)
            if record is None:  # deleted while it was being indexed
                self._vectors.delete(change.photo_id)
            else:
                changes.append(photo_events.changed_record(record, photo_events.UPDATED))
        if changes:
            self._producer.send_many(changes)

    # Reads

    def GetPhoto(self, request, context):
        try:
            record = self._owned(current_user().id, request.name)
            return ingest_pb2.GetPhotoResponse(photo=self._photo(record))
        except ServiceError as e:
            e.abort(context)

    def BatchGetPhotos(self, request, context):
        try:
            if not 1 <= len(request.names) <= MAX_BATCH_NAMES:
                raise invalid(f"names must hold 1 to {MAX_BATCH_NAMES} photo names", field="names")
            ids = [photo_id_from_name(n, field=f"names[{i}]") for i, n in enumerate(request.names)]
            records = self._metadata.get_photos(current_user().id, ids)
            if not request.skip_missing:
                _require_all(ids, records)
            return ingest_pb2.BatchGetPhotosResponse(photos=[self._photo(r) for r in records])
        except ServiceError as e:
            e.abort(context)

    def ListPhotos(self, request, context):
        try:
            page_size = read_page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
            owner = current_user().id
            self._place_backfill.ensure(owner)
            photo_filter = self._photo_filter(owner, request)
            filters = dataclasses.asdict(photo_filter)
            after = None
            if request.page_token:
                after = position_time(self._page_tokens.read(request.page_token, filters))
            page = self._metadata.list_photos(owner, filter=photo_filter, page_size=page_size,
                                              after=after, count_total=True)
            token = "" if page.next_after is None else self._page_tokens.mint(
                time_position(page.next_after), filters)
            return ingest_pb2.ListPhotosResponse(photos=[self._photo(r) for r in page.records],
                                                 next_page_token=token, total_size=page.total or 0)
        except ServiceError as e:
            e.abort(context)

    def SummarizePhotos(self, request, context):
        try:
            owner = current_user().id
            self._place_backfill.ensure(owner)
            photo_filter = self._photo_filter(owner, request.filter)
            photo_filter.status = None  # ignored here, as documented
            return summary_to_proto(self._metadata.summarize_photos(owner, photo_filter))
        except ServiceError as e:
            e.abort(context)

    def _photo_filter(self, owner: str, request: ingest_pb2.ListPhotosRequest) -> PhotoFilter:
        """The store's filter of ListPhotos' filter fields (SummarizePhotos takes the same)."""
        status = None
        if request.status != photo_pb2.PHOTO_STATUS_UNSPECIFIED:
            status = STATUS_FROM_PROTO.get(request.status)
            if status is None:
                raise invalid(f"unknown status {request.status}", field="status")
        start = from_timestamp(request.start_time, request.HasField("start_time"))
        end = from_timestamp(request.end_time, request.HasField("end_time"))
        if start and end and start >= end:
            raise invalid("start_time must be before end_time", field="start_time")
        album_id = ""
        if request.album:
            album_id = album_id_from_name(request.album, field="album")
            if self._metadata.get_album(album_id, owner=owner) is None:
                raise not_found(f"{request.album} not found")
        return PhotoFilter(status=status, start=start, end=end,
                           camera_make=request.camera_make.strip(), camera_model=request.camera_model.strip(),
                           place=request.place.strip(), album_id=album_id, favorite=request.favorite,
                           deleted=request.deleted)

    def DownloadPhoto(self, request, context):
        try:
            record = self._with_rendition(self._owned(current_user().id, request.name), request.variant)
            key, content_type = variant_blob(record, request.variant)
            try:
                with self._blobs.open(key) as reader:
                    chunks = reader.chunks(DOWNLOAD_CHUNK_BYTES)
                    yield ingest_pb2.DownloadPhotoResponse(content_type=content_type,
                                                           size_bytes=reader.size,
                                                           chunk=next(chunks, b""))
                    for chunk in chunks:
                        yield ingest_pb2.DownloadPhotoResponse(chunk=chunk)
            except BlobNotFoundError:  # deleted meanwhile
                raise not_found(f"{request.name} not found") from None
            except BlobUnavailableError as e:
                raise unavailable(f"the photo store is unavailable: {e}",
                                  reason="BLOB_STORE_UNAVAILABLE") from e
        except ServiceError as e:
            e.abort(context)

    def GetPhotoDownloadUrl(self, request, context):
        try:
            record = self._with_rendition(self._owned(current_user().id, request.name), request.variant)
            key, _ = variant_blob(record, request.variant)
            original = key == record.blob_key
            expires_s = self._settings.blobs.presign_expiry_seconds
            try:
                url = self._blobs.presigned_url(key, expires_s,
                                                filename=record.filename if original else "")
            except BlobUnavailableError as e:
                raise unavailable(f"the photo store is unavailable: {e}",
                                  reason="BLOB_STORE_UNAVAILABLE") from e
            if not url:
                return ingest_pb2.GetPhotoDownloadUrlResponse()
            return ingest_pb2.GetPhotoDownloadUrlResponse(
                url=url, expire_time=to_timestamp(utcnow() + dt.timedelta(seconds=expires_s)))
        except ServiceError as e:
            e.abort(context)

    def _with_rendition(self, record: PhotoRecord, variant: int) -> PhotoRecord:
        """The record, with a preview made first where the variant is the preview and the photo
        was stored without one."""
        if variant != ingest_pb2.PHOTO_VARIANT_PREVIEW:
            return record
        try:
            return self._previews.ensure(record)
        except BlobUnavailableError as e:
            raise unavailable(f"the photo store is unavailable: {e}",
                              reason="BLOB_STORE_UNAVAILABLE") from e
        except StorageFullError as e:
            raise storage_full(str(e)) from e

    # Trash (AIP-164 soft delete), purge and favourites

    def DeletePhoto(self, request, context):
        try:
            record = self._owned(current_user().id, request.name)
            [trashed] = self._trash([record])
            return ingest_pb2.DeletePhotoResponse(photo=self._photo(trashed))
        except ServiceError as e:
            e.abort(context)

    def BatchDeletePhotos(self, request, context):
        try:
            records = owned_photos(self._metadata, current_user().id, request.names)
            return ingest_pb2.BatchDeletePhotosResponse(photos=[self._photo(r) for r in self._trash(records)])
        except ServiceError as e:
            e.abort(context)

    def UndeletePhotos(self, request, context):
        try:
            records = owned_photos(self._metadata, current_user().id, request.names)
            _require_trashed(records)
            return ingest_pb2.UndeletePhotosResponse(photos=[self._photo(self._restored(r)) for r in records])
        except ServiceError as e:
            e.abort(context)

    def PurgePhotos(self, request, context):
        try:
            owner = current_user().id
            if request.all == bool(request.names):
                raise invalid("give either names or all", field="names")
            if request.all:
                purged = []
                while page := self._metadata.list_photos(owner, filter=PhotoFilter(deleted=True),
                                                         page_size=SEND_BATCH).records:
                    done = [r for r in page if self._purge(r)]
                    if not done:  # the rest were restored meanwhile
                        break
                    purged += done
            else:
                records = owned_photos(self._metadata, owner, request.names)
                _require_trashed(records)
                purged = [r for r in records if self._purge(r)]
            return ingest_pb2.PurgePhotosResponse(names=[photo_name(r.id) for r in purged])
        except ServiceError as e:
            e.abort(context)

    def UpdatePhoto(self, request, context):
        try:
            paths = list(request.update_mask.paths)
            if paths != ["favorite"]:
                raise invalid('update_mask must be ["favorite"]: only favorite may be updated',
                              field="update_mask")
            record = self._owned(current_user().id, request.photo.name)
            if record.favorite != request.photo.favorite:
                record = self._changed(self._metadata.update_photo(record.id, favorite=request.photo.favorite),
                                       request.photo.name)
            return ingest_pb2.UpdatePhotoResponse(photo=self._photo(record))
        except ServiceError as e:
            e.abort(context)

    def purge_expired(self) -> int:
        """Purges the photos (of every owner) whose time in the trash is over; the purge loop calls it."""
        purged = 0
        while True:
            batch = self._metadata.expired_trash(utcnow() - self._trash_retention, limit=SEND_BATCH)
            purged += sum(self._purge(r) for r in batch)
            if len(batch) < SEND_BATCH:
                return purged

    def _trash(self, records: list[PhotoRecord]) -> list[PhotoRecord]:
        """Moves the photos to the trash (those already there stay as they are) and tells watchers."""
        now = utcnow()
        return [r if r.deleted_at is not None else
                self._changed(self._metadata.update_photo(r.id, deleted_at=now), photo_name(r.id))
                for r in records]

    def _restored(self, record: PhotoRecord) -> PhotoRecord:
        """The photo out of the trash (as it is when it is not in it), watchers told."""
        if record.deleted_at is None:
            return record
        return self._changed(self._metadata.update_photo(record.id, deleted_at=None), photo_name(record.id))

    def _changed(self, record: PhotoRecord | None, name: str) -> PhotoRecord:
        """Sends the UPDATED change of a row just written; NOT_FOUND when it was purged meanwhile."""
        if record is None:
            raise not_found(f"{name} not found")
        self._send([photo_events.changed_record(record, photo_events.UPDATED, self._trash_retention)])
        return record

    def _purge(self, record: PhotoRecord) -> bool:
        """Removes the photo for good: row, vectors, blobs, then the DELETED change. False when it
        is gone or no longer in the trash (restored meanwhile)."""
        current = self._metadata.get_photo(record.id)
        if current is None or current.deleted_at is None:
            return False
        # Row first: a status event for it arriving later then removes a late vector too.
        if self._metadata.delete_photo(current.id) is None:
            return False
        self._vectors.delete(current.id)
        self._remove_blobs(current)
        self._send([photo_events.changed_record(current, photo_events.DELETED, self._trash_retention)])
        return True

    def _photo(self, record: PhotoRecord) -> photo_pb2.Photo:
        return photo_to_proto(record, self._trash_retention)

    # Reindex

    def ReindexPhotos(self, request, context):
        try:
            models = self._current_models(context)
            owner = current_user().id
            now = utcnow()
            in_flight = now - dt.timedelta(seconds=REINDEX_IN_FLIGHT_S)
            queued: list[PhotoRecord] = []
            for record in self._all_photos(owner):
                # A photo still waiting for its first indexing is queued already, unless its event
                # was lost (an event log restored from backup): `all` queues it again too. One an
                # earlier call queued for these models is left alone a while: repeats add no work.
                stale = request.all or not set(models) <= set(record.embedding_models)
                if (record.reindex_queued_at is not None and record.reindex_queued_at > in_flight
                        and set(models) <= set(record.reindex_queued_for)):
                    continue
                if stale and (request.all or record.status != STATUS_UPLOADED):
                    queued.append(record)
            for start in range(0, len(queued), SEND_BATCH):
                batch = queued[start:start + SEND_BATCH]
                self._send([photo_events.reindex_record(r) for r in batch])
                self._metadata.mark_reindex_queued([r.id for r in batch], now, models)
            log.info("reindex: queued %d photos of %s for %s", len(queued), owner, ", ".join(models))
            return ingest_pb2.ReindexPhotosResponse(names=[photo_name(r.id) for r in queued],
                                                    models=models)
        except ServiceError as e:
            e.abort(context)

    def _current_models(self, context) -> list[str]:
        """The ready vector models, asked of EmbedService with the caller's key."""
        metadata = [(k, v) for k, v in context.invocation_metadata() if k == "authorization"]
        try:
            info = self._embed.GetModelInfo(embed_pb2.GetModelInfoRequest(), metadata=metadata,
                                            timeout=EMBED_TIMEOUT_S)
        except grpc.RpcError as e:
            raise ServiceError(e.code(), f"cannot ask EmbedService for its models: {e.details()}",
                               reason="EMBED_UNREACHABLE") from e
        models = [m.model for m in info.models if m.role in VECTOR_MODEL_ROLES and m.ready]
        if not models:
            reasons = "; ".join(f"{role_name(m.role)}: {m.reason}" for m in info.models
                                if m.role in VECTOR_MODEL_ROLES)
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, f"no vector model is ready ({reasons})",
                               reason="MODEL_NOT_READY")
        return models

    def _all_photos(self, owner: str) -> Iterator[PhotoRecord]:
        after = None
        while True:
            page = self._metadata.list_photos(owner, page_size=MAX_PAGE_SIZE, after=after)
            yield from page.records
            if (after := page.next_after) is None:
                return

    def _send(self, records) -> None:
        try:
            self._producer.send_many(records)
        except EventLogUnavailableError as e:
            raise unavailable(f"the event log is unavailable, try again: {e}",
                              reason="EVENT_LOG_UNAVAILABLE") from e

    # Near-duplicates

    def _similar_photos(self, record: PhotoRecord) -> list[photo_pb2.Photo]:
        """The owner's other photos that look like the new one; never fails the upload."""
        try:
            ids = self.duplicates.similar(record)
            found = {r.id: r for r in self._metadata.get_photos(record.owner, ids)}
            return [self._photo(found[i]) for i in ids if i in found and found[i].deleted_at is None]
        except Exception:  # noqa: BLE001 - the photo is stored; the hint is extra
            log.exception("could not look for photos like %s", record.id)
            return []

    def ListDuplicateGroups(self, request, context):
        try:
            page_size = read_page_size(request.page_size, DEFAULT_GROUP_PAGE_SIZE, MAX_GROUP_PAGE_SIZE)
            owner = current_user().id
            filters = {"list": "duplicate_groups"}
            groups = self.duplicates.groups(owner)
            if request.page_token:
                after = _group_after(self._page_tokens.read(request.page_token, filters))
                groups = [g for g in groups if _group_position(g) < after]
            page = groups[:page_size]
            records = {r.id: r for r in self._metadata.get_photos(
                owner, [f.id for g in page for f in g.photos])}
            response = ingest_pb2.ListDuplicateGroupsResponse()
            for g in page:
                photos = [self._photo(records[f.id]) for f in g.photos
                          if f.id in records and records[f.id].deleted_at is None]
                if len(photos) > 1:  # unless trashed meanwhile
                    response.groups.add(photos=photos)
            if len(groups) > page_size:
                response.next_page_token = self._page_tokens.mint(_group_position(page[-1]), filters)
            return response
        except ServiceError as e:
            e.abort(context)

    # Watch

    def WatchPhotos(self, request, context):
        try:
            owner = current_user().id
            ids = [photo_id_from_name(n, field=f"names[{i}]") for i, n in enumerate(request.names)]
            if request.send_initial and not ids:
                raise invalid("send_initial needs names", field="send_initial")
            with self._watch_slots.hold(owner), self._hub.subscribe(owner, ids) as subscription:
                context.add_callback(subscription.close)  # wakes the wait below when the client leaves
                records = self._metadata.get_photos(owner, ids) if ids else []
                _require_all(ids, records)  # every named photo the caller's, as in BatchGetPhotos
                context.send_initial_metadata(())  # tells the client the watch is live
                if request.send_initial:
                    yield from map(record_message, records)
                while context.is_active():
                    change = subscription.next_change(WATCH_POLL_S)
                    if change is not None:
                        yield change
                    elif subscription.ended:
                        break
                if subscription.end_reason is not None:
                    raise subscription.end_reason
        except ServiceError as e:
            e.abort(context)

    def _owned(self, owner: str, name: str) -> PhotoRecord:
        record = self._metadata.get_photo(photo_id_from_name(name), owner=owner)
        if record is None:
            raise not_found(f"{name} not found")
        return record


def _require_trashed(records: list[PhotoRecord]) -> None:
    """FAILED_PRECONDITION naming the photos that are not in the trash."""
    outside = [photo_name(r.id) for r in records if r.deleted_at is None]
    if outside:
        raise failed_precondition(f"{len(outside)} of the photos are not in the trash: {', '.join(outside[:10])}",
                                  reason="NOT_IN_TRASH", metadata={"photos": ",".join(outside[:100])})


def _place_fields(exif: imaging.ExifInfo) -> dict[str, str]:
    """The PhotoRecord place_* fields of the photo's GPS coordinates (none without them). A
    failure leaves them empty: the upload goes on, and the backfill tries again later."""
    try:
        place = places.reverse_geocode(exif.latitude, exif.longitude)
    except Exception:  # noqa: BLE001 - a place is a nicety, never a reason to refuse a photo
        log.exception("reverse geocoding (%s, %s) failed", exif.latitude, exif.longitude)
        return {}
    if place is None:
        return {}
    return {"place_city": place.city, "place_region": place.region, "place_country": place.country,
            "place_country_code": place.country_code}


def _group_position(g: Group) -> list:
    """Where a duplicate group sorts (newest upload first) as a page token position."""
    return [g.newest.created_at.timestamp(), g.newest.id]


def _group_after(position: list) -> list:
    try:
        return [float(position[0]), str(position[1])]
    except (TypeError, ValueError, IndexError):
        raise invalid("page_token is not valid", field="page_token",
                      reason="INVALID_PAGE_TOKEN") from None


def owned_photos(metadata: MetadataStore, owner: str, names: Sequence[str], field: str = "names",
                 allow_none: bool = False) -> list[PhotoRecord]:
    """The owner's photos of 1 (0 with allow_none) to MAX_BATCH_NAMES names, each once, in order;
    NOT_FOUND naming any missing (another user's photo is not found): all or nothing."""
    if len(names) > MAX_BATCH_NAMES or (not names and not allow_none):
        raise invalid(f"{field} must hold 1 to {MAX_BATCH_NAMES} photo names", field=field)
    ids = list(dict.fromkeys(photo_id_from_name(n, field=f"{field}[{i}]") for i, n in enumerate(names)))
    records = metadata.get_photos(owner, ids) if ids else []
    _require_all(ids, records)
    return records


def _require_all(ids: list[str], records: list[PhotoRecord]) -> None:
    """NOT_FOUND naming the photos among `ids` that `records` lacks (missing, or another user's)."""
    found = {r.id for r in records}
    missing = [photo_name(i) for i in dict.fromkeys(ids) if i not in found]
    if missing:
        raise ServiceError(grpc.StatusCode.NOT_FOUND,
                           f"{len(missing)} of the photos not found: {', '.join(missing[:10])}",
                           reason="NOT_FOUND", metadata={"missing": ",".join(missing[:100])})
