"""Albums (AlbumService), the trash (soft delete, restore, purge, the purge loop) and favourites,
on the real ingest server with embedded backends in tmp_path (the harness of test_ingest.py)."""
from __future__ import annotations

import datetime as dt

import grpc
import numpy as np
import pytest
from google.protobuf import field_mask_pb2

from photos.v1 import album_pb2, album_pb2_grpc, ingest_pb2, photo_pb2
from photostore.backends.base import VectorObject
from photostore.events import CREATED, DELETED, UPDATED
from tests.test_ingest import (Ingest, astronaut_jpeg, dated_jpeg, error_info, ingest, make_settings, pid,  # noqa: F401
                               rpc_error, running_ingest, violated_field, wait_for)

pytestmark = pytest.mark.timeout(120)
NOT_FOUND = grpc.StatusCode.NOT_FOUND
INVALID = grpc.StatusCode.INVALID_ARGUMENT
DAY = dt.timedelta(days=1)


def albums(ingest: Ingest) -> album_pb2_grpc.AlbumServiceStub:
    return album_pb2_grpc.AlbumServiceStub(ingest.channel)


def upload_dated(ingest: Ingest, n: int, auth=None) -> list[photo_pb2.Photo]:
    """n photos taken a day apart, oldest first, once their previews are made (so no preview made
    in the background lands beside the tests' checks of the blob store)."""
    start = dt.datetime(2022, 3, 1, 12, tzinfo=dt.timezone.utc)
    photos = [ingest.upload(dated_jpeg(start + i * DAY, (40 * i % 256, 90, 200 - 30 * i)), auth=auth).photo
              for i in range(n)]
    for photo in photos:
        wait_for(lambda: ingest.get(photo.name, auth=auth).has_preview)
    return photos


def names(photos) -> list[str]:
    return [p.name for p in photos]


def listed(ingest: Ingest, auth=None, **filters) -> list[str]:
    return names(ingest.list(auth=auth, page_size=100, **filters).photos)


def blobs_of(ingest: Ingest, photo: photo_pb2.Photo) -> list[str]:
    """The files of the blob store that hold the photo: original, thumbnail, copy, preview."""
    return [f for f in ingest.stored_files() if pid(photo) in f or photo.sha256 in f]


def changes_of(ingest: Ingest, photo: photo_pb2.Photo) -> list[photo_pb2.Photo]:
    """The photos.changes records of one photo, in order (one key: one partition), as
    (change type, photo in the record)."""
    return [(e.message.changed.change_type, e.message.changed.photo) for e in ingest.change_events()
            if e.key == pid(photo)]


def gone(ingest: Ingest, name: str) -> bool:
    try:
        ingest.get(name)
    except grpc.RpcError as e:
        assert e.code() == NOT_FOUND, e
        return True
    return False


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


# Albums ------------------------------------------------------------------------------------------

