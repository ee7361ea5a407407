"""IngestService end to end: the real server on a free port, embedded backends in tmp_path."""
from __future__ import annotations

import contextlib
import dataclasses
import shutil
import datetime as dt
import functools
import hashlib
import io
import itertools
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import skimage.data
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from PIL import Image, TiffImagePlugin
from prometheus_client import REGISTRY

from embed_svc.server import serve as serve_embed
from ingest_svc.server import STATUS_GROUP, serve
from photos.v1 import (auth_pb2, auth_pb2_grpc, embed_pb2, embed_pb2_grpc, events_pb2, ingest_pb2,
                       ingest_pb2_grpc, photo_pb2)
from photostore import uploads
from photostore.auth import bearer_metadata
from photostore.backends import open_events, open_metadata, open_vectors
from photostore.backends.base import (
    STATUS_INDEXED,
    TOPIC_PHOTO_CHANGES,
    TOPIC_PHOTO_STATUS,
    TOPIC_PHOTO_UPLOADED,
    EventLog,
    MetadataStore,
    PhotoRecord,
    VectorObject,
    VectorStore,
    utcnow,
)
from photostore.events import CREATED, DELETED, UPDATED, decode, status_record
from photostore.server import GrpcService
from photostore.settings import MIB, Settings
from tests.harness import add_user, start_auth_service
from tests.stack import free_port
from tests.tinyclip import tiny_settings

pytestmark = pytest.mark.timeout(120)

MAX_UPLOAD_BYTES = 2 * MIB
UPLOAD_CHUNK = 64 * 1024
EXIF_TAKEN_UTC = dt.datetime(2021, 6, 15, 12, 30, tzinfo=dt.timezone.utc)  # 14:30 at +02:00


# Images ---------------------------------------------------------------------------------------

def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kwargs)
    return out.getvalue()


@functools.cache
def chelsea() -> Image.Image:
    return Image.fromarray(skimage.data.chelsea())  # 451 x 300


@functools.cache
def astronaut_jpeg() -> bytes:
    return encode(Image.fromarray(skimage.data.astronaut()), "JPEG")


@functools.cache
def astronaut_png() -> bytes:  # ~400 KiB: several download chunks
    return encode(Image.fromarray(skimage.data.astronaut()), "PNG")


def dated_jpeg(taken: dt.datetime, colour: tuple[int, int, int]) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = taken.strftime("%Y:%m:%d %H:%M:%S")
    return encode(Image.new("RGB", (64, 48), colour), "JPEG", exif=exif)


@functools.cache
def exif_jpeg() -> bytes:
    """Chelsea rotated by EXIF (Orientation 6), with time, camera and a GPS fix."""
    exif = Image.Exif()
    exif[271] = "Canon\x00"
    exif[272] = " EOS R5 \x00"
    exif[274] = 6
    exif_ifd = exif.get_ifd(0x8769)
    exif_ifd[36867] = "2021:06:15 14:30:00"
    exif_ifd[36881] = "+02:00"
    gps = exif.get_ifd(0x8825)
    gps.update({1: "S", 2: (33.0, 51.0, 54.0), 3: "W", 4: (70.0, 30.0, 0.0), 5: b"\x00", 6: 520.5})
    return encode(chelsea(), "JPEG", exif=exif)


@functools.cache
def pixel_bomb(side: int) -> bytes:
    return encode(Image.new("1", (side, side)), "PNG", optimize=True)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Harness --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Ingest:
    settings: Settings
    svc: GrpcService
    channel: grpc.Channel
    stub: ingest_pb2_grpc.IngestServiceStub
    metadata: MetadataStore
    events: EventLog
    vectors: VectorStore
    alice_id: str
    alice: list
    bob_id: str
    bob: list

    def upload(self, data: bytes, auth=None, **kwargs) -> ingest_pb2.UploadPhotoResponse:
        return self.stub.UploadPhoto(upload_requests(data, **kwargs), metadata=auth or self.alice)

    def list(self, auth=None, **kwargs) -> ingest_pb2.ListPhotosResponse:
        return self.stub.ListPhotos(ingest_pb2.ListPhotosRequest(**kwargs), metadata=auth or self.alice)

    def get(self, name: str, auth=None) -> photo_pb2.Photo:
        return self.stub.GetPhoto(ingest_pb2.GetPhotoRequest(name=name), metadata=auth or self.alice).photo

    def batch_get(self, names, auth=None, **kwargs) -> list[str]:
        response = self.stub.BatchGetPhotos(ingest_pb2.BatchGetPhotosRequest(names=names, **kwargs),
                                            metadata=auth or self.alice)
        return [p.name for p in response.photos]

    def download(self, name: str, variant=ingest_pb2.PHOTO_VARIANT_UNSPECIFIED, auth=None):
        parts = list(self.stub.DownloadPhoto(ingest_pb2.DownloadPhotoRequest(name=name, variant=variant),
                                             metadata=auth or self.alice))
        return parts[0], b"".join(p.chunk for p in parts)

    def uploaded_events(self) -> list[Decoded]:
        return read_topic(self.events, TOPIC_PHOTO_UPLOADED)

    def change_events(self) -> list[Decoded]:
        return read_topic(self.events, TOPIC_PHOTO_CHANGES)

    def publish_status(self, photo_id: str, owner: str, status: int, **fields) -> None:
        """What the embed worker sends after an attempt; `status` is a photo_pb2.PhotoStatus."""
        fields.setdefault("attempts", 1)
        change = events_pb2.PhotoStatusChangedEvent(photo_id=photo_id, owner=owner, status=status, **fields)
        self.events.producer().send_many([status_record(change)])

    def status_backlog(self) -> int:
        return sum(self.events.lag(STATUS_GROUP, [TOPIC_PHOTO_STATUS]).values())

    def stored_files(self) -> list[str]:
        return sorted(str(p.relative_to(self.settings.data_dir))
                      for d in (self.settings.blobs_dir, self.settings.data_dir / "tmp")
                      for p in d.rglob("*") if p.is_file())


@dataclasses.dataclass
class Decoded:
    key: str
    message: events_pb2.PhotoEvent

    @property
    def kind(self) -> str:
        return self.message.WhichOneof("event")


def read_topic(events: EventLog, topic: str, timeout_s: float = 20.0) -> list[Decoded]:
    """Every record on `topic` so far, decoded, by partition in log order (so one photo's in the
    order sent), read by a fresh group until its lag is nothing."""
    group = f"test-{uuid.uuid4().hex}"
    consumer = events.consumer(group, [topic])
    read = []
    deadline = time.monotonic() + timeout_s
    try:
        while sum(events.lag(group, [topic]).values()) > 0:
            assert time.monotonic() < deadline, f"could not read {topic} to its end in time"
            batch = consumer.poll(max_records=1000, timeout_s=0.2)
            if batch:
                consumer.commit(batch)
                read += batch
    finally:
        consumer.close()
    read.sort(key=lambda e: (e.partition, e.offset))
    return [Decoded(e.key, decode(e)) for e in read]


def upload_requests(data: bytes, *, filename="photo.jpg", size=None, checksum=None, request_id="",
                    chunk=UPLOAD_CHUNK):
    return uploads.upload_requests(
        io.BytesIO(data), filename=filename, content_type="image/jpeg",
        size=len(data) if size is None else size, sha256=checksum or sha256(data),
        request_id=request_id, chunk_bytes=chunk)


def make_settings(data_dir) -> Settings:
    return Settings(data_dir=data_dir, host="127.0.0.1", shutdown_grace_seconds=0.5,
                    grpc_max_workers=8, max_upload_bytes=MAX_UPLOAD_BYTES)


