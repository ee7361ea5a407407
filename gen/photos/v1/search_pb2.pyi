import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from photos.v1 import photo_pb2 as _photo_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchFilter(_message.Message):
    __slots__ = ("start_time", "end_time", "camera_make", "camera_model", "place", "album", "favorite")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    CAMERA_MAKE_FIELD_NUMBER: _ClassVar[int]
    CAMERA_MODEL_FIELD_NUMBER: _ClassVar[int]
    PLACE_FIELD_NUMBER: _ClassVar[int]
    ALBUM_FIELD_NUMBER: _ClassVar[int]
    FAVORITE_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    camera_make: str
    camera_model: str
    place: str
    album: str
    favorite: bool
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., camera_make: _Optional[str] = ..., camera_model: _Optional[str] = ..., place: _Optional[str] = ..., album: _Optional[str] = ..., favorite: bool = ...) -> None: ...

class SignalScores(_message.Message):
    __slots__ = ("clip", "text", "keyword")
    CLIP_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_FIELD_NUMBER: _ClassVar[int]
    clip: float
    text: float
    keyword: float
    def __init__(self, clip: _Optional[float] = ..., text: _Optional[float] = ..., keyword: _Optional[float] = ...) -> None: ...

class SearchHit(_message.Message):
    __slots__ = ("photo", "score", "signals", "matched_terms")
    PHOTO_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SIGNALS_FIELD_NUMBER: _ClassVar[int]
    MATCHED_TERMS_FIELD_NUMBER: _ClassVar[int]
    photo: _photo_pb2.Photo
    score: float
    signals: SignalScores
    matched_terms: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, photo: _Optional[_Union[_photo_pb2.Photo, _Mapping]] = ..., score: _Optional[float] = ..., signals: _Optional[_Union[SignalScores, _Mapping]] = ..., matched_terms: _Optional[_Iterable[str]] = ...) -> None: ...

class SearchPhotosRequest(_message.Message):
    __slots__ = ("query", "filter", "page_size", "min_score", "page_token")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    query: str
    filter: SearchFilter
    page_size: int
    min_score: float
    page_token: str
    def __init__(self, query: _Optional[str] = ..., filter: _Optional[_Union[SearchFilter, _Mapping]] = ..., page_size: _Optional[int] = ..., min_score: _Optional[float] = ..., page_token: _Optional[str] = ...) -> None: ...

class SearchPhotosResponse(_message.Message):
    __slots__ = ("hits", "next_page_token", "models", "query_filter")
    HITS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    QUERY_FILTER_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    next_page_token: str
    models: _containers.RepeatedScalarFieldContainer[str]
    query_filter: SearchFilter
    def __init__(self, hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., models: _Optional[_Iterable[str]] = ..., query_filter: _Optional[_Union[SearchFilter, _Mapping]] = ...) -> None: ...

class FindSimilarRequest(_message.Message):
    __slots__ = ("name", "image", "filter", "page_size", "min_score", "page_token")
    NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    image: bytes
    filter: SearchFilter
    page_size: int
    min_score: float
    page_token: str
    def __init__(self, name: _Optional[str] = ..., image: _Optional[bytes] = ..., filter: _Optional[_Union[SearchFilter, _Mapping]] = ..., page_size: _Optional[int] = ..., min_score: _Optional[float] = ..., page_token: _Optional[str] = ...) -> None: ...

class FindSimilarResponse(_message.Message):
    __slots__ = ("hits", "next_page_token", "models")
    HITS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    next_page_token: str
    models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., models: _Optional[_Iterable[str]] = ...) -> None: ...