def test_album_lifecycle(ingest):
    stub = albums(ingest)
    old, middle, new = upload_dated(ingest, 3)
    request = album_pb2.CreateAlbumRequest(album=album_pb2.Album(title=" Holiday "),
                                           photos=[old.name, middle.name], request_id="create-1")
    album = stub.CreateAlbum(request, metadata=ingest.alice).album
    assert album.name.startswith("albums/") and album.owner == f"users/{ingest.alice_id}"
    assert (album.title, album.photo_count, album.cover_photo) == ("Holiday", 2, middle.name)  # newest
    # A retry with the same request_id gives the first album, not a second one.
    assert stub.CreateAlbum(request, metadata=ingest.alice).album == album
    assert names(stub.ListAlbums(album_pb2.ListAlbumsRequest(), metadata=ingest.alice).albums) == [album.name]
    assert stub.GetAlbum(album_pb2.GetAlbumRequest(name=album.name), metadata=ingest.alice).album == album
    assert listed(ingest, album=album.name) == [middle.name, old.name]
    assert list(ingest.get(old.name).albums) == [album.name] and list(ingest.get(new.name).albums) == []

    # Adding is all or nothing: one of bob's photos makes the call NOT_FOUND, naming it.
    bobs = ingest.upload(astronaut_jpeg(), auth=ingest.bob).photo
    add = album_pb2.AddAlbumPhotosRequest(album=album.name, photos=[new.name, bobs.name])
    err = rpc_error(stub.AddAlbumPhotos, add, metadata=ingest.alice)
    assert err.code() == NOT_FOUND and error_info(err).metadata["missing"] == bobs.name
    assert listed(ingest, album=album.name) == [middle.name, old.name]
    for _ in range(2):  # adding what is there changes nothing
        added = stub.AddAlbumPhotos(album_pb2.AddAlbumPhotosRequest(album=album.name, photos=[new.name, old.name]),
                                    metadata=ingest.alice).album
        assert (added.photo_count, added.cover_photo) == (3, new.name)
    assert rpc_error(stub.AddAlbumPhotos, album_pb2.AddAlbumPhotosRequest(album=album.name),
                     metadata=ingest.alice).code() == INVALID

    # Title and cover: the cover must be in the album.
    update = album_pb2.UpdateAlbumRequest(album=album_pb2.Album(name=album.name, title="Spring",
                                                                cover_photo=old.name),
                                          update_mask=mask("title", "cover_photo"))
    updated = stub.UpdateAlbum(update, metadata=ingest.alice).album
    assert (updated.title, updated.cover_photo) == ("Spring", old.name)
    assert names(stub.ListAlbums(album_pb2.ListAlbumsRequest(), metadata=ingest.alice).albums) == [album.name]
    for bad, field in ((album_pb2.Album(name=album.name, cover_photo=bobs.name), "album.cover_photo"),
                       (album_pb2.Album(name=album.name, title=""), "album.title"),
                       (album_pb2.Album(name=album.name, title="x" * 201), "album.title")):
        err = rpc_error(stub.UpdateAlbum, album_pb2.UpdateAlbumRequest(
            album=bad, update_mask=mask("cover_photo" if bad.cover_photo else "title")), metadata=ingest.alice)
        assert (err.code(), violated_field(err)) == (INVALID, field)
    assert rpc_error(stub.UpdateAlbum, album_pb2.UpdateAlbumRequest(album=album_pb2.Album(name=album.name),
                                                                    update_mask=mask("owner")),
                     metadata=ingest.alice).code() == INVALID

    # Removing the cover unsets it (the newest again); a photo in the trash is not counted.
    removed = stub.RemoveAlbumPhotos(album_pb2.RemoveAlbumPhotosRequest(album=album.name, photos=[old.name]),
                                     metadata=ingest.alice).album
    assert (removed.photo_count, removed.cover_photo) == (2, new.name)
    ingest.stub.DeletePhoto(ingest_pb2.DeletePhotoRequest(name=new.name), metadata=ingest.alice)
    trashed = stub.GetAlbum(album_pb2.GetAlbumRequest(name=album.name), metadata=ingest.alice).album
    assert (trashed.photo_count, trashed.cover_photo) == (1, middle.name)
    assert listed(ingest, album=album.name) == [middle.name]

    # Deleting the album leaves its photos.
    stub.DeleteAlbum(album_pb2.DeleteAlbumRequest(name=album.name), metadata=ingest.alice)
    assert rpc_error(stub.GetAlbum, album_pb2.GetAlbumRequest(name=album.name),
                     metadata=ingest.alice).code() == NOT_FOUND
    assert list(ingest.get(middle.name).albums) == []
    assert listed(ingest) == [middle.name, old.name]
    assert rpc_error(ingest.list, album=album.name).code() == NOT_FOUND


