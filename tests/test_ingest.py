"""IngestService end to end: the real server on a free port, embedded backends in tmp_path."""
from __future__ import annotations

import contextlib
import dataclasses
import shutil
import datetime as dt
import functools
import hashlib
import io
import os
import queue
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
from grpc_status import rpc_status
from PIL import Image, TiffImagePlugin

from embed_svc.server import serve as serve_embed
from ingest_svc.server import STATUS_GROUP, serve
from photos.v1 import embed_pb2, embed_pb2_grpc, ingest_pb2, ingest_pb2_grpc, photo_pb2
from photostore.auth import bearer_metadata, hash_key, new_api_key
from photostore.backends import open_events, open_metadata, open_vectors
from photostore.backends.base import (
    STATUS_FAILED,
    STATUS_INDEXED,
    TOPIC_PHOTO_STATUS,
    TOPIC_PHOTO_UPLOADED,
    EventLog,
    MetadataStore,
    PhotoRecord,
    VectorObject,
    VectorStore,
    utcnow,
)
from photostore import uploads
from photostore.server import GrpcService
from photostore.settings import MIB, Settings
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

    def download(self, name: str, variant=ingest_pb2.PHOTO_VARIANT_UNSPECIFIED, auth=None):
        parts = list(self.stub.DownloadPhoto(ingest_pb2.DownloadPhotoRequest(name=name, variant=variant),
                                             metadata=auth or self.alice))
        return parts[0], b"".join(p.chunk for p in parts)

    def uploaded_events(self) -> list:
        consumer = self.events.consumer(f"test-{uuid.uuid4().hex}", [TOPIC_PHOTO_UPLOADED])
        return consumer.poll(max_records=1000, timeout_s=0)

    def publish_status(self, photo_id: str, owner: str, status: str, **extra) -> None:
        self.events.producer().send(TOPIC_PHOTO_STATUS, key=photo_id, value={
            "photo_id": photo_id, "owner": owner, "status": status, "reason": "",
            "embedding_model": "", "attempts": 1, **extra})

    def stored_files(self) -> list[str]:
        return sorted(str(p.relative_to(self.settings.data_dir))
                      for d in (self.settings.blobs_dir, self.settings.data_dir / "tmp")
                      for p in d.rglob("*") if p.is_file())


def upload_requests(data: bytes, *, filename="photo.jpg", size=None, checksum=None, request_id="",
                    chunk=UPLOAD_CHUNK):
    return uploads.upload_requests(
        io.BytesIO(data), filename=filename, content_type="image/jpeg",
        size=len(data) if size is None else size, sha256=checksum or sha256(data),
        request_id=request_id, chunk_bytes=chunk)


def make_settings(data_dir) -> Settings:
    return Settings(data_dir=data_dir, host="127.0.0.1", shutdown_grace_seconds=0.5,
                    grpc_max_workers=8, max_upload_bytes=MAX_UPLOAD_BYTES)


