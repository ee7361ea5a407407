"""HTTP/JSON routes of albums (AlbumService), the trash and favourites (IngestService).

Custom methods follow grpc-gateway's `:verb` style (AIP-136): POST /photos:batchDelete, :undelete,
:purge, POST /albums/{id}:addPhotos, :removePhotos. Listing the trash, an album's photos or the
favourites is GET /photos with deleted, album or favorite (gateway/app.py).
"""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from google.protobuf import field_mask_pb2
from werkzeug.routing import BaseConverter

from gateway.app import API, RPC_TIMEOUT_S, caller_metadata, int_param, to_json
from photos.v1 import album_pb2, album_pb2_grpc, ingest_pb2, photo_pb2
from photostore.convert import album_name, photo_name
from photostore.errors import invalid

blueprint = Blueprint("albums", __name__)


class IdConverter(BaseConverter):
    """An id without ':' , so /albums/{id}:addPhotos never reads as the album "{id}:addPhotos"
    (a GET there is 405, not a lookup)."""
    regex = "[^/:]+"


@blueprint.record_once
def _add_converter(state) -> None:  # before the rules below are added
    state.app.url_map.converters["id"] = IdConverter


def albums() -> album_pb2_grpc.AlbumServiceStub:
    return album_pb2_grpc.AlbumServiceStub(current_app.extensions["photostore_clients"].channel("ingest"))


def ingest():
    return current_app.extensions["photostore_clients"].ingest


def json_object() -> dict:
    body = request.get_json(silent=True) if request.get_data() else {}
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object", field="body")
    return body


def string_field(body: dict, name: str) -> str:
    value = body.get(name, "")
    if not isinstance(value, str):
        raise invalid(f"{name} must be a string", field=name)
    return value


def names_field(body: dict, name: str) -> list[str]:
    """A list of photo names ("photos/{id}")."""
    value = body.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid(f"{name} must be a list of photo names (photos/{{id}})", field=name)
    return value


def bool_field(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise invalid(f"{name} must be true or false", field=name)
    return value


def call(method, message):
    return jsonify(to_json(method(message, metadata=caller_metadata(), timeout=RPC_TIMEOUT_S)))


# Trash and favourites

@blueprint.post(f"{API}/photos:batchDelete")
def batch_delete_photos():
    body = json_object()
    return call(ingest().BatchDeletePhotos, ingest_pb2.BatchDeletePhotosRequest(names=names_field(body, "names")))


@blueprint.post(f"{API}/photos:undelete")
def undelete_photos():
    body = json_object()
    return call(ingest().UndeletePhotos, ingest_pb2.UndeletePhotosRequest(names=names_field(body, "names")))


@blueprint.post(f"{API}/photos:purge")
def purge_photos():
    body = json_object()
    return call(ingest().PurgePhotos, ingest_pb2.PurgePhotosRequest(names=names_field(body, "names"),
                                                                    all=bool_field(body, "all")))


@blueprint.patch(f"{API}/photos/<photo_id>")
def update_photo(photo_id: str):
    body = json_object()
    if "favorite" not in body:
        raise invalid("send the fields to change; only favorite may be changed", field="favorite")
    return call(ingest().UpdatePhoto, ingest_pb2.UpdatePhotoRequest(
        photo=photo_pb2.Photo(name=photo_name(photo_id), favorite=bool_field(body, "favorite")),
        update_mask=field_mask_pb2.FieldMask(paths=["favorite"])))


# Albums

@blueprint.get(f"{API}/albums")
def list_albums():
    return call(albums().ListAlbums, album_pb2.ListAlbumsRequest(
        page_size=int_param("pageSize"), page_token=request.args.get("pageToken", "")))


@blueprint.post(f"{API}/albums")
def create_album():
    body = json_object()
    return call(albums().CreateAlbum, album_pb2.CreateAlbumRequest(
        album=album_pb2.Album(title=string_field(body, "title"), cover_photo=string_field(body, "coverPhoto")),
        photos=names_field(body, "photos"), request_id=request.headers.get("Idempotency-Key", "").strip()))


@blueprint.get(f"{API}/albums/<id:album_id>")
def get_album(album_id: str):
    return call(albums().GetAlbum, album_pb2.GetAlbumRequest(name=album_name(album_id)))


@blueprint.patch(f"{API}/albums/<id:album_id>")
def update_album(album_id: str):
    body = json_object()
    paths = [field for field, key in (("title", "title"), ("cover_photo", "coverPhoto")) if key in body]
    if not paths:
        raise invalid("send title and/or coverPhoto", field="title")
    return call(albums().UpdateAlbum, album_pb2.UpdateAlbumRequest(
        album=album_pb2.Album(name=album_name(album_id), title=string_field(body, "title"),
                              cover_photo=string_field(body, "coverPhoto")),
        update_mask=field_mask_pb2.FieldMask(paths=paths)))


@blueprint.delete(f"{API}/albums/<id:album_id>")
def delete_album(album_id: str):
    return call(albums().DeleteAlbum, album_pb2.DeleteAlbumRequest(name=album_name(album_id)))


@blueprint.post(f"{API}/albums/<id:album_id>:addPhotos")
def add_album_photos(album_id: str):
    body = json_object()
    return call(albums().AddAlbumPhotos, album_pb2.AddAlbumPhotosRequest(
        album=album_name(album_id), photos=names_field(body, "photos")))


@blueprint.post(f"{API}/albums/<id:album_id>:removePhotos")
def remove_album_photos(album_id: str):
    body = json_object()
    return call(albums().RemoveAlbumPhotos, album_pb2.RemoveAlbumPhotosRequest(
        album=album_name(album_id), photos=names_field(body, "photos")))