def test_create_album_checks_title_photos_and_cover(ingest):
    stub = albums(ingest)
    [photo] = upload_dated(ingest, 1)
    bobs = ingest.upload(astronaut_jpeg(), auth=ingest.bob).photo
    for request, code, field in (
            (album_pb2.CreateAlbumRequest(album=album_pb2.Album(title="  ")), INVALID, "album.title"),
            (album_pb2.CreateAlbumRequest(album=album_pb2.Album(title="a"), photos=["nope"]), INVALID, "photos[0]"),
            (album_pb2.CreateAlbumRequest(album=album_pb2.Album(title="a", cover_photo=photo.name)),
             INVALID, "album.cover_photo"),
            (album_pb2.CreateAlbumRequest(album=album_pb2.Album(title="a"), photos=[photo.name, bobs.name]),
             NOT_FOUND, None),
            (album_pb2.CreateAlbumRequest(album=album_pb2.Album(title="a"), photos=[photo.name] * 1001),
             INVALID, "photos")):
        err = rpc_error(stub.CreateAlbum, request, metadata=ingest.alice)
        assert (err.code(), violated_field(err)) == (code, field)
    assert list(stub.ListAlbums(album_pb2.ListAlbumsRequest(), metadata=ingest.alice).albums) == []
    empty = stub.CreateAlbum(album_pb2.CreateAlbumRequest(album=album_pb2.Album(title="Empty")),
                             metadata=ingest.alice).album
    assert (empty.photo_count, empty.cover_photo) == (0, "")


def test_another_users_album_is_not_found(ingest):
    stub = albums(ingest)
    [photo] = upload_dated(ingest, 1)
    album = stub.CreateAlbum(album_pb2.CreateAlbumRequest(album=album_pb2.Album(title="Mine"), photos=[photo.name]),
                             metadata=ingest.alice).album
    bobs = ingest.upload(astronaut_jpeg(), auth=ingest.bob).photo
    calls = [
        (stub.GetAlbum, album_pb2.GetAlbumRequest(name=album.name)),
        (stub.UpdateAlbum, album_pb2.UpdateAlbumRequest(album=album_pb2.Album(name=album.name, title="Bob's"),
                                                        update_mask=mask("title"))),
        (stub.AddAlbumPhotos, album_pb2.AddAlbumPhotosRequest(album=album.name, photos=[bobs.name])),
        (stub.RemoveAlbumPhotos, album_pb2.RemoveAlbumPhotosRequest(album=album.name, photos=[photo.name])),
        (stub.DeleteAlbum, album_pb2.DeleteAlbumRequest(name=album.name)),
        (ingest.stub.ListPhotos, ingest_pb2.ListPhotosRequest(album=album.name)),
    ]
    for call, request in calls:
        assert rpc_error(call, request, metadata=ingest.bob).code() == NOT_FOUND, call
    assert list(stub.ListAlbums(album_pb2.ListAlbumsRequest(), metadata=ingest.bob).albums) == []
    assert stub.GetAlbum(album_pb2.GetAlbumRequest(name=album.name), metadata=ingest.alice).album == album


def test_albums_page_most_recently_updated_first(ingest):
    stub = albums(ingest)
    made = [stub.CreateAlbum(album_pb2.CreateAlbumRequest(album=album_pb2.Album(title=f"A{i}")),
                             metadata=ingest.alice).album for i in range(3)]
    stub.UpdateAlbum(album_pb2.UpdateAlbumRequest(album=album_pb2.Album(name=made[0].name, title="A0 again"),
                                                  update_mask=mask("title")), metadata=ingest.alice)
    seen, token = [], ""
    while True:
        page = stub.ListAlbums(album_pb2.ListAlbumsRequest(page_size=2, page_token=token), metadata=ingest.alice)
        seen += names(page.albums)
        if not (token := page.next_page_token):
            break
    assert seen == [made[0].name, made[2].name, made[1].name]


# Trash -------------------------------------------------------------------------------------------

