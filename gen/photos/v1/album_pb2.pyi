import datetime

from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Album(_message.Message):
    __slots__ = ("name", "owner", "title", "cover_photo", "photo_count", "create_time", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    COVER_PHOTO_FIELD_NUMBER: _ClassVar[int]
    PHOTO_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    owner: str
    title: str
    cover_photo: str
    photo_count: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., owner: _Optional[str] = ..., title: _Optional[str] = ..., cover_photo: _Optional[str] = ..., photo_count: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateAlbumRequest(_message.Message):
    __slots__ = ("album", "photos", "request_id")
    ALBUM_FIELD_NUMBER: _ClassVar[int]
    PHOTOS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    album: Album
    photos: _containers.RepeatedScalarFieldContainer[str]
    request_id: str
    def __init__(self, album: _Optional[_Union[Album, _Mapping]] = ..., photos: _Optional[_Iterable[str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateAlbumResponse(_message.Message):
    __slots__ = ("album",)
    ALBUM_FIELD_NUMBER: _ClassVar[int]
    album: Album
    def __init__(self, album: _Optional[_Union[Album, _Mapping]] = ...) -> None: ...

class GetAlbumRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetAlbumResponse(_message.Message):
    __slots__ = ("album",)
    ALBUM_FIELD_NUMBER: _ClassVar[int]
    album: Album
    def __init__(self, album: _Optional[_Union[Album, _Mapping]] = ...) -> None: ...

class ListAlbumsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAlbumsResponse(_message.Message):
    __slots__ = ("albums", "next_page_token")
    ALBUMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    albums: _containers.RepeatedCompositeFieldContainer[Album]
    next_page_token: str
    def __init__(self, albums: _Optional[_Iterable[_Union[Album, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateAlbumRequest(_message.Message):
    __slots__ = ("album", "update_mask")
    ALBUM_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    album: Album
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, album: _Optional[_Union[Album, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateAlbumResponse(_message.Message):
    __slots__ = ("album",)
    ALBUM_FIELD_NUMBER: _ClassVar[int]
    album: Album
    def __init__(self, album: _Optional[_Union[Album, _Mapping]] = ...) -> None: ...

class DeleteAlbumRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteAlbumResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AddAlbumPhotosRequest(_message.Message):
    __slots__ = ("album", "photos")
    ALBUM_FIELD_NUMBER: _ClassVar[int]
    PHOTOS_FIELD_NUMBER: _ClassVar[int]
    album: str
    photos: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, album: _Optional[str] = ..., photos: _Optional[_Iterable[str]] = ...) -> None: ...

class AddAlbumPhotosResponse(_message.Message):
    __slots__ = ("album",)
    ALBUM_FIELD_NUMBER: _ClassVar[int]
    album: Album
    def __init__(self, album: _Optional[_Union[Album, _Mapping]] = ...) -> None: ...

class RemoveAlbumPhotosRequest(_message.Message):
    __slots__ = ("album", "photos")
    ALBUM_FIELD_NUMBER: _ClassVar[int]
    PHOTOS_FIELD_NUMBER: _ClassVar[int]
    album: str
    photos: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, album: _Optional[str] = ..., photos: _Optional[_Iterable[str]] = ...) -> None: ...

class RemoveAlbumPhotosResponse(_message.Message):
    __slots__ = ("album",)
    ALBUM_FIELD_NUMBER: _ClassVar[int]
    album: Album
    def __init__(self, album: _Optional[_Union[Album, _Mapping]] = ...) -> None: ...
