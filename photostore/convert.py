"""Conversions between backend records and photos.v1 messages."""
from __future__ import annotations

import datetime as dt

from google.protobuf import timestamp_pb2

from photos.v1 import photo_pb2
from photostore.backends.base import (
    STATUS_FAILED, STATUS_INDEXED, STATUS_UPLOADED, TEXT_DONE, TEXT_FAILED, TEXT_PENDING, TEXT_SKIPPED, PhotoRecord)
from photostore.errors import invalid

NAME_PREFIX = "photos/"
USER_PREFIX = "users/"
ALBUM_PREFIX = "albums/"

STATUS_TO_PROTO = {
    STATUS_UPLOADED: photo_pb2.PHOTO_STATUS_UPLOADED,
    STATUS_INDEXED: photo_pb2.PHOTO_STATUS_INDEXED,
    STATUS_FAILED: photo_pb2.PHOTO_STATUS_FAILED,
}
STATUS_FROM_PROTO = {v: k for k, v in STATUS_TO_PROTO.items()}
TEXT_STATE_TO_PROTO = {
    TEXT_PENDING: photo_pb2.STAGE_STATE_PENDING,
    TEXT_DONE: photo_pb2.STAGE_STATE_DONE,
    TEXT_FAILED: photo_pb2.STAGE_STATE_FAILED,
    TEXT_SKIPPED: photo_pb2.STAGE_STATE_SKIPPED,
}
TEXT_STATE_FROM_PROTO = {v: k for k, v in TEXT_STATE_TO_PROTO.items()}


def photo_name(photo_id: str) -> str:
    return NAME_PREFIX + photo_id


def photo_id_from_name(name: str, field: str = "name") -> str:
    return _resource_id(name, NAME_PREFIX, "a photo", field)


def _resource_id(name: str, prefix: str, kind: str, field: str) -> str:
    """The {id} of "{prefix}{id}"; INVALID_ARGUMENT for anything else."""
    if not name.startswith(prefix) or len(name) == len(prefix) or "/" in name[len(prefix):]:
        raise invalid(f"'{name}' is not {kind} name; expected {prefix}{{id}}", field=field)
    return name[len(prefix):]


def role_name(role: int) -> str:
    """"clip", "labels", "ocr" or "sentence" for a photos.v1.ModelRole."""
    from photos.v1 import embed_pb2
    return embed_pb2.ModelRole.Name(role).removeprefix("MODEL_ROLE_").lower()


def user_name(user_id: str) -> str:
    return USER_PREFIX + user_id


def to_timestamp(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(dt.timezone.utc))
    return ts


def from_timestamp(ts: timestamp_pb2.Timestamp, present: bool) -> dt.datetime | None:
    """None when the field is unset (has_field is false)."""
    if not present:
        return None
    return ts.ToDatetime(tzinfo=dt.timezone.utc)


def album_name(album_id: str) -> str:
    return ALBUM_PREFIX + album_id


def album_id_from_name(name: str, field: str = "name") -> str:
    return _resource_id(name, ALBUM_PREFIX, "an album", field)


def photo_to_proto(r: PhotoRecord, trash_retention: dt.timedelta | None = None) -> photo_pb2.Photo:
    """The photo message; purge_time (of a photo in the trash) is set when trash_retention is given."""
    p = photo_pb2.Photo(
        name=photo_name(r.id), owner=user_name(r.owner), sha256=r.sha256, content_type=r.content_type,
        size_bytes=r.size_bytes, width=r.width, height=r.height,
        camera_make=r.camera_make, camera_model=r.camera_model,
        create_time=to_timestamp(r.created_at), update_time=to_timestamp(r.updated_at),
        status=STATUS_TO_PROTO.get(r.status, photo_pb2.PHOTO_STATUS_UNSPECIFIED),
        status_reason=r.status_reason, filename=r.filename, index_attempts=r.index_attempts,
        labels=[photo_pb2.Label(text=text, score=score) for text, score in r.labels],
        ocr_text=r.ocr_text, embedding_models=r.embedding_models,
        text_state=TEXT_STATE_TO_PROTO.get(r.text_state, photo_pb2.STAGE_STATE_UNSPECIFIED),
        text_state_reason=r.text_state_reason,
        favorite=r.favorite, albums=[album_name(a) for a in r.album_ids],
        has_preview=bool(r.preview_key),
    )
    if r.deleted_at is not None:
        p.delete_time.CopyFrom(to_timestamp(r.deleted_at))
        if trash_retention is not None:
            p.purge_time.CopyFrom(to_timestamp(r.deleted_at + trash_retention))
    if r.taken_at is not None:
        p.take_time.CopyFrom(to_timestamp(r.taken_at))
    if r.latitude is not None and r.longitude is not None:
        p.location.CopyFrom(photo_pb2.GeoPoint(latitude=r.latitude, longitude=r.longitude,
                                               altitude=r.altitude or 0.0))
    if r.place_country_code or r.place_city:
        p.place.CopyFrom(photo_pb2.Place(city=r.place_city, region=r.place_region,
                                         country=r.place_country, country_code=r.place_country_code))
    return p
