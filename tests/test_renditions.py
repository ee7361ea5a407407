"""Previews (PHOTO_VARIANT_PREVIEW): made after the upload by a background consumer of
photos.uploaded at a lower CPU priority, upright and at most 1440 px whatever the original's
format; made on first request for photos without one yet; removed with the photo. The real ingest
server on a free port, embedded backends in tmp_path."""
from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from PIL import Image

import os
import threading

from ingest_svc.renditions import preview_key
from ingest_svc.server import PREVIEW_NICENESS
from photos.v1 import ingest_pb2
from photostore.settings import MIB
from tests.test_ingest import encode, error_info, make_settings, pid, rpc_error, running_ingest, wait_for

pytestmark = pytest.mark.timeout(180)

PREVIEW_PX = 1440
RED, BLUE = (220, 20, 20), (20, 20, 220)


@pytest.fixture
def ingest(tmp_path):
    settings = make_settings(tmp_path).model_copy(update={"max_upload_bytes": 64 * MIB})
    with running_ingest(settings) as running:
        yield running


def marked(width: int, height: int) -> Image.Image:
    """A smooth gradient (small files) with its top-left quarter red and bottom-right blue, so a
    turn shows where the corners went."""
    x = np.linspace(60, 190, width, dtype=np.float32)[None, :, None]
    y = np.linspace(40, 120, height, dtype=np.float32)[:, None, None]
    pixels = np.broadcast_to((x + y) / 2, (height, width, 3)).astype(np.uint8).copy()
    pixels[:height // 2, :width // 2] = RED
    pixels[height // 2:, width // 2:] = BLUE
    return Image.fromarray(pixels)


def near(pixel, colour, tolerance=40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour))


def preview_of(ingest, name: str) -> Image.Image:
    parts = list(ingest.stub.DownloadPhoto(
        ingest_pb2.DownloadPhotoRequest(name=name, variant=ingest_pb2.PHOTO_VARIANT_PREVIEW),
        metadata=ingest.alice, timeout=60))
    data = b"".join(p.chunk for p in parts)
    assert (parts[0].content_type, parts[0].size_bytes) == ("image/jpeg", len(data))
    image = Image.open(io.BytesIO(data))
    image.load()
    assert (image.format, image.mode) == ("JPEG", "RGB")
    return image


def previewed(ingest, photo) -> None:
    """Waits until the background consumer has made the photo's preview."""
    wait_for(lambda: ingest.get(photo.name).has_preview, timeout_s=60)


def test_large_jpeg_gets_an_upright_preview_after_the_upload(ingest):
    exif = Image.Exif()
    exif[274] = 6  # stored 4000x3000, shown turned a quarter clockwise: 3000x4000
    photo = ingest.upload(encode(marked(4000, 3000), "JPEG", quality=90, exif=exif),
                          filename="big.jpg").photo
    # The upload answers before its preview is made; nothing asks for it, yet it comes.
    assert (photo.width, photo.height, photo.has_preview) == (3000, 4000, False)
    previewed(ingest, photo)

    preview = preview_of(ingest, photo.name)
    assert preview.size == (1080, PREVIEW_PX)
    assert not preview.getexif().get(274)  # nothing left to turn twice
    # Turned clockwise, the red top-left quarter is at the top right, the blue one bottom left.
    w, h = preview.size
    assert near(preview.getpixel((w * 3 // 4, h // 4)), RED)
    assert near(preview.getpixel((w // 4, h * 3 // 4)), BLUE)
    assert not near(preview.getpixel((w // 4, h // 4)), RED)
    stored = ingest.settings.blobs_dir / preview_key(ingest.alice_id, pid(photo))
    assert stored.is_file()


def test_heic_gets_a_jpeg_preview(ingest):
    photo = ingest.upload(encode(marked(2400, 1800), "HEIF", quality=80), filename="phone.heic").photo
    assert (photo.content_type, photo.width, photo.height) == ("image/heic", 2400, 1800)
    preview = preview_of(ingest, photo.name)  # made now if the background has not yet
    assert preview.size == (PREVIEW_PX, 1080)
    w, h = preview.size
    assert near(preview.getpixel((w // 4, h // 4)), RED)
    assert near(preview.getpixel((w * 3 // 4, h * 3 // 4)), BLUE)


def test_small_photo_preview_is_never_upscaled(ingest):
    photo = ingest.upload(encode(marked(640, 480), "PNG"), filename="small.png").photo
    previewed(ingest, photo)
    assert preview_of(ingest, photo.name).size == (640, 480)


def test_photo_stored_without_a_preview_gets_one_on_first_request(ingest):
    photo = ingest.upload(encode(marked(2400, 1800), "HEIF", quality=80), filename="old.heic").photo
    photo_id = pid(photo)
    previewed(ingest, photo)  # then taken away again
    stored = ingest.settings.blobs_dir / preview_key(ingest.alice_id, photo_id)
    # As a photo stored before previews existed: no preview_key, no blob.
    assert ingest.metadata.update_photo(photo_id, preview_key="").preview_key == ""
    stored.unlink()
    assert not ingest.get(photo.name).has_preview

    assert preview_of(ingest, photo.name).size == (PREVIEW_PX, 1080)
    assert stored.is_file()
    assert ingest.metadata.get_photo(photo_id).preview_key == preview_key(ingest.alice_id, photo_id)
    assert ingest.get(photo.name).has_preview
    # GetPhotoDownloadUrl makes it too (the local store hands out no URLs: an empty answer).
    assert ingest.metadata.update_photo(photo_id, preview_key="")
    stored.unlink()
    url = ingest.stub.GetPhotoDownloadUrl(ingest_pb2.GetPhotoDownloadUrlRequest(
        name=photo.name, variant=ingest_pb2.PHOTO_VARIANT_PREVIEW), metadata=ingest.alice, timeout=60)
    assert url.url == "" and stored.is_file() and ingest.get(photo.name).has_preview


def test_preview_of_an_undecodable_original_is_not_found(ingest):
    photo = ingest.upload(encode(marked(800, 600), "JPEG"), filename="broken.jpg").photo
    photo_id = pid(photo)
    previewed(ingest, photo)
    ingest.metadata.update_photo(photo_id, preview_key="")
    (ingest.settings.blobs_dir / f"originals/{ingest.alice_id}/{photo.sha256}").write_bytes(b"not an image")
    err = rpc_error(ingest.stub.DownloadPhoto, ingest_pb2.DownloadPhotoRequest(
        name=photo.name, variant=ingest_pb2.PHOTO_VARIANT_PREVIEW), metadata=ingest.alice)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "has no preview" in err.details() and error_info(err).reason == "PREVIEW_NOT_AVAILABLE"
    assert not ingest.get(photo.name).has_preview


def test_preview_is_removed_with_the_photo(ingest):
    photo = ingest.upload(encode(marked(2000, 1500), "JPEG"), filename="gone.jpg").photo
    stored = ingest.settings.blobs_dir / preview_key(ingest.alice_id, pid(photo))
    previewed(ingest, photo)
    assert stored.is_file()
    assert rpc_error(ingest.stub.DownloadPhoto, ingest_pb2.DownloadPhotoRequest(
        name=photo.name, variant=ingest_pb2.PHOTO_VARIANT_PREVIEW),
        metadata=ingest.bob).code() == grpc.StatusCode.NOT_FOUND  # another user's
    ingest.stub.DeletePhoto(ingest_pb2.DeletePhotoRequest(name=photo.name), metadata=ingest.alice)
    ingest.stub.PurgePhotos(ingest_pb2.PurgePhotosRequest(names=[photo.name]), metadata=ingest.alice)
    assert not stored.exists()
    assert ingest.stored_files() == []


def test_previews_are_made_at_a_lower_priority_than_the_requests(ingest):
    [thread] = [t for t in threading.enumerate() if t.name == "previews"]
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert os.getpriority(os.PRIO_PROCESS, thread.native_id) == min(19, own + PREVIEW_NICENESS)