def wait_for(predicate, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while not (result := predicate()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return result


@contextlib.contextmanager
def running_ingest(settings: Settings) -> Iterator[Ingest]:
    """The service on a free port, with users alice and bob."""
    metadata = open_metadata(settings)
    keys = {}
    for name in ("alice", "bob"):
        key = new_api_key()
        keys[name] = (metadata.create_user(name, hash_key(key)).id, bearer_metadata(key))
    svc = serve(settings, port=0, max_watchers=2)
    channel = grpc.insecure_channel(f"127.0.0.1:{svc.port}")
    try:
        yield Ingest(settings=settings, svc=svc, stub=ingest_pb2_grpc.IngestServiceStub(channel),
                     metadata=metadata, events=open_events(settings), vectors=open_vectors(settings),
                     alice_id=keys["alice"][0], alice=keys["alice"][1],
                     bob_id=keys["bob"][0], bob=keys["bob"][1])
    finally:
        channel.close()
        svc.stop()


@pytest.fixture
def ingest(tmp_path):
    with running_ingest(make_settings(tmp_path)) as running:
        yield running


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        result = call(*args, **kwargs)
        if isinstance(result, Iterator):
            list(result)  # a server stream fails when read
    return info.value


def violated_field(err: grpc.RpcError) -> str | None:
    status = rpc_status.from_call(err)
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return bad.field_violations[0].field
    return None


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
    assert photo.name.startswith("photos/") and photo.owner == ingest.alice_id
    assert photo.status == photo_pb2.PHOTO_STATUS_UPLOADED
    assert (photo.width, photo.height) == (512, 512)
    assert not photo.HasField("take_time") and not photo.HasField("location")
    photo_id = photo.name.removeprefix("photos/")
    assert ingest.stored_files() == [f"blobs/originals/{ingest.alice_id}/{sha256(data)}",
                                     f"blobs/thumbnails/{ingest.alice_id}/{photo_id}.jpg"]
    [event] = ingest.uploaded_events()
    assert event.key == photo_id
    assert event.value == {
        "photo_id": photo_id, "owner": ingest.alice_id,
        "blob_key": f"originals/{ingest.alice_id}/{sha256(data)}", "sha256": sha256(data),
        "content_type": "image/jpeg", "taken_at": None, "camera_make": "", "camera_model": ""}
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
    assert dt.datetime.fromisoformat(event.value["taken_at"]) == EXIF_TAKEN_UTC
    assert (event.value["camera_make"], event.value["camera_model"]) == ("Canon", "EOS R5")

    first, thumbnail = ingest.download(photo.name, ingest_pb2.PHOTO_VARIANT_THUMBNAIL)
    assert (first.content_type, first.size_bytes) == ("image/jpeg", len(thumbnail))
    with Image.open(io.BytesIO(thumbnail)) as thumb:
        assert thumb.format == "JPEG" and thumb.mode == "RGB"
        assert thumb.size == (213, 320)  # upright, longest side thumbnail_px


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
    assert not bobs.duplicate and bobs.photo.name != first.name and bobs.photo.owner == ingest.bob_id
    assert ingest.list().total_size == 1 and ingest.list(auth=ingest.bob).total_size == 1
    assert len(ingest.uploaded_events()) == 2


def test_retry_with_the_same_request_id_returns_the_first_result(ingest):
    first = ingest.upload(astronaut_jpeg(), request_id="req-1", chunk=16 * 1024)
    retry = ingest.upload(astronaut_jpeg(), request_id="req-1", chunk=16 * 1024)
    assert retry.photo.name == first.photo.name and not retry.duplicate
    assert ingest.list().total_size == 1 and len(ingest.uploaded_events()) == 1

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
    assert ingest.uploaded_events() == []


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
    ingest.publish_status(indexed_id, ingest.alice_id, STATUS_INDEXED)
    wait_for(lambda: ingest.list(status=photo_pb2.PHOTO_STATUS_INDEXED).total_size == 1)
    assert ingest.list(status=photo_pb2.PHOTO_STATUS_UPLOADED).total_size == 4
    assert ingest.list(auth=ingest.bob).total_size == 0

    for bad in (dict(page_token="not a token"), dict(page_size=-1),
                dict(start_time=ts(days[4]), end_time=ts(days[3]))):
        assert rpc_error(ingest.list, **bad).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_get_and_batch_get_are_owner_scoped(ingest):
    a = ingest.upload(astronaut_jpeg()).photo
    b = ingest.upload(exif_jpeg()).photo
    bobs = ingest.upload(astronaut_jpeg(), auth=ingest.bob).photo
    got = ingest.stub.GetPhoto(ingest_pb2.GetPhotoRequest(name=a.name), metadata=ingest.alice).photo
    assert (got.name, got.sha256, got.width, got.filename) == (a.name, a.sha256, a.width, a.filename)

    batch = ingest.stub.BatchGetPhotos(ingest_pb2.BatchGetPhotosRequest(
        names=[b.name, "photos/missing", bobs.name, a.name]), metadata=ingest.alice)
    assert [p.name for p in batch.photos] == [b.name, a.name]

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
    assert ingest.list().total_size == 1 and len(ingest.stored_files()) == 2

    ingest.stub.DeletePhoto(request, metadata=ingest.alice)
    assert ingest.list().total_size == 0
    assert ingest.stored_files() == []
    assert ingest.vectors.get(photo_id) is None
    assert rpc_error(ingest.stub.GetPhoto, ingest_pb2.GetPhotoRequest(name=photo.name),
                     metadata=ingest.alice).code() == grpc.StatusCode.NOT_FOUND
    assert rpc_error(ingest.stub.DeletePhoto, request,
                     metadata=ingest.alice).code() == grpc.StatusCode.NOT_FOUND
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

    def next(self, timeout_s: float = 10.0) -> ingest_pb2.WatchPhotosResponse:
        return self.changes.get(timeout=timeout_s)

    def finish(self, timeout_s: float = 10.0) -> grpc.RpcError | None:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive()
        return self.error


def test_watch_sees_upload_status_and_delete_of_own_photos(ingest):
    watcher = Watcher(ingest, ingest.alice)
    ingest.upload(astronaut_jpeg(), auth=ingest.bob)  # not alice's: never shown
    photo = ingest.upload(exif_jpeg()).photo
    photo_id = photo.name.removeprefix("photos/")

    uploaded = watcher.next()
    assert (uploaded.photo.name, uploaded.status, uploaded.deleted) == (
        photo.name, photo_pb2.PHOTO_STATUS_UPLOADED, False)

    ingest.publish_status(photo_id, ingest.alice_id, STATUS_INDEXED, embedding_model="ViT-test",
                          attempts=2)
    indexed = watcher.next()
    assert indexed.status == photo_pb2.PHOTO_STATUS_INDEXED
    assert (indexed.photo.embedding_model, indexed.photo.index_attempts) == ("ViT-test", 2)
    stored = ingest.stub.GetPhoto(ingest_pb2.GetPhotoRequest(name=photo.name),
                                  metadata=ingest.alice).photo
    assert stored.status == photo_pb2.PHOTO_STATUS_INDEXED
    consumer = ingest.events.consumer(STATUS_GROUP, [TOPIC_PHOTO_STATUS])
    wait_for(lambda: consumer.lag() == 0)

    ingest.publish_status(photo_id, ingest.alice_id, STATUS_FAILED, reason="model gave up", attempts=5)
    failed = watcher.next()
    assert (failed.status, failed.reason) == (photo_pb2.PHOTO_STATUS_FAILED, "model gave up")

    ingest.stub.DeletePhoto(ingest_pb2.DeletePhotoRequest(name=photo.name), metadata=ingest.alice)
    deleted = watcher.next()
    assert deleted.deleted and deleted.photo.name == photo.name
    assert watcher.changes.empty()

    watcher.call.cancel()
    assert watcher.finish().code() == grpc.StatusCode.CANCELLED


def test_watch_named_photos_with_initial_state(ingest):
    a = ingest.upload(astronaut_jpeg()).photo
    b = ingest.upload(exif_jpeg()).photo
    watcher = Watcher(ingest, ingest.alice, names=[b.name], send_initial=True)
    initial = watcher.next()
    assert initial.photo.name == b.name and initial.status == photo_pb2.PHOTO_STATUS_UPLOADED
    ingest.publish_status(a.name.removeprefix("photos/"), ingest.alice_id, STATUS_INDEXED)
    ingest.publish_status(b.name.removeprefix("photos/"), ingest.alice_id, STATUS_INDEXED)
    change = watcher.next()
    assert change.photo.name == b.name and change.status == photo_pb2.PHOTO_STATUS_INDEXED
    watcher.call.cancel()
    watcher.finish()
    assert watcher.changes.empty()

    err = rpc_error(ingest.stub.WatchPhotos, ingest_pb2.WatchPhotosRequest(send_initial=True),
                    metadata=ingest.alice)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_watchers_are_capped_and_end_when_the_server_stops(ingest):
    watchers = [Watcher(ingest, ingest.alice) for _ in range(2)]  # the fixture allows two
    err = rpc_error(Watcher, ingest, ingest.bob)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and rpc_status.from_call(err).details

    watchers[0].call.cancel()
    watchers[0].finish()
    replacement = wait_for(lambda: _try_watch(ingest))

    ingest.svc.stop()
    for watcher in (watchers[1], replacement):
        assert watcher.finish().code() == grpc.StatusCode.UNAVAILABLE


def _try_watch(ingest: Ingest) -> Watcher | None:
    try:
        return Watcher(ingest, ingest.bob)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        return None


def test_status_for_a_deleted_photo_removes_its_vector(ingest):
    ghost_id = uuid.uuid4().hex  # indexed after its photo was deleted
    ingest.vectors.upsert(VectorObject(photo_id=ghost_id, owner=ingest.alice_id, model="m",
                                       vector=np.ones(4, dtype=np.float32) / 2))
    ingest.publish_status(ghost_id, ingest.alice_id, STATUS_INDEXED)
    wait_for(lambda: ingest.vectors.get(ghost_id) is None)


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

    svc = serve(settings, port=0)
    try:
        wait_for(lambda: metadata.get_photo(record.id).published)
    finally:
        svc.stop()
    [event] = open_events(settings).consumer("test", [TOPIC_PHOTO_UPLOADED]).poll(timeout_s=0)
    assert event.key == record.id and event.value["blob_key"] == record.blob_key


def test_status_events_store_labels_ocr_text_and_models(ingest):
    photo = ingest.upload(exif_jpeg()).photo
    photo_id = photo.name.removeprefix("photos/")
    ingest.publish_status(photo_id, ingest.alice_id, STATUS_INDEXED, embedding_model="clip-1",
                          embedding_models=["clip-1", "text-1"], labels=[["tabby", 0.8], ["tiger cat", 0.1]],
                          ocr_text="CAFE\nROMA")
    get = functools.partial(ingest.stub.GetPhoto, ingest_pb2.GetPhotoRequest(name=photo.name), metadata=ingest.alice)
    stored = wait_for(lambda: (p := get().photo).status == photo_pb2.PHOTO_STATUS_INDEXED and p)
    assert [(label.name, round(label.score, 3)) for label in stored.labels] == [("tabby", 0.8), ("tiger cat", 0.1)]
    assert (stored.ocr_text, list(stored.embedding_models)) == ("CAFE\nROMA", ["clip-1", "text-1"])

    # A status without them (a failure) leaves them as they were.
    ingest.publish_status(photo_id, ingest.alice_id, STATUS_FAILED, reason="gave up")
    failed = wait_for(lambda: (p := get().photo).status == photo_pb2.PHOTO_STATUS_FAILED and p)
    assert (failed.ocr_text, list(failed.embedding_models), len(failed.labels)) == (
        "CAFE\nROMA", ["clip-1", "text-1"], 2)


# Reindex ---------------------------------------------------------------------------------------

@pytest.fixture
def reindexing(tmp_path, tiny_clip):
    """IngestService beside a real EmbedService (tiny CLIP, OCR off) whose CLIP weights are missing
    at first: yields (ingest, path the weights go to, embed stub)."""
    weights = tmp_path / "weights" / "tiny.pt"
    weights.parent.mkdir()
    settings = tiny_settings(tiny_clip, tmp_path / "data", model_pretrained=str(weights), ocr_enabled=False,
                             max_upload_bytes=MAX_UPLOAD_BYTES)
    embed = serve_embed(settings, port=0)
    channel = grpc.insecure_channel(f"127.0.0.1:{embed.port}")
    try:
        with running_ingest(settings.model_copy(update={"embed_target": f"127.0.0.1:{embed.port}"})) as ing:
            yield ing, weights, embed_pb2_grpc.EmbedServiceStub(channel)
    finally:
        channel.close()
        embed.stop()


def ready_models(embed, auth) -> dict[str, str]:
    info = embed.GetModelInfo(embed_pb2.GetModelInfoRequest(), metadata=auth)
    return {m.role: m.model for m in info.models if m.ready}


def test_reindex_queues_photos_lacking_a_current_model(reindexing, tiny_clip):
    ingest, weights, embed = reindexing
    a, b, c = (ingest.upload(dated_jpeg(EXIF_TAKEN_UTC, colour)).photo
               for colour in ((200, 0, 0), (0, 200, 0), (0, 0, 200)))
    bobs = ingest.upload(astronaut_jpeg(), auth=ingest.bob).photo
    text_model = wait_for(lambda: ready_models(embed, ingest.alice).get("sentence"), timeout_s=60)
    assert "clip" not in ready_models(embed, ingest.alice)

    def pid(photo) -> str:
        return photo.name.removeprefix("photos/")

    # a has a text vector of the current model, b failed; c was never indexed (still queued).
    ingest.publish_status(pid(a), ingest.alice_id, STATUS_INDEXED, embedding_models=[text_model])
    ingest.publish_status(pid(b), ingest.alice_id, STATUS_FAILED, reason="no luck")
    ingest.publish_status(pid(bobs), ingest.bob_id, STATUS_INDEXED, embedding_models=["old-text-model"])
    wait_for(lambda: ingest.list(status=photo_pb2.PHOTO_STATUS_UPLOADED).total_size == 1
             and ingest.list(auth=ingest.bob, status=photo_pb2.PHOTO_STATUS_INDEXED).total_size == 1)
    queued_before = len(ingest.uploaded_events())

    def reindex(auth=None, **kwargs) -> ingest_pb2.ReindexPhotosResponse:
        return ingest.stub.ReindexPhotos(ingest_pb2.ReindexPhotosRequest(**kwargs), metadata=auth or ingest.alice)

    response = reindex()
    assert (list(response.names), list(response.models)) == ([b.name], [text_model])
    events = ingest.uploaded_events()[queued_before:]
    assert [e.key for e in events] == [pid(b)]
    assert events[0].value == {**ingest.uploaded_events()[1].value, "reindex": True}
    assert ingest.list(status=photo_pb2.PHOTO_STATUS_FAILED).total_size == 1  # the status stays

    assert set(reindex(all=True).names) == {a.name, b.name}
    assert list(reindex(auth=ingest.bob).names) == [bobs.name]

    # CLIP weights arrive: every indexed photo lacks a CLIP vector now.
    shutil.copy(tiny_clip.checkpoint_path, weights)
    clip_model = wait_for(lambda: ready_models(embed, ingest.alice).get("clip"), timeout_s=60)
    response = reindex()
    assert set(response.names) == {a.name, b.name} and list(response.models) == [clip_model, text_model]
    ingest.publish_status(pid(a), ingest.alice_id, STATUS_INDEXED, embedding_models=[clip_model, text_model])
    wait_for(lambda: reindex().names == [b.name])


def test_reindex_without_the_embed_service_is_unavailable(tmp_path):
    settings = make_settings(tmp_path).model_copy(update={"embed_target": f"127.0.0.1:{free_port()}"})
    with running_ingest(settings) as ingest:
        ingest.upload(astronaut_jpeg())
        err = rpc_error(ingest.stub.ReindexPhotos, ingest_pb2.ReindexPhotosRequest(), metadata=ingest.alice)
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert "EmbedService" in err.details() and rpc_status.from_call(err).details
