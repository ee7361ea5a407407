"""What people do with a library every day, over gRPC on the real stack (embedded and scale-out):
HEIC photos viewed through their preview (made after the upload), near-duplicates flagged at upload and grouped, albums,
favourites, and the trash (delete, restore, purge with blobs and vectors)."""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import time
import uuid

import grpc
import pillow_heif
import pytest
from google.protobuf import field_mask_pb2
from PIL import Image

from photos.v1 import album_pb2, album_pb2_grpc, ingest_pb2, photo_pb2, search_pb2
from photostore.auth import bearer_metadata
from tests.e2e.test_end_to_end import watch_until
from tests.photo_samples import SKIMAGE_DIR, SKLEARN_DIR, upload

pytestmark = pytest.mark.timeout(420)

# Three different real photos, named so that one keyword finds them all.
LIBRARY = {"shelf-coffee.png": SKIMAGE_DIR / "coffee.png", "shelf-rocket.jpg": SKIMAGE_DIR / "rocket.jpg",
           "shelf-china.jpg": SKLEARN_DIR / "china.jpg"}


@pytest.fixture(scope="module")
def user(stack):
    return stack.add_user("librarian")


@pytest.fixture(scope="module")
def library(stack, user):
    """The LIBRARY photos, uploaded and searchable: {filename: (photo name, bytes)}."""
    uploaded = {}
    for filename, path in LIBRARY.items():
        data = path.read_bytes()
        uploaded[filename] = (upload(stack.ingest, user, data, filename).photo.name, data)
    watch_until(stack, user, [name for name, _ in uploaded.values()], photo_pb2.PHOTO_STATUS_INDEXED)
    return uploaded


def download(stack, key, name, variant) -> bytes:
    return b"".join(c.chunk for c in stack.ingest.DownloadPhoto(
        ingest_pb2.DownloadPhotoRequest(name=name, variant=variant), metadata=bearer_metadata(key), timeout=60))