def test_delete_moves_to_the_trash_and_restore_brings_it_back(ingest):
    kept, photo = upload_dated(ingest, 2)
    before = dt.datetime.now(dt.timezone.utc)
    trashed = ingest.stub.DeletePhoto(ingest_pb2.DeletePhotoRequest(name=photo.name), metadata=ingest.alice).photo
    delete_time = trashed.delete_time.ToDatetime(tzinfo=dt.timezone.utc)
    assert before - dt.timedelta(seconds=5) <= delete_time <= dt.datetime.now(dt.timezone.utc)
    assert trashed.purge_time.ToDatetime(tzinfo=dt.timezone.utc) - delete_time == dt.timedelta(days=30)
    # Out of the listing, in the trash; still readable by name, with its blobs.
    assert listed(ingest) == [kept.name] and ingest.list().total_size == 1
    assert listed(ingest, deleted=True) == [photo.name]
    assert ingest.get(photo.name).delete_time == trashed.delete_time
    assert len(blobs_of(ingest, photo)) >= 3
    # Deleting again leaves it as it is (its time in the trash does not start over).
    again = ingest.stub.DeletePhoto(ingest_pb2.DeletePhotoRequest(name=photo.name), metadata=ingest.alice).photo
    assert again.delete_time == trashed.delete_time
    assert [(t, p.HasField("delete_time")) for t, p in changes_of(ingest, photo)] == [
        (CREATED, False), (UPDATED, True)]

    # Restore: all or nothing, and only photos in the trash.
    undelete = ingest.stub.UndeletePhotos
    err = rpc_error(undelete, ingest_pb2.UndeletePhotosRequest(names=[photo.name, kept.name]), metadata=ingest.alice)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and kept.name in err.details()
    assert rpc_error(undelete, ingest_pb2.UndeletePhotosRequest(names=[photo.name]),
                     metadata=ingest.bob).code() == NOT_FOUND
    assert listed(ingest, deleted=True) == [photo.name]
    [restored] = undelete(ingest_pb2.UndeletePhotosRequest(names=[photo.name]), metadata=ingest.alice).photos
    assert not restored.HasField("delete_time") and not restored.HasField("purge_time")
    assert listed(ingest) == [photo.name, kept.name] and listed(ingest, deleted=True) == []
    last_type, last = changes_of(ingest, photo)[-1]
    assert (last_type, last.HasField("delete_time")) == (UPDATED, False)