def wait_for(predicate, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while not (result := predicate()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return result


@contextlib.contextmanager
def serving(settings: Settings, max_watchers: int = 2) -> Iterator[tuple[GrpcService, grpc.Channel]]:
    svc = serve(settings, port=0, max_watchers=max_watchers)
    channel = grpc.insecure_channel(f"127.0.0.1:{svc.port}")
    try:
        yield svc, channel
    finally:
        channel.close()
        svc.stop()


@contextlib.contextmanager
def running_ingest(settings: Settings) -> Iterator[Ingest]:
    """The service on a free port, with users alice and bob."""
    (alice_id, alice_key), (bob_id, bob_key) = add_user(settings, "alice"), add_user(settings, "bob")
    with serving(settings) as (svc, channel):
        yield Ingest(settings=settings, svc=svc, channel=channel,
                     stub=ingest_pb2_grpc.IngestServiceStub(channel),
                     metadata=open_metadata(settings), events=open_events(settings),
                     vectors=open_vectors(settings),
                     alice_id=alice_id, alice=bearer_metadata(alice_key),
                     bob_id=bob_id, bob=bearer_metadata(bob_key))


@contextlib.contextmanager
def second_replica(ingest: Ingest) -> Iterator[Ingest]:
    """Another ingest server on the same data dir (another replica of the service)."""
    with serving(ingest.settings) as (svc, channel):
        yield dataclasses.replace(ingest, svc=svc, channel=channel,
                                  stub=ingest_pb2_grpc.IngestServiceStub(channel))


@pytest.fixture
def ingest(tmp_path):
    with running_ingest(make_settings(tmp_path)) as running:
        yield running


def pid(photo: photo_pb2.Photo) -> str:
    return photo.name.removeprefix("photos/")


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        result = call(*args, **kwargs)
        if isinstance(result, Iterator):
            list(result)  # a server stream fails when read
    return info.value


def _detail(err: grpc.RpcError, kind):
    status = rpc_status.from_call(err)
    for detail in status.details if status else ():
        if detail.Is(kind.DESCRIPTOR):
            message = kind()
            detail.Unpack(message)
            return message
    return None


def violated_field(err: grpc.RpcError) -> str | None:
    bad = _detail(err, error_details_pb2.BadRequest)
    return bad.field_violations[0].field if bad else None


def error_info(err: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    info = _detail(err, error_details_pb2.ErrorInfo)
    assert info is not None, f"no ErrorInfo in {err.code()}: {err.details()}"
    return info


# Uploads ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, content_type", [
    ("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp"), ("GIF", "image/gif"),
    ("HEIF", "image/heic"),
])
def test_upload_sniffs_each_supported_format(ingest, fmt, content_type):
    data = encode(chelsea(), fmt)
    photo = ingest.upload(data, filename="cat.bin").photo
    assert (photo.content_type, photo.width, photo.height) == (content_type, 451, 300)
    assert (photo.size_bytes, photo.sha256, photo.filename) == (len(data), sha256(data), "cat.bin")


def test_upload_stores_blob_thumbnail_row_and_event(ingest):
    data = astronaut_jpeg()
    response = ingest.upload(data, filename="astronaut.jpg")
    photo = response.photo
    assert not response.duplicate
    assert photo.name.startswith("photos/") and photo.owner == f"users/{ingest.alice_id}"
    assert photo.status == photo_pb2.PHOTO_STATUS_UPLOADED
    assert (photo.width, photo.height) == (512, 512)
    assert not photo.HasField("take_time") and not photo.HasField("location")
    photo_id = pid(photo)
    preview = f"blobs/renditions/{ingest.alice_id}/{photo_id}.preview.jpg"  # made after the upload
    assert [f for f in ingest.stored_files() if f != preview] == [
        f"blobs/copies/{ingest.alice_id}/{photo_id}.jpg", f"blobs/originals/{ingest.alice_id}/{sha256(data)}",
        f"blobs/thumbnails/{ingest.alice_id}/{photo_id}.jpg"]
    wait_for(lambda: preview in ingest.stored_files())
    [event] = ingest.uploaded_events()
    assert (event.key, event.kind) == (photo_id, "uploaded")
    assert event.message.uploaded == events_pb2.PhotoUploadedEvent(subject=events_pb2.IndexingSubject(
        photo_id=photo_id, owner=ingest.alice_id, blob_key=f"originals/{ingest.alice_id}/{sha256(data)}",
        sha256=sha256(data), content_type="image/jpeg", filename="astronaut.jpg",
        model_copy_key=f"copies/{ingest.alice_id}/{photo_id}.jpg"))
    # The copy the index stage reads: RGB, short side model_copy_px.
    with Image.open(ingest.settings.blobs_dir / "copies" / ingest.alice_id / f"{photo_id}.jpg") as copy:
        assert (copy.format, copy.mode, copy.size) == ("JPEG", "RGB", (256, 256))
    assert event.message.HasField("event_time") and not event.message.HasField("dead_letter")
    # Every replica's watchers hear of it.
    [change] = ingest.change_events()
    assert (change.key, change.kind) == (photo_id, "changed")
    assert change.message.changed.change_type == CREATED and change.message.changed.photo == photo
    assert ingest.metadata.get_photo(photo_id).published


def test_upload_reads_exif_and_applies_orientation(ingest):
    photo = ingest.upload(exif_jpeg()).photo
    assert (photo.width, photo.height) == (300, 451)  # stored 451x300, Orientation 6 turns it
    assert photo.take_time.ToDatetime(tzinfo=dt.timezone.utc) == EXIF_TAKEN_UTC
    assert (photo.camera_make, photo.camera_model) == ("Canon", "EOS R5")
    assert photo.location.latitude == pytest.approx(-(33 + 51 / 60 + 54 / 3600))
    assert photo.location.longitude == pytest.approx(-70.5)
    assert photo.location.altitude == pytest.approx(520.5)
    [event] = ingest.uploaded_events()
    subject = event.message.uploaded.subject
    assert subject.take_time.ToDatetime(tzinfo=dt.timezone.utc) == EXIF_TAKEN_UTC
    assert (subject.camera_make, subject.camera_model) == ("Canon", "EOS R5")

    first, thumbnail = ingest.download(photo.name, ingest_pb2.PHOTO_VARIANT_THUMBNAIL)
    assert (first.content_type, first.size_bytes) == ("image/jpeg", len(thumbnail))
    with Image.open(io.BytesIO(thumbnail)) as thumb:
        assert thumb.format == "JPEG" and thumb.mode == "RGB"
        assert thumb.size == (213, 320)  # upright, longest side thumbnail_px
    with Image.open(ingest.settings.blobs_dir / subject.model_copy_key) as copy:
        assert copy.size == (256, 385)  # upright, short side model_copy_px
        assert not copy.getexif()  # no orientation left to apply twice


def test_bad_exif_never_fails_an_upload(ingest):
    exif = Image.Exif()
    exif[274] = 9  # no such orientation
    exif.get_ifd(0x8769)[36867] = "0000:00:00 00:00:00"
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (TiffImagePlugin.IFDRational(1, 0), 0.0, 0.0), 3: "E", 4: (1.0, 2.0, 3.0)})
    photo = ingest.upload(encode(Image.new("RGB", (40, 30), "red"), "JPEG", exif=exif)).photo
    assert (photo.width, photo.height) == (40, 30)
    assert not photo.HasField("take_time") and not photo.HasField("location")

    garbage = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff" + bytes(20)
    photo = ingest.upload(encode(Image.new("RGB", (40, 30), "blue"), "JPEG", exif=garbage)).photo
    assert (photo.width, photo.height, photo.camera_make) == (40, 30, "")


def test_transparent_png_gets_a_jpeg_thumbnail(ingest):
    photo = ingest.upload(encode(Image.fromarray(skimage.data.logo()), "PNG")).photo
    assert photo.content_type == "image/png"
    _, thumbnail = ingest.download(photo.name, ingest_pb2.PHOTO_VARIANT_THUMBNAIL)
    with Image.open(io.BytesIO(thumbnail)) as thumb:
        assert (thumb.format, thumb.size) == ("JPEG", (320, 320))
        assert min(thumb.getpixel((0, 0))) > 240  # transparent corner turned white