def encoded(img: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def test_a_heic_photo_is_viewed_through_its_jpeg_preview(stack, user):
    pillow_heif.register_heif_opener()
    with Image.open(SKIMAGE_DIR / "astronaut.png") as img:
        heic = encoded(img.convert("RGB").resize((2400, 1800)), "HEIF", quality=80)
    photo = upload(stack.ingest, user, heic, "IMG_0042.HEIC").photo
    assert (photo.content_type, photo.width, photo.height) == ("image/heic", 2400, 1800)
    preview = Image.open(io.BytesIO(download(stack, user, photo.name, ingest_pb2.PHOTO_VARIANT_PREVIEW)))
    assert (preview.format, preview.size) == ("JPEG", (1440, 1080))
    assert download(stack, user, photo.name, ingest_pb2.PHOTO_VARIANT_ORIGINAL) == heic  # kept as it came


def test_previews_are_made_after_the_upload_without_being_asked_for(stack, user, library):
    """The ingest replicas' preview consumer (photos.uploaded, its own group) makes them."""
    deadline = time.monotonic() + 120
    for name, _ in library.values():
        while not stack.ingest.GetPhoto(ingest_pb2.GetPhotoRequest(name=name), metadata=bearer_metadata(user),
                                        timeout=30).photo.has_preview:
            assert time.monotonic() < deadline, f"{name} got no preview"
            time.sleep(0.2)


def test_a_resized_copy_is_flagged_at_upload_and_grouped_with_the_original(stack, user):
    with Image.open(SKIMAGE_DIR / "chelsea.png") as img:
        original = encoded(img.convert("RGB"), "PNG")
        smaller = encoded(img.convert("RGB").resize((img.width // 2, img.height // 2)), "JPEG", quality=70)
    first = upload(stack.ingest, user, original, "chelsea.png")
    assert list(first.similar_photos) == []
    second = upload(stack.ingest, user, smaller, "chelsea-small.jpg")
    assert not second.duplicate  # other bytes: stored, and said to look like the first
    assert [p.name for p in second.similar_photos] == [first.photo.name]
    groups = stack.ingest.ListDuplicateGroups(ingest_pb2.ListDuplicateGroupsRequest(),
                                              metadata=bearer_metadata(user), timeout=60).groups
    assert [[p.name for p in g.photos] for g in groups] == [[first.photo.name, second.photo.name]]  # larger first


def listed(stack, key, **fields) -> set[str]:
    response = stack.ingest.ListPhotos(ingest_pb2.ListPhotosRequest(page_size=100, **fields),
                                       metadata=bearer_metadata(key), timeout=30)
    return {p.name for p in response.photos}


def found(stack, key, library) -> set[str]:
    """The library's photos among the hits of a search for the word their names share."""
    response = stack.search.SearchPhotos(search_pb2.SearchPhotosRequest(query="shelf", page_size=50),
                                         metadata=bearer_metadata(key), timeout=60)
    return {hit.photo.name for hit in response.hits} & {name for name, _ in library.values()}


def test_albums_favourites_and_the_trash(stack, user, library):
    auth = bearer_metadata(user)
    albums = album_pb2_grpc.AlbumServiceStub(stack.channel("ingest"))
    coffee, rocket, china = (library[f][0] for f in LIBRARY)
    assert found(stack, user, library) == {coffee, rocket, china}

    # An album of two, made once whatever the retries; then one more photo, one less.
    request = album_pb2.CreateAlbumRequest(album=album_pb2.Album(title="Shelf"), photos=[coffee, rocket],
                                           request_id=uuid.uuid4().hex)
    album = albums.CreateAlbum(request, metadata=auth, timeout=30).album
    assert albums.CreateAlbum(request, metadata=auth, timeout=30).album.name == album.name
    assert (album.title, album.photo_count) == ("Shelf", 2)
    assert listed(stack, user, album=album.name) == {coffee, rocket}
    assert albums.AddAlbumPhotos(album_pb2.AddAlbumPhotosRequest(album=album.name, photos=[china]),
                                 metadata=auth, timeout=30).album.photo_count == 3
    assert albums.RemoveAlbumPhotos(album_pb2.RemoveAlbumPhotosRequest(album=album.name, photos=[coffee]),
                                    metadata=auth, timeout=30).album.photo_count == 2
    get = lambda name: stack.ingest.GetPhoto(ingest_pb2.GetPhotoRequest(name=name), metadata=auth, timeout=30).photo
    assert list(get(rocket).albums) == [album.name] and list(get(coffee).albums) == []

    # A favourite.
    stack.ingest.UpdatePhoto(ingest_pb2.UpdatePhotoRequest(
        photo=photo_pb2.Photo(name=rocket, favorite=True), update_mask=field_mask_pb2.FieldMask(paths=["favorite"])),
        metadata=auth, timeout=30)
    assert listed(stack, user, favorite=True) == {rocket}

    # Deleted: in the trash for 30 days, out of listings, albums and search; restorable as it was.
    trashed = stack.ingest.DeletePhoto(ingest_pb2.DeletePhotoRequest(name=rocket), metadata=auth, timeout=30).photo
    assert trashed.purge_time.ToDatetime() - trashed.delete_time.ToDatetime() == dt.timedelta(days=30)
    assert rocket not in listed(stack, user) and listed(stack, user, deleted=True) == {rocket}
    assert albums.GetAlbum(album_pb2.GetAlbumRequest(name=album.name), metadata=auth, timeout=30).album.photo_count == 1
    assert found(stack, user, library) == {coffee, china}
    restored = stack.ingest.UndeletePhotos(ingest_pb2.UndeletePhotosRequest(names=[rocket]), metadata=auth,
                                           timeout=30).photos[0]
    assert not restored.HasField("delete_time") and restored.favorite and list(restored.albums) == [album.name]
    assert found(stack, user, library) == {coffee, rocket, china}

    # Purged: gone with its blobs and vectors. The album goes, its photos stay.
    sha = hashlib.sha256(library["shelf-rocket.jpg"][1]).hexdigest()
    assert any(sha in key for key in stack.stored_blobs())
    stack.ingest.DeletePhoto(ingest_pb2.DeletePhotoRequest(name=rocket), metadata=auth, timeout=30)
    purged = stack.ingest.PurgePhotos(ingest_pb2.PurgePhotosRequest(all=True), metadata=auth, timeout=60).names
    assert list(purged) == [rocket]
    with pytest.raises(grpc.RpcError) as err:
        get(rocket)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert not any(sha in key or rocket.removeprefix("photos/") in key for key in stack.stored_blobs())
    assert found(stack, user, library) == {coffee, china}
    albums.DeleteAlbum(album_pb2.DeleteAlbumRequest(name=album.name), metadata=auth, timeout=30)
    assert listed(stack, user) >= {coffee, china}