def test_batch_delete_is_all_or_nothing_and_purge_removes_blobs_vectors_and_row(ingest):
    a, b, kept = upload_dated(ingest, 3)
    bobs = ingest.upload(astronaut_jpeg(), auth=ingest.bob).photo
    for photo in (a, b):
        ingest.vectors.upsert(VectorObject(photo_id=pid(photo), owner=ingest.alice_id, model="m",
                                           vector=np.ones(4, dtype=np.float32) / 2))
    err = rpc_error(ingest.stub.BatchDeletePhotos, ingest_pb2.BatchDeletePhotosRequest(names=[a.name, bobs.name]),
                    metadata=ingest.alice)
    assert err.code() == NOT_FOUND and error_info(err).metadata["missing"] == bobs.name
    assert listed(ingest, deleted=True) == []
    deleted = ingest.stub.BatchDeletePhotos(ingest_pb2.BatchDeletePhotosRequest(names=[a.name, b.name]),
                                            metadata=ingest.alice).photos
    assert names(deleted) == [a.name, b.name] and all(p.HasField("purge_time") for p in deleted)
    # One batch, one delete_time: the trash's order then goes by id.
    assert listed(ingest) == [kept.name] and listed(ingest, deleted=True) == sorted([a.name, b.name], reverse=True)

    purge = ingest.stub.PurgePhotos
    assert rpc_error(purge, ingest_pb2.PurgePhotosRequest(), metadata=ingest.alice).code() == INVALID
    assert rpc_error(purge, ingest_pb2.PurgePhotosRequest(names=[a.name], all=True),
                     metadata=ingest.alice).code() == INVALID
    err = rpc_error(purge, ingest_pb2.PurgePhotosRequest(names=[a.name, kept.name]), metadata=ingest.alice)
    assert (err.code(), error_info(err).reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NOT_IN_TRASH")
    assert rpc_error(purge, ingest_pb2.PurgePhotosRequest(names=[bobs.name]),
                     metadata=ingest.alice).code() == NOT_FOUND
    assert list(purge(ingest_pb2.PurgePhotosRequest(names=[a.name]), metadata=ingest.alice).names) == [a.name]
    assert ingest.vectors.get(pid(a)) is None and ingest.vectors.get(pid(b)) is not None
    assert blobs_of(ingest, a) == [] and blobs_of(ingest, b) != []
    assert rpc_error(ingest.get, a.name).code() == NOT_FOUND
    # Emptying the trash: the caller's whole trash, no one else's.
    ingest.stub.DeletePhoto(ingest_pb2.DeletePhotoRequest(name=bobs.name), metadata=ingest.bob)
    assert list(purge(ingest_pb2.PurgePhotosRequest(all=True), metadata=ingest.alice).names) == [b.name]
    assert ingest.vectors.get(pid(b)) is None
    assert blobs_of(ingest, b) == [] and blobs_of(ingest, kept) != []
    assert listed(ingest, auth=ingest.bob, deleted=True) == [bobs.name]
    for photo in (a, b):
        assert [t for t, _ in changes_of(ingest, photo)] == [CREATED, UPDATED, DELETED]


def test_purge_loop_purges_expired_trash(tmp_path):
    settings = make_settings(tmp_path).model_copy(update={"trash_retention_days": 0.0,
                                                          "trash_purge_interval_seconds": 0.2})
    with running_ingest(settings) as ingest:
        kept, photo = upload_dated(ingest, 2)
        trashed = ingest.stub.DeletePhoto(ingest_pb2.DeletePhotoRequest(name=photo.name), metadata=ingest.alice).photo
        assert trashed.purge_time == trashed.delete_time
        wait_for(lambda: gone(ingest, photo.name))
        assert blobs_of(ingest, photo) == [] and blobs_of(ingest, kept) != []
        assert listed(ingest) == [kept.name]


def test_reuploading_a_photo_in_the_trash_restores_it(ingest):
    data = astronaut_jpeg()
    photo = ingest.upload(data).photo
    ingest.stub.DeletePhoto(ingest_pb2.DeletePhotoRequest(name=photo.name), metadata=ingest.alice)
    again = ingest.upload(data)
    assert again.duplicate and again.photo.name == photo.name and not again.photo.HasField("delete_time")
    assert listed(ingest) == [photo.name] and listed(ingest, deleted=True) == []


def test_search_hydration_leaves_out_photos_in_the_trash(ingest):
    a, b = upload_dated(ingest, 2)
    ingest.stub.DeletePhoto(ingest_pb2.DeletePhotoRequest(name=a.name), metadata=ingest.alice)
    # BatchGetPhotos still returns it, marked; search drops what has a delete_time.
    got = ingest.stub.BatchGetPhotos(ingest_pb2.BatchGetPhotosRequest(names=[a.name, b.name]),
                                     metadata=ingest.alice).photos
    assert [(p.name, p.HasField("delete_time")) for p in got] == [(a.name, True), (b.name, False)]


# Favourites --------------------------------------------------------------------------------------

def test_favorite_update_and_filter(ingest):
    a, b = upload_dated(ingest, 2)
    update = ingest.stub.UpdatePhoto
    favorite = update(ingest_pb2.UpdatePhotoRequest(photo=photo_pb2.Photo(name=a.name, favorite=True),
                                                    update_mask=mask("favorite")), metadata=ingest.alice).photo
    assert favorite.favorite and ingest.get(a.name).favorite and not ingest.get(b.name).favorite
    assert listed(ingest, favorite=True) == [a.name]
    assert ingest.list(favorite=True).total_size == 1
    for paths in ((), ("filename",), ("favorite", "filename")):
        err = rpc_error(update, ingest_pb2.UpdatePhotoRequest(photo=photo_pb2.Photo(name=a.name, filename="x"),
                                                              update_mask=mask(*paths)), metadata=ingest.alice)
        assert (err.code(), violated_field(err)) == (INVALID, "update_mask")
    assert rpc_error(update, ingest_pb2.UpdatePhotoRequest(photo=photo_pb2.Photo(name=a.name, favorite=False),
                                                           update_mask=mask("favorite")),
                     metadata=ingest.bob).code() == NOT_FOUND
    last_type, last = changes_of(ingest, a)[-1]
    assert (last_type, last.favorite) == (UPDATED, True)
    update(ingest_pb2.UpdatePhotoRequest(photo=photo_pb2.Photo(name=a.name), update_mask=mask("favorite")),
           metadata=ingest.alice)
    assert listed(ingest, favorite=True) == []
