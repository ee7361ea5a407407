import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from photos.v1 import photo_pb2 as _photo_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PhotoEvent(_message.Message):
    __slots__ = ("event_time", "uploaded", "reindex_requested", "status_changed", "changed", "text_requested", "dead_letter")
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    UPLOADED_FIELD_NUMBER: _ClassVar[int]
    REINDEX_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    STATUS_CHANGED_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    TEXT_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_FIELD_NUMBER: _ClassVar[int]
    event_time: _timestamp_pb2.Timestamp
    uploaded: PhotoUploadedEvent
    reindex_requested: PhotoReindexRequestedEvent
    status_changed: PhotoStatusChangedEvent
    changed: PhotoChangedEvent
    text_requested: PhotoTextRequestedEvent
    dead_letter: DeadLetter
    def __init__(self, event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., uploaded: _Optional[_Union[PhotoUploadedEvent, _Mapping]] = ..., reindex_requested: _Optional[_Union[PhotoReindexRequestedEvent, _Mapping]] = ..., status_changed: _Optional[_Union[PhotoStatusChangedEvent, _Mapping]] = ..., changed: _Optional[_Union[PhotoChangedEvent, _Mapping]] = ..., text_requested: _Optional[_Union[PhotoTextRequestedEvent, _Mapping]] = ..., dead_letter: _Optional[_Union[DeadLetter, _Mapping]] = ...) -> None: ...

class IndexingSubject(_message.Message):
    __slots__ = ("photo_id", "owner", "blob_key", "sha256", "content_type", "take_time", "camera_make", "camera_model", "filename", "model_copy_key")
    PHOTO_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    BLOB_KEY_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TAKE_TIME_FIELD_NUMBER: _ClassVar[int]
    CAMERA_MAKE_FIELD_NUMBER: _ClassVar[int]
    CAMERA_MODEL_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_COPY_KEY_FIELD_NUMBER: _ClassVar[int]
    photo_id: str
    owner: str
    blob_key: str
    sha256: str
    content_type: str
    take_time: _timestamp_pb2.Timestamp
    camera_make: str
    camera_model: str
    filename: str
    model_copy_key: str
    def __init__(self, photo_id: _Optional[str] = ..., owner: _Optional[str] = ..., blob_key: _Optional[str] = ..., sha256: _Optional[str] = ..., content_type: _Optional[str] = ..., take_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., camera_make: _Optional[str] = ..., camera_model: _Optional[str] = ..., filename: _Optional[str] = ..., model_copy_key: _Optional[str] = ...) -> None: ...

class PhotoUploadedEvent(_message.Message):
    __slots__ = ("subject", "attempts")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    subject: IndexingSubject
    attempts: int
    def __init__(self, subject: _Optional[_Union[IndexingSubject, _Mapping]] = ..., attempts: _Optional[int] = ...) -> None: ...

class PhotoReindexRequestedEvent(_message.Message):
    __slots__ = ("subject", "attempts")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    subject: IndexingSubject
    attempts: int
    def __init__(self, subject: _Optional[_Union[IndexingSubject, _Mapping]] = ..., attempts: _Optional[int] = ...) -> None: ...

class PhotoTextRequestedEvent(_message.Message):
    __slots__ = ("subject", "attempts")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    subject: IndexingSubject
    attempts: int
    def __init__(self, subject: _Optional[_Union[IndexingSubject, _Mapping]] = ..., attempts: _Optional[int] = ...) -> None: ...

class PhotoStatusChangedEvent(_message.Message):
    __slots__ = ("photo_id", "owner", "status", "reason", "attempts", "analysed", "labels", "ocr_text", "embedding_models", "clip_model", "text_state")
    PHOTO_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ANALYSED_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    OCR_TEXT_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODELS_FIELD_NUMBER: _ClassVar[int]
    CLIP_MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_STATE_FIELD_NUMBER: _ClassVar[int]
    photo_id: str
    owner: str
    status: _photo_pb2.PhotoStatus
    reason: str
    attempts: int
    analysed: bool
    labels: _containers.RepeatedCompositeFieldContainer[_photo_pb2.Label]
    ocr_text: str
    embedding_models: _containers.RepeatedScalarFieldContainer[str]
    clip_model: str
    text_state: _photo_pb2.StageState
    def __init__(self, photo_id: _Optional[str] = ..., owner: _Optional[str] = ..., status: _Optional[_Union[_photo_pb2.PhotoStatus, str]] = ..., reason: _Optional[str] = ..., attempts: _Optional[int] = ..., analysed: bool = ..., labels: _Optional[_Iterable[_Union[_photo_pb2.Label, _Mapping]]] = ..., ocr_text: _Optional[str] = ..., embedding_models: _Optional[_Iterable[str]] = ..., clip_model: _Optional[str] = ..., text_state: _Optional[_Union[_photo_pb2.StageState, str]] = ...) -> None: ...

class PhotoChangedEvent(_message.Message):
    __slots__ = ("photo", "change_type")
    PHOTO_FIELD_NUMBER: _ClassVar[int]
    CHANGE_TYPE_FIELD_NUMBER: _ClassVar[int]
    photo: _photo_pb2.Photo
    change_type: _photo_pb2.PhotoChangeType
    def __init__(self, photo: _Optional[_Union[_photo_pb2.Photo, _Mapping]] = ..., change_type: _Optional[_Union[_photo_pb2.PhotoChangeType, str]] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("reason", "source_topic", "source_partition", "source_offset", "original")
    REASON_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TOPIC_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PARTITION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_FIELD_NUMBER: _ClassVar[int]
    reason: str
    source_topic: str
    source_partition: int
    source_offset: int
    original: bytes
    def __init__(self, reason: _Optional[str] = ..., source_topic: _Optional[str] = ..., source_partition: _Optional[int] = ..., source_offset: _Optional[int] = ..., original: _Optional[bytes] = ...) -> None: ...