def test_same_bytes_again_is_a_duplicate_for_the_same_owner_only(ingest):
    data = astronaut_png()  # several chunks: the answer comes before the server reads them all
    first = ingest.upload(data).photo
    again = ingest.upload(data, filename="copy.jpg")
    assert again.duplicate and again.photo.name == first.name
    bobs = ingest.upload(data, auth=ingest.bob)
    assert not bobs.duplicate and bobs.photo.name != first.name
    assert bobs.photo.owner == f"users/{ingest.bob_id}"
    assert ingest.list().total_size == 1 and ingest.list(auth=ingest.bob).total_size == 1
    assert sorted(e.key for e in ingest.uploaded_events()) == sorted([pid(first), pid(bobs.photo)])
    assert len(ingest.change_events()) == 2


def test_retry_with_the_same_request_id_returns_the_first_result(ingest):
    first = ingest.upload(astronaut_jpeg(), request_id="req-1", chunk=16 * 1024)
    retry = ingest.upload(astronaut_jpeg(), request_id="req-1", chunk=16 * 1024)
    assert retry.photo.name == first.photo.name and not retry.duplicate
    assert ingest.list().total_size == 1 and len(ingest.uploaded_events()) == 1
    assert len(ingest.change_events()) == 1

    err = rpc_error(ingest.upload, exif_jpeg(), request_id="req-1")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_field(err) == "metadata.request_id"
    assert ingest.list().total_size == 1


