import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PhotoStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PHOTO_STATUS_UNSPECIFIED: _ClassVar[PhotoStatus]
    PHOTO_STATUS_UPLOADED: _ClassVar[PhotoStatus]
    PHOTO_STATUS_INDEXED: _ClassVar[PhotoStatus]
    PHOTO_STATUS_FAILED: _ClassVar[PhotoStatus]

class StageState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_STATE_UNSPECIFIED: _ClassVar[StageState]
    STAGE_STATE_PENDING: _ClassVar[StageState]
    STAGE_STATE_DONE: _ClassVar[StageState]
    STAGE_STATE_FAILED: _ClassVar[StageState]
    STAGE_STATE_SKIPPED: _ClassVar[StageState]

class PhotoChangeType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PHOTO_CHANGE_TYPE_UNSPECIFIED: _ClassVar[PhotoChangeType]
    PHOTO_CHANGE_TYPE_CREATED: _ClassVar[PhotoChangeType]
    PHOTO_CHANGE_TYPE_UPDATED: _ClassVar[PhotoChangeType]
    PHOTO_CHANGE_TYPE_DELETED: _ClassVar[PhotoChangeType]
PHOTO_STATUS_UNSPECIFIED: PhotoStatus
PHOTO_STATUS_UPLOADED: PhotoStatus
PHOTO_STATUS_INDEXED: PhotoStatus
PHOTO_STATUS_FAILED: PhotoStatus
STAGE_STATE_UNSPECIFIED: StageState
STAGE_STATE_PENDING: StageState
STAGE_STATE_DONE: StageState
STAGE_STATE_FAILED: StageState
STAGE_STATE_SKIPPED: StageState
PHOTO_CHANGE_TYPE_UNSPECIFIED: PhotoChangeType
PHOTO_CHANGE_TYPE_CREATED: PhotoChangeType
PHOTO_CHANGE_TYPE_UPDATED: PhotoChangeType
PHOTO_CHANGE_TYPE_DELETED: PhotoChangeType

class GeoPoint(_message.Message):
    __slots__ = ("latitude", "longitude", "altitude")
    LATITUDE_FIELD_NUMBER: _ClassVar[int]
    LONGITUDE_FIELD_NUMBER: _ClassVar[int]
    ALTITUDE_FIELD_NUMBER: _ClassVar[int]
    latitude: float
    longitude: float
    altitude: float
    def __init__(self, latitude: _Optional[float] = ..., longitude: _Optional[float] = ..., altitude: _Optional[float] = ...) -> None: ...

class Place(_message.Message):
    __slots__ = ("city", "region", "country", "country_code")
    CITY_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_CODE_FIELD_NUMBER: _ClassVar[int]
    city: str
    region: str
    country: str
    country_code: str
    def __init__(self, city: _Optional[str] = ..., region: _Optional[str] = ..., country: _Optional[str] = ..., country_code: _Optional[str] = ...) -> None: ...

class Label(_message.Message):
    __slots__ = ("text", "score")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    text: str
    score: float
    def __init__(self, text: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class Photo(_message.Message):
    __slots__ = ("name", "owner", "sha256", "content_type", "size_bytes", "width", "height", "take_time", "camera_make", "camera_model", "location", "create_time", "update_time", "status", "status_reason", "filename", "index_attempts", "labels", "ocr_text", "embedding_models", "text_state", "text_state_reason", "place", "favorite", "delete_time", "purge_time", "albums", "has_preview")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    TAKE_TIME_FIELD_NUMBER: _ClassVar[int]
    CAMERA_MAKE_FIELD_NUMBER: _ClassVar[int]
    CAMERA_MODEL_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_REASON_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    INDEX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    OCR_TEXT_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODELS_FIELD_NUMBER: _ClassVar[int]
    TEXT_STATE_FIELD_NUMBER: _ClassVar[int]
    TEXT_STATE_REASON_FIELD_NUMBER: _ClassVar[int]
    PLACE_FIELD_NUMBER: _ClassVar[int]
    FAVORITE_FIELD_NUMBER: _ClassVar[int]
    DELETE_TIME_FIELD_NUMBER: _ClassVar[int]
    PURGE_TIME_FIELD_NUMBER: _ClassVar[int]
    ALBUMS_FIELD_NUMBER: _ClassVar[int]
    HAS_PREVIEW_FIELD_NUMBER: _ClassVar[int]
    name: str
    owner: str
    sha256: str
    content_type: str
    size_bytes: int
    width: int
    height: int
    take_time: _timestamp_pb2.Timestamp
    camera_make: str
    camera_model: str
    location: GeoPoint
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    status: PhotoStatus
    status_reason: str
    filename: str
    index_attempts: int
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    ocr_text: str
    embedding_models: _containers.RepeatedScalarFieldContainer[str]
    text_state: StageState
    text_state_reason: str
    place: Place
    favorite: bool
    delete_time: _timestamp_pb2.Timestamp
    purge_time: _timestamp_pb2.Timestamp
    albums: _containers.RepeatedScalarFieldContainer[str]
    has_preview: bool
    def __init__(self, name: _Optional[str] = ..., owner: _Optional[str] = ..., sha256: _Optional[str] = ..., content_type: _Optional[str] = ..., size_bytes: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., take_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., camera_make: _Optional[str] = ..., camera_model: _Optional[str] = ..., location: _Optional[_Union[GeoPoint, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[_Union[PhotoStatus, str]] = ..., status_reason: _Optional[str] = ..., filename: _Optional[str] = ..., index_attempts: _Optional[int] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., ocr_text: _Optional[str] = ..., embedding_models: _Optional[_Iterable[str]] = ..., text_state: _Optional[_Union[StageState, str]] = ..., text_state_reason: _Optional[str] = ..., place: _Optional[_Union[Place, _Mapping]] = ..., favorite: bool = ..., delete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., purge_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., albums: _Optional[_Iterable[str]] = ..., has_preview: bool = ...) -> None: ...
