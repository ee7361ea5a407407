"""photos.v1.AlbumService: the caller's albums (served by the ingest process, which owns metadata).

An album's photos are listed by IngestService.ListPhotos with `album` set; a photo's albums are
its album_ids in the metadata store, which also counts each album's photos (not those in the trash).
"""
from __future__ import annotations

import uuid
from typing import Sequence

from ingest_svc.service import owned_photos
from photos.v1 import album_pb2, album_pb2_grpc
from photostore.auth import current_user
from photostore.backends.base import AlbumRecord, MetadataStore, PhotoFilter, utcnow
from photostore.convert import album_id_from_name, album_name, photo_id_from_name, photo_name, to_timestamp, user_name
from photostore.errors import ServiceError, invalid, not_found
from photostore.pagination import PageTokens, position_time, time_position
from photostore.pagination import page_size as read_page_size

SERVICE_NAME = album_pb2.DESCRIPTOR.services_by_name["AlbumService"].full_name
MAX_TITLE_CHARS = 200
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_REQUEST_ID_CHARS = 128
UPDATABLE_FIELDS = ("title", "cover_photo")


class AlbumServicer(album_pb2_grpc.AlbumServiceServicer):
    def __init__(self, metadata: MetadataStore, page_tokens: PageTokens):
        self._metadata = metadata
        self._page_tokens = page_tokens

    def CreateAlbum(self, request, context):
        try:
            owner = current_user().id
            title = _title(request.album.title, "album.title")
            if len(request.request_id) > MAX_REQUEST_ID_CHARS:
                raise invalid(f"request_id is longer than {MAX_REQUEST_ID_CHARS} characters", field="request_id")
            photo_ids = _photo_ids(self._metadata, owner, request.photos, allow_none=True)
            cover_id = ""
            if request.album.cover_photo:
                cover_id = photo_id_from_name(request.album.cover_photo, field="album.cover_photo")
                if cover_id not in photo_ids:
                    raise invalid("cover_photo must be one of the album's photos", field="album.cover_photo")
            now = utcnow()
            record = AlbumRecord(id=uuid.uuid4().hex, owner=owner, title=title, created_at=now,
                                 updated_at=now, cover_photo_id=cover_id)
            stored, _ = self._metadata.create_album(record, photo_ids, request.request_id)
            return album_pb2.CreateAlbumResponse(album=self._album(stored))
        except ServiceError as e:
            e.abort(context)

    def GetAlbum(self, request, context):
        try:
            return album_pb2.GetAlbumResponse(album=self._album(self._owned(request.name, "name")))
        except ServiceError as e:
            e.abort(context)

    def ListAlbums(self, request, context):
        try:
            page_size = read_page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
            filters = {"list": "albums"}
            after = None
            if request.page_token:
                after = position_time(self._page_tokens.read(request.page_token, filters))
            albums, next_after = self._metadata.list_albums(current_user().id, page_size=page_size, after=after)
            token = "" if next_after is None else self._page_tokens.mint(time_position(next_after), filters)
            return album_pb2.ListAlbumsResponse(albums=[self._album(a) for a in albums], next_page_token=token)
        except ServiceError as e:
            e.abort(context)

    def UpdateAlbum(self, request, context):
        try:
            album = self._owned(request.album.name, "album.name")
            paths = list(request.update_mask.paths)
            if not paths:  # AIP-134: no mask means every field that is set
                paths = [f for f in UPDATABLE_FIELDS if getattr(request.album, f)]
            unknown = [p for p in paths if p not in UPDATABLE_FIELDS]
            if unknown or not paths:
                raise invalid(f"update_mask may name only {', '.join(UPDATABLE_FIELDS)}", field="update_mask")
            changes = {}
            if "title" in paths:
                changes["title"] = _title(request.album.title, "album.title")
            if "cover_photo" in paths:
                cover_id = ""
                if request.album.cover_photo:
                    cover_id = photo_id_from_name(request.album.cover_photo, field="album.cover_photo")
                    photo = self._metadata.get_photo(cover_id, owner=album.owner)
                    if photo is None or album.id not in photo.album_ids:
                        raise invalid("cover_photo must be one of the album's photos", field="album.cover_photo")
                changes["cover_photo_id"] = cover_id
            updated = self._metadata.update_album(album.id, **changes)
            return album_pb2.UpdateAlbumResponse(album=self._album(_found(updated, request.album.name)))
        except ServiceError as e:
            e.abort(context)

    def DeleteAlbum(self, request, context):
        try:
            album = self._owned(request.name, "name")
            self._metadata.delete_album(album.id)
            return album_pb2.DeleteAlbumResponse()
        except ServiceError as e:
            e.abort(context)

    def AddAlbumPhotos(self, request, context):
        try:
            album = self._owned(request.album, "album")
            photo_ids = _photo_ids(self._metadata, album.owner, request.photos)
            updated = self._metadata.add_album_photos(album.id, photo_ids)
            return album_pb2.AddAlbumPhotosResponse(album=self._album(_found(updated, request.album)))
        except ServiceError as e:
            e.abort(context)

    def RemoveAlbumPhotos(self, request, context):
        try:
            album = self._owned(request.album, "album")
            photo_ids = _photo_ids(self._metadata, album.owner, request.photos)
            updated = self._metadata.remove_album_photos(album.id, photo_ids)
            return album_pb2.RemoveAlbumPhotosResponse(album=self._album(_found(updated, request.album)))
        except ServiceError as e:
            e.abort(context)

    def _owned(self, name: str, field: str) -> AlbumRecord:
        """The caller's album; another user's is NOT_FOUND, as one that does not exist."""
        album = self._metadata.get_album(album_id_from_name(name, field=field), owner=current_user().id)
        return _found(album, name)

    def _album(self, album: AlbumRecord) -> album_pb2.Album:
        cover = album.cover_photo_id
        if not cover and album.photo_count:  # unset: the album's newest photo
            page = self._metadata.list_photos(album.owner, filter=PhotoFilter(album_id=album.id), page_size=1)
            cover = page.records[0].id if page.records else ""
        return album_pb2.Album(
            name=album_name(album.id), owner=user_name(album.owner), title=album.title,
            cover_photo=photo_name(cover) if cover else "", photo_count=album.photo_count,
            create_time=to_timestamp(album.created_at), update_time=to_timestamp(album.updated_at))


def _photo_ids(metadata: MetadataStore, owner: str, names: Sequence[str], allow_none: bool = False) -> list[str]:
    """Ids of the request's `photos`, all the owner's (ingest_svc.service.owned_photos)."""
    return [r.id for r in owned_photos(metadata, owner, names, "photos", allow_none)]


def _title(title: str, field: str) -> str:
    """1 to MAX_TITLE_CHARS characters as sent, not blank; stored without surrounding spaces."""
    if not 1 <= len(title) <= MAX_TITLE_CHARS or not title.strip():
        raise invalid(f"title must be 1 to {MAX_TITLE_CHARS} characters, not all blank", field=field)
    return title.strip()


def _found(album: AlbumRecord | None, name: str) -> AlbumRecord:
    if album is None:
        raise not_found(f"{name} not found")
    return album