def bad_uploads():
    """(id, requests, expected code, violated field or None)."""
    good = astronaut_jpeg()
    truncated = good[:len(good) // 2]
    text = b"this is not a photo at all\n" * 40
    over_chunk = os.urandom(MIB + 1)
    over_limit = os.urandom(MAX_UPLOAD_BYTES + 1)
    meta = next(upload_requests(good))
    chunk = ingest_pb2.UploadPhotoRequest(chunk=good)
    invalid, exhausted = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED
    return [
        ("truncated-jpeg", lambda: upload_requests(truncated), invalid, "chunk"),
        ("wrong-checksum", lambda: upload_requests(good, checksum=sha256(b"other")), invalid,
         "metadata.sha256"),
        ("checksum-not-hex", lambda: upload_requests(good, checksum="abc"), invalid, "metadata.sha256"),
        ("zero-bytes", lambda: upload_requests(b""), invalid, "metadata.size_bytes"),
        ("fewer-bytes-than-declared", lambda: upload_requests(good, size=len(good) + 1), invalid,
         "metadata.size_bytes"),
        ("more-bytes-than-declared", lambda: upload_requests(good, size=len(good) - 1), invalid,
         "metadata.size_bytes"),
        ("declared-over-limit", lambda: upload_requests(over_limit), exhausted, None),
        ("sent-over-limit", lambda: upload_requests(over_limit, size=MAX_UPLOAD_BYTES), exhausted, None),
        ("pixel-bomb", lambda: upload_requests(pixel_bomb(12_000)), exhausted, None),
        ("pillow-bomb-error", lambda: upload_requests(pixel_bomb(20_000)), exhausted, None),
        ("text-named-jpg", lambda: upload_requests(text, filename="photo.jpg"), invalid, "chunk"),
        ("unsupported-bmp", lambda: upload_requests(encode(chelsea(), "BMP")), invalid, "chunk"),
        ("chunk-over-1mib", lambda: upload_requests(over_chunk, chunk=len(over_chunk)), invalid,
         "chunk"),
        ("first-message-not-metadata", lambda: iter([chunk]), invalid, "metadata"),
        ("metadata-twice", lambda: iter([meta, meta, chunk]), invalid, "metadata"),
        ("no-messages", lambda: iter([]), invalid, "metadata"),
    ]


@pytest.mark.parametrize("requests, code, field",
                         [case[1:] for case in bad_uploads()], ids=[case[0] for case in bad_uploads()])
def test_bad_upload_is_rejected_and_leaves_nothing(ingest, requests, code, field):
    err = rpc_error(ingest.stub.UploadPhoto, requests(), metadata=ingest.alice)
    assert err.code() == code, err.details()
    status = rpc_status.from_call(err)
    assert status is not None and status.details
    if field is not None:
        assert violated_field(err) == field
    assert ingest.list().total_size == 0
    assert ingest.stored_files() == []
    assert ingest.uploaded_events() == [] and ingest.change_events() == []


def test_rejection_messages_say_what_is_wrong(ingest):
    good = astronaut_jpeg()
    truncated = good[:len(good) // 2]
    err = rpc_error(ingest.upload, truncated)
    assert "image data is truncated or corrupt" in err.details()
    err = rpc_error(ingest.upload, b"hello " * 100, filename="cat.jpg")
    assert "not a JPEG, PNG, WebP, GIF or HEIC image" in err.details()
    err = rpc_error(ingest.upload, pixel_bomb(12_000))
    assert "144000000 pixels" in err.details()


@pytest.mark.parametrize("auth", [[], bearer_metadata("psk_not-a-real-key")], ids=["no-key", "bad-key"])
def test_upload_without_a_valid_key_is_unauthenticated(ingest, auth):
    err = rpc_error(ingest.stub.UploadPhoto, upload_requests(astronaut_jpeg()), metadata=auth)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert rpc_status.from_call(err).details
    assert ingest.list().total_size == 0 and ingest.stored_files() == []
    assert ingest.uploaded_events() == []


# Reads -----------------------------------------------------------------------------------------

def test_list_pages_newest_first_and_filters(ingest):
    days = [dt.datetime(2020, 1, d, 12, tzinfo=dt.timezone.utc) for d in (3, 1, 5, 2, 4)]
    names = {day: ingest.upload(dated_jpeg(day, (40 * i, 80, 200 - 30 * i))).photo.name
             for i, day in enumerate(days)}
    newest_first = [names[day] for day in sorted(days, reverse=True)]

    seen, token = [], ""
    while True:
        page = ingest.list(page_size=2, page_token=token)
        assert page.total_size == 5 and len(page.photos) <= 2
        seen += [p.name for p in page.photos]
        token = page.next_page_token
        if not token:
            break
    assert seen == newest_first
    assert [p.name for p in ingest.list().photos] == newest_first

    def ts(day: dt.datetime) -> timestamp_pb2.Timestamp:
        t = timestamp_pb2.Timestamp()
        t.FromDatetime(day)
        return t

    window = ingest.list(start_time=ts(days[3]), end_time=ts(days[4]))  # Jan 2 <= t < Jan 4
    assert [p.name for p in window.photos] == [names[days[0]], names[days[3]]] and window.total_size == 2

    indexed_id = names[days[0]].removeprefix("photos/")
    ingest.publish_status(indexed_id, ingest.alice_id, photo_pb2.PHOTO_STATUS_INDEXED)
    wait_for(lambda: ingest.list(status=photo_pb2.PHOTO_STATUS_INDEXED).total_size == 1)
    assert ingest.list(status=photo_pb2.PHOTO_STATUS_UPLOADED).total_size == 4
    assert ingest.list(auth=ingest.bob).total_size == 0

    for bad in (dict(page_size=-1), dict(start_time=ts(days[4]), end_time=ts(days[3]))):
        assert rpc_error(ingest.list, **bad).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_page_tokens_are_opaque_and_bound_to_the_filters(ingest):
    days = [dt.datetime(2020, 1, d, 12, tzinfo=dt.timezone.utc) for d in (1, 2, 3, 4)]
    for i, day in enumerate(days):
        ingest.upload(dated_jpeg(day, (60 * i, 100, 30)))
    since = timestamp_pb2.Timestamp()
    since.FromDatetime(days[0])
    first = ingest.list(page_size=1)
    token = first.next_page_token
    assert token and first.photos[0].name.removeprefix("photos/") not in token

    # Same filters: any page size may follow (AIP-158).
    rest = ingest.list(page_size=10, page_token=token)
    assert len(rest.photos) == 3 and not rest.next_page_token
    filtered = ingest.list(page_size=1, start_time=since)
    assert filtered.next_page_token
    assert len(ingest.list(start_time=since, page_token=filtered.next_page_token).photos) == 3

    # The same token with other filters, either way round.
    for token_used, filters in ((token, dict(status=photo_pb2.PHOTO_STATUS_UPLOADED)),
                                (token, dict(start_time=since)),
                                (filtered.next_page_token, {})):
        err = rpc_error(ingest.list, page_token=token_used, **filters)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (error_info(err).reason, violated_field(err)) == ("PAGE_TOKEN_MISMATCH", "page_token")

    # Forged: garbage, a tampered real token, a truncated one.
    tampered = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    for forged in ("not a token", tampered, "gAAAAA" + token[6:40]):
        err = rpc_error(ingest.list, page_token=forged)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (error_info(err).reason, violated_field(err)) == ("INVALID_PAGE_TOKEN", "page_token")


def test_get_and_batch_get_are_owner_scoped(ingest):
    a = ingest.upload(astronaut_jpeg()).photo
    b = ingest.upload(exif_jpeg()).photo
    bobs = ingest.upload(astronaut_jpeg(), auth=ingest.bob).photo
    got = ingest.stub.GetPhoto(ingest_pb2.GetPhotoRequest(name=a.name), metadata=ingest.alice).photo
    assert (got.name, got.sha256, got.width, got.filename) == (a.name, a.sha256, a.width, a.filename)

    assert got.owner == f"users/{ingest.alice_id}"
    assert ingest.batch_get([b.name, a.name]) == [b.name, a.name]

    get = ingest.stub.GetPhoto
    err = rpc_error(get, ingest_pb2.GetPhotoRequest(name=bobs.name), metadata=ingest.alice)
    assert err.code() == grpc.StatusCode.NOT_FOUND and rpc_status.from_call(err).details
    err = rpc_error(get, ingest_pb2.GetPhotoRequest(name="albums/1"), metadata=ingest.alice)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and violated_field(err) == "name"
    err = rpc_error(ingest.stub.BatchGetPhotos, ingest_pb2.BatchGetPhotosRequest(
        names=[a.name] * 1001), metadata=ingest.alice)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = rpc_error(ingest.stub.BatchGetPhotos, ingest_pb2.BatchGetPhotosRequest(
        names=[a.name, "bad"]), metadata=ingest.alice)
    assert violated_field(err) == "names[1]"
    err = rpc_error(get, ingest_pb2.GetPhotoRequest(name=a.name))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


def test_batch_get_is_all_or_nothing_unless_skip_missing(ingest):
    a = ingest.upload(astronaut_jpeg()).photo
    b = ingest.upload(exif_jpeg()).photo
    bobs = ingest.upload(astronaut_jpeg(), auth=ingest.bob).photo
    asked = [b.name, "photos/missing", bobs.name, a.name]

    err = rpc_error(ingest.batch_get, asked)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    info = error_info(err)
    assert info.reason == "NOT_FOUND"
    assert info.metadata["missing"].split(",") == ["photos/missing", bobs.name]
    assert "photos/missing" in err.details() and bobs.name in err.details()
    assert a.name not in err.details()

    assert ingest.batch_get(asked, skip_missing=True) == [b.name, a.name]
    assert ingest.batch_get(asked, auth=ingest.bob, skip_missing=True) == [bobs.name]
    assert ingest.batch_get([bobs.name, "photos/missing"], skip_missing=True) == []

    for names in ([], ["photos/"]):
        err = rpc_error(ingest.batch_get, names, skip_missing=True)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_batch_get_a_repeated_name_does_not_hide_a_missing_one(ingest):
    a = ingest.upload(astronaut_jpeg()).photo
    err = rpc_error(ingest.batch_get, [a.name, a.name, "photos/missing"])
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(err).metadata["missing"] == "photos/missing"


def test_download_url_is_empty_on_local_disk_and_owner_scoped(ingest):
    photo = ingest.upload(astronaut_jpeg()).photo
    bobs = ingest.upload(exif_jpeg(), auth=ingest.bob).photo

    def url(name: str, auth=None, **kwargs) -> ingest_pb2.GetPhotoDownloadUrlResponse:
        return ingest.stub.GetPhotoDownloadUrl(
            ingest_pb2.GetPhotoDownloadUrlRequest(name=name, **kwargs), metadata=auth or ingest.alice)

    for variant in (ingest_pb2.PHOTO_VARIANT_UNSPECIFIED, ingest_pb2.PHOTO_VARIANT_THUMBNAIL):
        response = url(photo.name, variant=variant)
        assert response.url == "" and not response.HasField("expire_time")  # use DownloadPhoto
    assert url(bobs.name, auth=ingest.bob).url == ""

    for name, code in ((bobs.name, grpc.StatusCode.NOT_FOUND),
                       ("photos/missing", grpc.StatusCode.NOT_FOUND),
                       ("albums/1", grpc.StatusCode.INVALID_ARGUMENT)):
        assert rpc_error(url, name).code() == code
    assert rpc_error(url, photo.name, auth=bearer_metadata("psk_not-a-real-key")).code() == \
        grpc.StatusCode.UNAUTHENTICATED


def test_auth_service_names_the_caller(ingest):
    auth = auth_pb2_grpc.AuthServiceStub(ingest.channel)
    for key, (user_id, name) in ((ingest.alice, (ingest.alice_id, "alice")),
                                 (ingest.bob, (ingest.bob_id, "bob"))):
        caller = auth.GetCaller(auth_pb2.GetCallerRequest(), metadata=key)
        assert (caller.user_id, caller.display_name) == (user_id, name)
    for bad in ([], bearer_metadata("psk_not-a-real-key"), [("authorization", "Basic eDp5")]):
        err = rpc_error(auth.GetCaller, auth_pb2.GetCallerRequest(), metadata=bad)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_info(err).reason in ("API_KEY_MISSING", "API_KEY_INVALID")


def test_download_streams_the_original_in_chunks(ingest):
    data = astronaut_png()
    photo = ingest.upload(data, filename="astronaut.png").photo
    parts = list(ingest.stub.DownloadPhoto(ingest_pb2.DownloadPhotoRequest(name=photo.name),
                                           metadata=ingest.alice))
    assert len(parts) == -(-len(data) // (256 * 1024))
    assert (parts[0].content_type, parts[0].size_bytes) == ("image/png", len(data))
    assert all(not p.content_type and not p.size_bytes for p in parts[1:])
    assert b"".join(p.chunk for p in parts) == data


def test_delete_removes_everything_and_is_owner_scoped(ingest):
    data = astronaut_jpeg()
    photo = ingest.upload(data).photo
    photo_id = photo.name.removeprefix("photos/")
    vector = np.ones(4, dtype=np.float32) / 2
    ingest.vectors.upsert(VectorObject(photo_id=photo_id, owner=ingest.alice_id, model="m",
                                       vector=vector))

    request = ingest_pb2.DeletePhotoRequest(name=photo.name)
    for call, req in ((ingest.stub.DeletePhoto, request),
                      (ingest.stub.GetPhoto, ingest_pb2.GetPhotoRequest(name=photo.name)),
                      (ingest.stub.DownloadPhoto, ingest_pb2.DownloadPhotoRequest(name=photo.name))):
        assert rpc_error(call, req, metadata=ingest.bob).code() == grpc.StatusCode.NOT_FOUND
    # The original and 3 renditions, the preview made after the upload.
    wait_for(lambda: len(ingest.stored_files()) == 4)
    assert ingest.list().total_size == 1

    ingest.stub.DeletePhoto(request, metadata=ingest.alice)  # to the trash
    assert ingest.list().total_size == 0 and len(ingest.stored_files()) == 4
    purge = ingest_pb2.PurgePhotosRequest(names=[photo.name])
    assert rpc_error(ingest.stub.PurgePhotos, purge, metadata=ingest.bob).code() == grpc.StatusCode.NOT_FOUND
    ingest.stub.PurgePhotos(purge, metadata=ingest.alice)
    assert ingest.stored_files() == []
    assert ingest.vectors.get(photo_id) is None
    assert rpc_error(ingest.stub.GetPhoto, ingest_pb2.GetPhotoRequest(name=photo.name),
                     metadata=ingest.alice).code() == grpc.StatusCode.NOT_FOUND
    assert rpc_error(ingest.stub.DeletePhoto, request,
                     metadata=ingest.alice).code() == grpc.StatusCode.NOT_FOUND
    changes = [e.message.changed for e in ingest.change_events()]
    assert [(c.change_type, c.photo.name) for c in changes] == [
        (CREATED, photo.name), (UPDATED, photo.name), (DELETED, photo.name)]
    assert not ingest.upload(data).duplicate  # the bytes are new again


# Status events and watching ---------------------------------------------------------------------

class Watcher:
    """Collects a WatchPhotos stream on a thread; the stream is live once the constructor returns."""

    def __init__(self, ingest: Ingest, auth, **request):
        self.call = ingest.stub.WatchPhotos(ingest_pb2.WatchPhotosRequest(**request), metadata=auth)
        self.call.initial_metadata()
        if self.call.done():  # refused before it started
            raise self.call
        self.changes: queue.Queue = queue.Queue()
        self.error: grpc.RpcError | None = None
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self):
        try:
            for change in self.call:
                self.changes.put(change)
        except grpc.RpcError as e:
            self.error = e

    def next(self, timeout_s: float = 20.0) -> ingest_pb2.WatchPhotosResponse:
        return self.changes.get(timeout=timeout_s)

    def take(self, n: int, timeout_s: float = 30.0) -> list[ingest_pb2.WatchPhotosResponse]:
        deadline = time.monotonic() + timeout_s
        return [self.changes.get(timeout=max(0.0, deadline - time.monotonic())) for _ in range(n)]

    def finish(self, timeout_s: float = 10.0) -> grpc.RpcError | None:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive()
        return self.error


def test_watch_sees_upload_status_and_delete_of_own_photos(ingest):
    watcher = Watcher(ingest, ingest.alice)
    ingest.upload(astronaut_jpeg(), auth=ingest.bob)  # not alice's: never shown
    photo = ingest.upload(exif_jpeg()).photo

    created = watcher.next()
    assert (created.change_type, created.photo) == (CREATED, photo)
    assert created.photo.status == photo_pb2.PHOTO_STATUS_UPLOADED and created.HasField("event_time")
    wait_for(lambda: ingest.get(photo.name).has_preview)  # made in the background: no change event

    ingest.publish_status(pid(photo), ingest.alice_id, photo_pb2.PHOTO_STATUS_INDEXED,
                          clip_model="ViT-test", embedding_models=["ViT-test", "text-test"], attempts=2)
    indexed = watcher.next()
    assert (indexed.change_type, indexed.photo.name) == (UPDATED, photo.name)
    assert indexed.photo.status == photo_pb2.PHOTO_STATUS_INDEXED
    assert (list(indexed.photo.embedding_models), indexed.photo.index_attempts) == (
        ["ViT-test", "text-test"], 2)
    assert ingest.get(photo.name) == indexed.photo
    wait_for(lambda: ingest.status_backlog() == 0)

    ingest.publish_status(pid(photo), ingest.alice_id, photo_pb2.PHOTO_STATUS_FAILED,
                          reason="model gave up", attempts=5)
    failed = watcher.next()
    assert failed.change_type == UPDATED
    assert (failed.photo.status, failed.photo.status_reason, failed.photo.index_attempts) == (
        photo_pb2.PHOTO_STATUS_FAILED, "model gave up", 5)

    ingest.stub.DeletePhoto(ingest_pb2.DeletePhotoRequest(name=photo.name), metadata=ingest.alice)
    trashed = watcher.next()
    assert (trashed.change_type, trashed.photo.name) == (UPDATED, photo.name)
    assert trashed.photo.HasField("delete_time") and trashed.photo.HasField("purge_time")
    ingest.stub.PurgePhotos(ingest_pb2.PurgePhotosRequest(names=[photo.name]), metadata=ingest.alice)
    deleted = watcher.next()
    assert (deleted.change_type, deleted.photo.name) == (DELETED, photo.name)
    assert deleted.photo.status == photo_pb2.PHOTO_STATUS_FAILED  # as it was
    assert watcher.changes.empty()

    watcher.call.cancel()
    assert watcher.finish().code() == grpc.StatusCode.CANCELLED


def test_watch_named_photos_with_initial_state(ingest):
    a = ingest.upload(astronaut_jpeg()).photo
    b = ingest.upload(exif_jpeg()).photo
    wait_for(lambda: ingest.get(b.name).has_preview)  # made in the background: no change event
    watcher = Watcher(ingest, ingest.alice, names=[b.name], send_initial=True)
    initial = watcher.next()
    assert initial.photo == ingest.get(b.name)
    assert initial.photo.status == photo_pb2.PHOTO_STATUS_UPLOADED
    ingest.publish_status(pid(a), ingest.alice_id, photo_pb2.PHOTO_STATUS_INDEXED)
    ingest.publish_status(pid(b), ingest.alice_id, photo_pb2.PHOTO_STATUS_INDEXED)
    change = watcher.next()
    if change.change_type == CREATED:  # b's upload may reach the watchers after the initial state
        assert change.photo.name == b.name
        change = watcher.next()
    assert (change.change_type, change.photo.name) == (UPDATED, b.name)
    assert change.photo.status == photo_pb2.PHOTO_STATUS_INDEXED
    wait_for(lambda: ingest.get(a.name).status == photo_pb2.PHOTO_STATUS_INDEXED)
    watcher.call.cancel()
    watcher.finish()
    assert watcher.changes.empty()

    err = rpc_error(ingest.stub.WatchPhotos, ingest_pb2.WatchPhotosRequest(send_initial=True),
                    metadata=ingest.alice)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_watching_a_photo_that_is_not_the_callers_is_not_found(ingest):
    """Another user's photo, or one that does not exist, fails the whole watch: no empty stream."""
    mine = ingest.upload(astronaut_jpeg()).photo
    nobodys = "photos/" + "0" * 32
    for names, auth in (([mine.name], ingest.bob), ([mine.name, nobodys], ingest.alice)):
        for send_initial in (True, False):
            call = ingest.stub.WatchPhotos(ingest_pb2.WatchPhotosRequest(names=names, send_initial=send_initial),
                                           metadata=auth, timeout=30)
            with pytest.raises(grpc.RpcError) as caught:
                next(call)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            assert error_info(caught.value).metadata["missing"] == (nobodys if auth == ingest.alice else mine.name)
            assert "not found" in caught.value.details()


def test_a_change_through_another_replica_reaches_watchers_of_this_one(ingest):
    with second_replica(ingest) as other:
        here = Watcher(ingest, ingest.alice)
        there = Watcher(other, ingest.alice)
        photo = other.upload(astronaut_jpeg()).photo
        for watcher in (here, there):
            created = watcher.next()
            assert (created.change_type, created.photo) == (CREATED, photo)

        ingest.stub.DeletePhoto(ingest_pb2.DeletePhotoRequest(name=photo.name), metadata=ingest.alice)
        ingest.stub.PurgePhotos(ingest_pb2.PurgePhotosRequest(names=[photo.name]), metadata=ingest.alice)
        for watcher in (here, there):
            assert [(c.change_type, c.photo.name) for c in (watcher.next(), watcher.next())] == [
                (UPDATED, photo.name), (DELETED, photo.name)]
        assert rpc_error(other.get, photo.name).code() == grpc.StatusCode.NOT_FOUND


def test_each_status_event_is_applied_once_with_two_replicas(ingest):
    with second_replica(ingest) as other:
        watchers = [Watcher(ingest, ingest.alice), Watcher(other, ingest.alice)]
        photos = [(ingest if i % 2 else other).upload(dated_jpeg(EXIF_TAKEN_UTC, (30 * i, 90, 200))).photo
                  for i in range(6)]
        for watcher in watchers:
            assert sorted(c.photo.name for c in watcher.take(len(photos))) == sorted(p.name for p in photos)

        # Two status events per photo, spread over the partitions the replicas share.
        for photo in photos:
            ingest.publish_status(pid(photo), ingest.alice_id, photo_pb2.PHOTO_STATUS_INDEXED,
                                  embedding_models=["m-1"])
            ingest.publish_status(pid(photo), ingest.alice_id, photo_pb2.PHOTO_STATUS_FAILED,
                                  reason="second thoughts", attempts=2)
        wait_for(lambda: ingest.status_backlog() == 0)

        # Exactly one UPDATED change per status event, in the order of the photo's events.
        updates = {}
        for change in ingest.change_events():
            assert change.kind == "changed"
            if change.message.changed.change_type == UPDATED:
                updates.setdefault(change.key, []).append(change.message.changed.photo.status)
        expected = [photo_pb2.PHOTO_STATUS_INDEXED, photo_pb2.PHOTO_STATUS_FAILED]
        assert updates == {pid(p): expected for p in photos}

        for watcher in watchers:
            seen = {}
            for change in watcher.take(2 * len(photos)):
                assert change.change_type == UPDATED
                seen.setdefault(change.photo.name, []).append(change.photo.status)
            assert seen == {p.name: expected for p in photos}
        for photo in photos:
            stored = other.get(photo.name)
            assert (stored.status, stored.status_reason, stored.index_attempts) == (
                photo_pb2.PHOTO_STATUS_FAILED, "second thoughts", 2)


def test_watchers_are_capped_and_end_when_the_server_stops(ingest):
    watchers = [Watcher(ingest, ingest.alice) for _ in range(2)]  # the fixture allows two
    err = rpc_error(Watcher, ingest, ingest.bob)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(err).reason == "TOO_MANY_WATCHERS"

    watchers[0].call.cancel()
    watchers[0].finish()
    replacement = wait_for(lambda: _try_watch(ingest))

    ingest.svc.stop()
    for watcher in (watchers[1], replacement):
        assert watcher.finish().code() == grpc.StatusCode.UNAVAILABLE


def test_one_users_watches_leave_the_next_user_served(tmp_path):
    settings = make_settings(tmp_path).model_copy(update={"max_watches_per_user": 3})
    with running_ingest(settings) as ingest, ingest_serving_watchers(ingest, 10):
        alices = [Watcher(ingest, ingest.alice) for _ in range(3)]
        err = rpc_error(Watcher, ingest, ingest.alice)
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(err).reason == "TOO_MANY_WATCHERS_PER_USER"
        assert quota_subject(err) == f"users/{ingest.alice_id}"

        bobs = Watcher(ingest, ingest.bob)  # the server's other seven are there for others
        photo = ingest.upload(astronaut_jpeg(), auth=ingest.bob).photo
        assert bobs.next().photo.name == photo.name

        alices[0].call.cancel()
        alices[0].finish()
        wait_for(lambda: _try_watch(ingest, ingest.alice))  # a closed watch gives its place back


@contextlib.contextmanager
def ingest_serving_watchers(ingest: Ingest, max_watchers: int) -> Iterator[Ingest]:
    """`ingest`, served by a server that allows max_watchers watches in all."""
    ingest.svc.stop()
    ingest.channel.close()
    with serving(ingest.settings, max_watchers=max_watchers) as (svc, channel):
        ingest.svc, ingest.channel = svc, channel
        ingest.stub = ingest_pb2_grpc.IngestServiceStub(channel)
        yield ingest


def quota_subject(err: grpc.RpcError) -> str:
    quota = _detail(err, error_details_pb2.QuotaFailure)
    assert quota is not None, f"no QuotaFailure in {err.code()}: {err.details()}"
    return quota.violations[0].subject


def test_idle_upload_streams_of_one_user_leave_every_other_call_served(tmp_path):
    """One user opens 100 uploads that send their metadata and then nothing: at most
    max_uploads_per_user hold a thread, the rest are refused at once, the held ones are cancelled
    once idle, and meanwhile other users, health and reflection are answered."""
    settings = make_settings(tmp_path).model_copy(update={
        "max_uploads_per_user": 4, "max_concurrent_uploads": 8, "upload_idle_timeout_seconds": 8})
    with running_ingest(settings) as ingest:
        with stalled_uploads(ingest, 100) as calls:
            wait_for(lambda: sum(c.done() for c in calls) >= 90, timeout_s=60)

            # Another user, health and reflection answer (each within a deadline, not a hang).
            assert ingest.stub.ListPhotos(ingest_pb2.ListPhotosRequest(), metadata=ingest.bob,
                                          timeout=5).photos == []
            assert ingest.upload(encode(chelsea(), "JPEG"), auth=ingest.bob).photo.filename
            health = health_pb2_grpc.HealthStub(ingest.channel)
            for service in ("", "photos.v1.IngestService"):
                assert health.Check(health_pb2.HealthCheckRequest(service=service),
                                    timeout=5).status == health_pb2.HealthCheckResponse.SERVING
            reflection = reflection_pb2_grpc.ServerReflectionStub(ingest.channel)
            listed = next(reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
            assert "photos.v1.IngestService" in {s.name for s in listed.list_services_response.service}

            # Beyond the user's four: RESOURCE_EXHAUSTED naming the user; the four: cancelled once idle.
            wait_for(lambda: all(c.done() for c in calls), timeout_s=90)
            codes = [c.exception().code() for c in calls]
            refused = [c.exception() for c in calls if c.exception().code() == grpc.StatusCode.RESOURCE_EXHAUSTED]
            assert set(codes) == {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED}, codes
            assert len(refused) >= 90
            assert {error_info(e).reason for e in refused} == {"TOO_MANY_UPLOADS_PER_USER"}
            assert {quota_subject(e) for e in refused} == {f"users/{ingest.alice_id}"}
        # The slots came back and nothing was left in the spool.
        assert ingest.upload(astronaut_jpeg()).photo.filename
        assert not [p for p in (settings.data_dir / "tmp").rglob("*") if p.is_file()]


def test_rpcs_are_counted_and_timed_by_method_and_code(ingest):
    def handled(method: str, code: str) -> float:
        return REGISTRY.get_sample_value("photostore_grpc_server_handled_total", {
            "service": "photos.v1.IngestService", "method": method, "code": code}) or 0.0

    def timed(method: str) -> float:
        return REGISTRY.get_sample_value("photostore_grpc_server_handling_seconds_count", {
            "service": "photos.v1.IngestService", "method": method}) or 0.0

    ok, refused, missing, timings = (handled("ListPhotos", "OK"), handled("ListPhotos", "UNAUTHENTICATED"),
                                     handled("GetPhoto", "NOT_FOUND"), timed("ListPhotos"))
    ingest.list()
    rpc_error(ingest.list, auth=bearer_metadata("psk_not-a-key"))
    rpc_error(ingest.get, "photos/" + "0" * 32)
    assert handled("ListPhotos", "OK") == ok + 1
    assert handled("ListPhotos", "UNAUTHENTICATED") == refused + 1
    assert handled("GetPhoto", "NOT_FOUND") == missing + 1
    assert timed("ListPhotos") == timings + 2
    assert REGISTRY.get_sample_value("photostore_grpc_server_in_flight", {
        "service": "photos.v1.IngestService", "method": "ListPhotos"}) == 0


def test_spool_files_of_dead_ingest_processes_are_removed_at_start(tmp_path):
    settings = make_settings(tmp_path)
    tmp = settings.data_dir / "tmp"
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    host = socket.gethostname()
    dead = tmp / f"ingest-{host}-{exited.pid}-x1"  # a crashed process's half-received upload
    live = tmp / f"ingest-{host}-{os.getpid()}-x2"  # another server's, still running
    for spool in (dead, live):
        spool.mkdir(parents=True)
        (spool / "upload-1.part").write_bytes(b"half an upload")
    loose = tmp / "upload-2.part"
    loose.write_bytes(b"older layout")
    os.utime(loose, (time.time() - 2 * 3600,) * 2)
    with running_ingest(settings) as ingest:
        assert not dead.exists() and not loose.exists()
        assert (live / "upload-1.part").exists()
        assert ingest.upload(astronaut_jpeg()).photo.filename
    assert [p.name for p in tmp.iterdir()] == [live.name]  # its own spool went when it stopped


def test_uploads_beyond_the_servers_limit_are_refused_for_everyone(tmp_path):
    settings = make_settings(tmp_path).model_copy(update={
        "max_uploads_per_user": 2, "max_concurrent_uploads": 2})
    with running_ingest(settings) as ingest:
        with stalled_uploads(ingest, 2) as held:
            # Both held (the server counts them) before bob comes.
            wait_for(lambda: _upload_refused(ingest, ingest.bob))
            err = _upload_refused(ingest, ingest.bob)
            assert error_info(err).reason == "TOO_MANY_UPLOADS"
            assert quota_subject(err) == "server"
            assert not any(c.done() for c in held)


@contextlib.contextmanager
def stalled_uploads(ingest: Ingest, n: int) -> Iterator[list[grpc.Future]]:
    """n uploads of alice's that send their metadata and then nothing until the block ends."""
    stalled_until = threading.Event()

    def stalled_upload():
        yield next(upload_requests(astronaut_png()))  # the metadata, then silence
        stalled_until.wait(120)

    try:
        yield [ingest.stub.UploadPhoto.future(stalled_upload(), metadata=ingest.alice, timeout=120)
               for _ in range(n)]
    finally:
        stalled_until.set()


_ATTEMPTS = itertools.count()


def _upload_refused(ingest: Ingest, auth) -> grpc.RpcError | None:
    """Tries an upload of new bytes (one let through must not make the next a duplicate, which is
    answered without a slot); the error when it was refused."""
    img = chelsea()
    img.putpixel((0, 0), (next(_ATTEMPTS) % 256, 0, 0))
    try:
        ingest.upload(encode(img, "PNG"), auth=auth)
        return None
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
        return e


def _try_watch(ingest: Ingest, auth=None) -> Watcher | None:
    try:
        return Watcher(ingest, auth or ingest.bob)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        return None


def test_status_for_a_deleted_photo_removes_its_vector(ingest):
    ghost_id = uuid.uuid4().hex  # indexed after its photo was deleted
    ingest.vectors.upsert(VectorObject(photo_id=ghost_id, owner=ingest.alice_id, model="m",
                                       vector=np.ones(4, dtype=np.float32) / 2))
    ingest.publish_status(ghost_id, ingest.alice_id, photo_pb2.PHOTO_STATUS_INDEXED)
    wait_for(lambda: ingest.vectors.get(ghost_id) is None)
    wait_for(lambda: ingest.status_backlog() == 0)
    assert ingest.change_events() == []  # nothing changed that a watcher could see


def test_malformed_status_events_are_skipped(ingest):
    photo = ingest.upload(astronaut_jpeg()).photo
    producer = ingest.events.producer()
    producer.send(TOPIC_PHOTO_STATUS, pid(photo), b"\xff not a protobuf")
    producer.send_many([status_record(events_pb2.PhotoStatusChangedEvent(photo_id=pid(photo)))])  # no status
    ingest.publish_status(pid(photo), ingest.alice_id, photo_pb2.PHOTO_STATUS_INDEXED)
    wait_for(lambda: ingest.get(photo.name).status == photo_pb2.PHOTO_STATUS_INDEXED)
    wait_for(lambda: ingest.status_backlog() == 0)


def test_outbox_sends_unpublished_rows_at_start_up(tmp_path):
    settings = make_settings(tmp_path)
    metadata = open_metadata(settings)
    now = utcnow()
    record = PhotoRecord(id=uuid.uuid4().hex, owner="owner-1", filename="lost.jpg", sha256="ab" * 32,
                         content_type="image/jpeg", size_bytes=10, width=4, height=3,
                         blob_key="originals/owner-1/" + "ab" * 32,
                         thumbnail_key="thumbnails/owner-1/x.jpg", created_at=now, updated_at=now,
                         published=False)
    metadata.insert_photo(record, "")  # stored, then the process died before sending the event

    with serving(settings):
        wait_for(lambda: metadata.get_photo(record.id).published)
    [event] = read_topic(open_events(settings), TOPIC_PHOTO_UPLOADED)
    assert (event.key, event.kind) == (record.id, "uploaded")
    subject = event.message.uploaded.subject
    assert (subject.photo_id, subject.owner, subject.blob_key, subject.filename) == (
        record.id, "owner-1", record.blob_key, "lost.jpg")


def test_status_events_store_labels_ocr_text_and_models(ingest):
    photo = ingest.upload(exif_jpeg()).photo
    ingest.publish_status(pid(photo), ingest.alice_id, photo_pb2.PHOTO_STATUS_INDEXED,
                          clip_model="clip-1", embedding_models=["clip-1", "text-1"], analysed=True,
                          labels=[photo_pb2.Label(text="tabby", score=0.8),
                                  photo_pb2.Label(text="tiger cat", score=0.1)],
                          ocr_text="CAFE\nROMA")
    stored = wait_for(lambda: (p := ingest.get(photo.name)).status == photo_pb2.PHOTO_STATUS_INDEXED and p)
    assert [(label.text, round(label.score, 3)) for label in stored.labels] == [("tabby", 0.8), ("tiger cat", 0.1)]
    assert (stored.ocr_text, list(stored.embedding_models)) == ("CAFE\nROMA", ["clip-1", "text-1"])

    # A status without an analysis leaves them as they were.
    ingest.publish_status(pid(photo), ingest.alice_id, photo_pb2.PHOTO_STATUS_INDEXED,
                          clip_model="clip-1", embedding_models=["clip-1", "text-1"], attempts=2)
    wait_for(lambda: ingest.get(photo.name).index_attempts == 2)
    kept = ingest.get(photo.name)
    assert (kept.ocr_text, [label.text for label in kept.labels]) == ("CAFE\nROMA", ["tabby", "tiger cat"])

    # A failure too (sent as the worker sends it: status, reason, attempts).
    ingest.publish_status(pid(photo), ingest.alice_id, photo_pb2.PHOTO_STATUS_FAILED, reason="gave up",
                          attempts=3)
    failed = wait_for(lambda: (p := ingest.get(photo.name)).status == photo_pb2.PHOTO_STATUS_FAILED and p)
    assert (failed.ocr_text, len(failed.labels), failed.status_reason) == ("CAFE\nROMA", 2, "gave up")

    # A new analysis replaces them, even with nothing found.
    ingest.publish_status(pid(photo), ingest.alice_id, photo_pb2.PHOTO_STATUS_INDEXED, analysed=True,
                          embedding_models=["clip-1", "text-1"])
    again = wait_for(lambda: (p := ingest.get(photo.name)).status == photo_pb2.PHOTO_STATUS_INDEXED and p)
    assert (again.ocr_text, len(again.labels)) == ("", 0)


def test_a_failure_keeps_the_models_whose_vectors_the_photo_still_has(ingest):
    """The worker's FAILED status carries no models and leaves the photo's vectors in the index."""
    photo = ingest.upload(exif_jpeg()).photo
    ingest.publish_status(pid(photo), ingest.alice_id, photo_pb2.PHOTO_STATUS_INDEXED,
                          clip_model="clip-1", embedding_models=["clip-1", "text-1"])
    wait_for(lambda: ingest.get(photo.name).status == photo_pb2.PHOTO_STATUS_INDEXED)
    ingest.publish_status(pid(photo), ingest.alice_id, photo_pb2.PHOTO_STATUS_FAILED, reason="gave up",
                          attempts=5)
    failed = wait_for(lambda: (p := ingest.get(photo.name)).status == photo_pb2.PHOTO_STATUS_FAILED and p)
    assert list(failed.embedding_models) == ["clip-1", "text-1"]


# Reindex ---------------------------------------------------------------------------------------

@pytest.fixture
def reindexing(tmp_path, tiny_clip):
    """IngestService beside a real EmbedService (tiny CLIP, OCR off) whose CLIP weights are missing
    at first: yields (ingest, path the weights go to, embed stub)."""
    weights = tmp_path / "weights" / "tiny.pt"
    weights.parent.mkdir()
    settings = tiny_settings(tiny_clip, tmp_path / "data", model_pretrained=str(weights), ocr_enabled=False,
                             max_upload_bytes=MAX_UPLOAD_BYTES)
    # EmbedService checks keys with an AuthService over the same users (started before ingest,
    # which needs the embed address).
    auth, settings = start_auth_service(settings)
    embed = serve_embed(settings, port=0)
    channel = grpc.insecure_channel(f"127.0.0.1:{embed.port}")
    try:
        with running_ingest(settings.model_copy(update={"embed_target": f"127.0.0.1:{embed.port}"})) as ing:
            yield ing, weights, embed_pb2_grpc.EmbedServiceStub(channel)
    finally:
        channel.close()
        embed.stop()
        auth.stop()


def ready_models(embed, auth) -> dict[int, str]:
    """{photos.v1.ModelRole: model} of the ready models."""
    info = embed.GetModelInfo(embed_pb2.GetModelInfoRequest(), metadata=auth)
    return {m.role: m.model for m in info.models if m.ready}


def reindex(ingest: Ingest, auth=None, **kwargs) -> ingest_pb2.ReindexPhotosResponse:
    return ingest.stub.ReindexPhotos(ingest_pb2.ReindexPhotosRequest(**kwargs), metadata=auth or ingest.alice)


def test_reindex_queues_photos_lacking_a_current_model(reindexing, tiny_clip):
    ingest, weights, embed = reindexing
    a, b, c = (ingest.upload(dated_jpeg(EXIF_TAKEN_UTC, colour), filename=f"{name}.jpg").photo
               for name, colour in (("a", (200, 0, 0)), ("b", (0, 200, 0)), ("c", (0, 0, 200))))
    bobs = ingest.upload(astronaut_jpeg(), auth=ingest.bob).photo
    text_model = wait_for(lambda: ready_models(embed, ingest.alice).get(embed_pb2.MODEL_ROLE_SENTENCE),
                          timeout_s=60)
    assert embed_pb2.MODEL_ROLE_CLIP not in ready_models(embed, ingest.alice)

    # a has a text vector of the current model, b failed; c was never indexed (still queued).
    ingest.publish_status(pid(a), ingest.alice_id, photo_pb2.PHOTO_STATUS_INDEXED, embedding_models=[text_model])
    ingest.publish_status(pid(b), ingest.alice_id, photo_pb2.PHOTO_STATUS_FAILED, reason="no luck")
    ingest.publish_status(pid(bobs), ingest.bob_id, photo_pb2.PHOTO_STATUS_INDEXED,
                          embedding_models=["old-text-model"])
    wait_for(lambda: ingest.list(status=photo_pb2.PHOTO_STATUS_UPLOADED).total_size == 1
             and ingest.list(auth=ingest.bob, status=photo_pb2.PHOTO_STATUS_INDEXED).total_size == 1)
    uploaded = {e.key: e.message.uploaded for e in ingest.uploaded_events()}
    assert set(uploaded) == {pid(a), pid(b), pid(c), pid(bobs)}

    response = reindex(ingest)
    assert (list(response.names), list(response.models)) == ([b.name], [text_model])
    [event] = [e for e in ingest.uploaded_events() if e.kind == "reindex_requested"]
    assert event.key == pid(b)
    assert event.message.reindex_requested == events_pb2.PhotoReindexRequestedEvent(
        subject=uploaded[pid(b)].subject)
    assert event.message.reindex_requested.subject.filename == "b.jpg"
    assert ingest.list(status=photo_pb2.PHOTO_STATUS_FAILED).total_size == 1  # the status stays

    # Everything, also what still waits for its first indexing (its event may be lost), but b:
    # queued by the call before for these models, it waits in the log already.
    assert set(reindex(ingest, all=True).names) == {a.name, c.name}
    assert list(reindex(ingest, auth=ingest.bob).names) == [bobs.name]
    # Repeated calls while those wait queue nothing more.
    events = len(ingest.uploaded_events())
    assert (list(reindex(ingest).names), list(reindex(ingest, all=True).names)) == ([], [])
    assert len(ingest.uploaded_events()) == events

    # CLIP weights arrive: every indexed photo lacks a CLIP vector now, and what was queued for the
    # text model alone is queued again for both.
    shutil.copy(tiny_clip.checkpoint_path, weights)
    clip_model = wait_for(lambda: ready_models(embed, ingest.alice).get(embed_pb2.MODEL_ROLE_CLIP), timeout_s=60)
    response = reindex(ingest)
    assert set(response.names) == {a.name, b.name} and list(response.models) == [clip_model, text_model]
    assert list(reindex(ingest).names) == []


def bulk_records(owner: str, n: int) -> list[PhotoRecord]:
    """n indexed photos of `owner`, their events long sent, with vectors of no current model."""
    now = utcnow()
    records = []
    for i in range(n):
        digest = hashlib.sha256(f"{owner}-{i}".encode()).hexdigest()
        photo_id = uuid.uuid4().hex
        records.append(PhotoRecord(
            id=photo_id, owner=owner, filename=f"bulk-{i}.jpg", sha256=digest, content_type="image/jpeg",
            size_bytes=1000 + i, width=4, height=3, blob_key=f"originals/{owner}/{digest}",
            thumbnail_key=f"thumbnails/{owner}/{photo_id}.jpg",
            created_at=now - dt.timedelta(seconds=i), updated_at=now, status=STATUS_INDEXED,
            embedding_models=["old-model"], published=True))
    return records


def test_reindex_queues_many_photos_in_one_call(reindexing):
    ingest, _, embed = reindexing
    wait_for(lambda: ready_models(embed, ingest.alice).get(embed_pb2.MODEL_ROLE_SENTENCE), timeout_s=60)
    records = bulk_records(ingest.alice_id, 1200)  # over a page of the store and a batch of sends
    ingest.metadata.insert_new_photos(records)
    ingest.metadata.insert_new_photos(bulk_records(ingest.bob_id, 3))
    assert ingest.list().total_size == 1200

    response = reindex(ingest)
    assert sorted(response.names) == sorted(f"photos/{r.id}" for r in records)
    events = ingest.uploaded_events()
    assert {e.kind for e in events} == {"reindex_requested"}
    assert sorted(e.key for e in events) == sorted(r.id for r in records)
    by_id = {r.id: r for r in records}
    for event in events:
        subject = event.message.reindex_requested.subject
        record = by_id[event.key]
        assert (subject.photo_id, subject.owner, subject.blob_key, subject.filename) == (
            record.id, ingest.alice_id, record.blob_key, record.filename)


def test_reindex_without_the_embed_service_is_unavailable(tmp_path):
    settings = make_settings(tmp_path).model_copy(update={"embed_target": f"127.0.0.1:{free_port()}"})
    with running_ingest(settings) as ingest:
        ingest.upload(astronaut_jpeg())
        err = rpc_error(ingest.stub.ReindexPhotos, ingest_pb2.ReindexPhotosRequest(), metadata=ingest.alice)
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert "EmbedService" in err.details() and error_info(err).reason == "EMBED_UNREACHABLE"
        assert [e.kind for e in ingest.uploaded_events()] == ["uploaded"]
