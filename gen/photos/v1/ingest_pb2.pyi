import datetime

from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from photos.v1 import photo_pb2 as _photo_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PhotoVariant(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PHOTO_VARIANT_UNSPECIFIED: _ClassVar[PhotoVariant]
    PHOTO_VARIANT_ORIGINAL: _ClassVar[PhotoVariant]
    PHOTO_VARIANT_THUMBNAIL: _ClassVar[PhotoVariant]
    PHOTO_VARIANT_PREVIEW: _ClassVar[PhotoVariant]
PHOTO_VARIANT_UNSPECIFIED: PhotoVariant
PHOTO_VARIANT_ORIGINAL: PhotoVariant
PHOTO_VARIANT_THUMBNAIL: PhotoVariant
PHOTO_VARIANT_PREVIEW: PhotoVariant

class UploadMetadata(_message.Message):
    __slots__ = ("filename", "content_type", "size_bytes", "sha256", "request_id")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    request_id: str
    def __init__(self, filename: _Optional[str] = ..., content_type: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class UploadPhotoRequest(_message.Message):
    __slots__ = ("metadata", "chunk")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    metadata: UploadMetadata
    chunk: bytes
    def __init__(self, metadata: _Optional[_Union[UploadMetadata, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadPhotoResponse(_message.Message):
    __slots__ = ("photo", "duplicate", "similar_photos")
    PHOTO_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    SIMILAR_PHOTOS_FIELD_NUMBER: _ClassVar[int]
    photo: _photo_pb2.Photo
    duplicate: bool
    similar_photos: _containers.RepeatedCompositeFieldContainer[_photo_pb2.Photo]
    def __init__(self, photo: _Optional[_Union[_photo_pb2.Photo, _Mapping]] = ..., duplicate: bool = ..., similar_photos: _Optional[_Iterable[_Union[_photo_pb2.Photo, _Mapping]]] = ...) -> None: ...

class GetPhotoRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetPhotoResponse(_message.Message):
    __slots__ = ("photo",)
    PHOTO_FIELD_NUMBER: _ClassVar[int]
    photo: _photo_pb2.Photo
    def __init__(self, photo: _Optional[_Union[_photo_pb2.Photo, _Mapping]] = ...) -> None: ...

class BatchGetPhotosRequest(_message.Message):
    __slots__ = ("names", "skip_missing")
    NAMES_FIELD_NUMBER: _ClassVar[int]
    SKIP_MISSING_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    skip_missing: bool
    def __init__(self, names: _Optional[_Iterable[str]] = ..., skip_missing: bool = ...) -> None: ...

class BatchGetPhotosResponse(_message.Message):
    __slots__ = ("photos",)
    PHOTOS_FIELD_NUMBER: _ClassVar[int]
    photos: _containers.RepeatedCompositeFieldContainer[_photo_pb2.Photo]
    def __init__(self, photos: _Optional[_Iterable[_Union[_photo_pb2.Photo, _Mapping]]] = ...) -> None: ...

class ListPhotosRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "status", "start_time", "end_time", "camera_make", "camera_model", "place", "album", "favorite", "deleted")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    CAMERA_MAKE_FIELD_NUMBER: _ClassVar[int]
    CAMERA_MODEL_FIELD_NUMBER: _ClassVar[int]
    PLACE_FIELD_NUMBER: _ClassVar[int]
    ALBUM_FIELD_NUMBER: _ClassVar[int]
    FAVORITE_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    status: _photo_pb2.PhotoStatus
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    camera_make: str
    camera_model: str
    place: str
    album: str
    favorite: bool
    deleted: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., status: _Optional[_Union[_photo_pb2.PhotoStatus, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., camera_make: _Optional[str] = ..., camera_model: _Optional[str] = ..., place: _Optional[str] = ..., album: _Optional[str] = ..., favorite: bool = ..., deleted: bool = ...) -> None: ...

class ListPhotosResponse(_message.Message):
    __slots__ = ("photos", "next_page_token", "total_size")
    PHOTOS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    photos: _containers.RepeatedCompositeFieldContainer[_photo_pb2.Photo]
    next_page_token: str
    total_size: int
    def __init__(self, photos: _Optional[_Iterable[_Union[_photo_pb2.Photo, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class DeletePhotoRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeletePhotoResponse(_message.Message):
    __slots__ = ("photo",)
    PHOTO_FIELD_NUMBER: _ClassVar[int]
    photo: _photo_pb2.Photo
    def __init__(self, photo: _Optional[_Union[_photo_pb2.Photo, _Mapping]] = ...) -> None: ...

class BatchDeletePhotosRequest(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchDeletePhotosResponse(_message.Message):
    __slots__ = ("photos",)
    PHOTOS_FIELD_NUMBER: _ClassVar[int]
    photos: _containers.RepeatedCompositeFieldContainer[_photo_pb2.Photo]
    def __init__(self, photos: _Optional[_Iterable[_Union[_photo_pb2.Photo, _Mapping]]] = ...) -> None: ...

class UndeletePhotosRequest(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class UndeletePhotosResponse(_message.Message):
    __slots__ = ("photos",)
    PHOTOS_FIELD_NUMBER: _ClassVar[int]
    photos: _containers.RepeatedCompositeFieldContainer[_photo_pb2.Photo]
    def __init__(self, photos: _Optional[_Iterable[_Union[_photo_pb2.Photo, _Mapping]]] = ...) -> None: ...

class PurgePhotosRequest(_message.Message):
    __slots__ = ("names", "all")
    NAMES_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    all: bool
    def __init__(self, names: _Optional[_Iterable[str]] = ..., all: bool = ...) -> None: ...

class PurgePhotosResponse(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdatePhotoRequest(_message.Message):
    __slots__ = ("photo", "update_mask")
    PHOTO_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    photo: _photo_pb2.Photo
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, photo: _Optional[_Union[_photo_pb2.Photo, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdatePhotoResponse(_message.Message):
    __slots__ = ("photo",)
    PHOTO_FIELD_NUMBER: _ClassVar[int]
    photo: _photo_pb2.Photo
    def __init__(self, photo: _Optional[_Union[_photo_pb2.Photo, _Mapping]] = ...) -> None: ...

class SummarizePhotosRequest(_message.Message):
    __slots__ = ("filter",)
    FILTER_FIELD_NUMBER: _ClassVar[int]
    filter: ListPhotosRequest
    def __init__(self, filter: _Optional[_Union[ListPhotosRequest, _Mapping]] = ...) -> None: ...

class MonthCount(_message.Message):
    __slots__ = ("year", "month", "count")
    YEAR_FIELD_NUMBER: _ClassVar[int]
    MONTH_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    year: int
    month: int
    count: int
    def __init__(self, year: _Optional[int] = ..., month: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class CameraCount(_message.Message):
    __slots__ = ("camera_make", "camera_model", "count")
    CAMERA_MAKE_FIELD_NUMBER: _ClassVar[int]
    CAMERA_MODEL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    camera_make: str
    camera_model: str
    count: int
    def __init__(self, camera_make: _Optional[str] = ..., camera_model: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class PlaceCount(_message.Message):
    __slots__ = ("place", "count")
    PLACE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    place: _photo_pb2.Place
    count: int
    def __init__(self, place: _Optional[_Union[_photo_pb2.Place, _Mapping]] = ..., count: _Optional[int] = ...) -> None: ...

class SummarizePhotosResponse(_message.Message):
    __slots__ = ("months", "cameras", "places", "total_size")
    MONTHS_FIELD_NUMBER: _ClassVar[int]
    CAMERAS_FIELD_NUMBER: _ClassVar[int]
    PLACES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    months: _containers.RepeatedCompositeFieldContainer[MonthCount]
    cameras: _containers.RepeatedCompositeFieldContainer[CameraCount]
    places: _containers.RepeatedCompositeFieldContainer[PlaceCount]
    total_size: int
    def __init__(self, months: _Optional[_Iterable[_Union[MonthCount, _Mapping]]] = ..., cameras: _Optional[_Iterable[_Union[CameraCount, _Mapping]]] = ..., places: _Optional[_Iterable[_Union[PlaceCount, _Mapping]]] = ..., total_size: _Optional[int] = ...) -> None: ...

class DuplicateGroup(_message.Message):
    __slots__ = ("photos",)
    PHOTOS_FIELD_NUMBER: _ClassVar[int]
    photos: _containers.RepeatedCompositeFieldContainer[_photo_pb2.Photo]
    def __init__(self, photos: _Optional[_Iterable[_Union[_photo_pb2.Photo, _Mapping]]] = ...) -> None: ...

class ListDuplicateGroupsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDuplicateGroupsResponse(_message.Message):
    __slots__ = ("groups", "next_page_token")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[DuplicateGroup]
    next_page_token: str
    def __init__(self, groups: _Optional[_Iterable[_Union[DuplicateGroup, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DownloadPhotoRequest(_message.Message):
    __slots__ = ("name", "variant")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    name: str
    variant: PhotoVariant
    def __init__(self, name: _Optional[str] = ..., variant: _Optional[_Union[PhotoVariant, str]] = ...) -> None: ...

class DownloadPhotoResponse(_message.Message):
    __slots__ = ("content_type", "size_bytes", "chunk")
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    content_type: str
    size_bytes: int
    chunk: bytes
    def __init__(self, content_type: _Optional[str] = ..., size_bytes: _Optional[int] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class GetPhotoDownloadUrlRequest(_message.Message):
    __slots__ = ("name", "variant")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    name: str
    variant: PhotoVariant
    def __init__(self, name: _Optional[str] = ..., variant: _Optional[_Union[PhotoVariant, str]] = ...) -> None: ...

class GetPhotoDownloadUrlResponse(_message.Message):
    __slots__ = ("url", "expire_time")
    URL_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    url: str
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, url: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WatchPhotosRequest(_message.Message):
    __slots__ = ("names", "send_initial")
    NAMES_FIELD_NUMBER: _ClassVar[int]
    SEND_INITIAL_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    send_initial: bool
    def __init__(self, names: _Optional[_Iterable[str]] = ..., send_initial: bool = ...) -> None: ...

class WatchPhotosResponse(_message.Message):
    __slots__ = ("photo", "change_type", "event_time")
    PHOTO_FIELD_NUMBER: _ClassVar[int]
    CHANGE_TYPE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    photo: _photo_pb2.Photo
    change_type: _photo_pb2.PhotoChangeType
    event_time: _timestamp_pb2.Timestamp
    def __init__(self, photo: _Optional[_Union[_photo_pb2.Photo, _Mapping]] = ..., change_type: _Optional[_Union[_photo_pb2.PhotoChangeType, str]] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReindexPhotosRequest(_message.Message):
    __slots__ = ("all",)
    ALL_FIELD_NUMBER: _ClassVar[int]
    all: bool
    def __init__(self, all: bool = ...) -> None: ...

class ReindexPhotosResponse(_message.Message):
    __slots__ = ("names", "models")
    NAMES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ..., models: _Optional[_Iterable[str]] = ...) -> None: ...
