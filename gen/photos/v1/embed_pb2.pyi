from photos.v1 import photo_pb2 as _photo_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TextEncoder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TEXT_ENCODER_UNSPECIFIED: _ClassVar[TextEncoder]
    TEXT_ENCODER_CLIP: _ClassVar[TextEncoder]
    TEXT_ENCODER_SENTENCE: _ClassVar[TextEncoder]

class ModelRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_ROLE_UNSPECIFIED: _ClassVar[ModelRole]
    MODEL_ROLE_CLIP: _ClassVar[ModelRole]
    MODEL_ROLE_LABELS: _ClassVar[ModelRole]
    MODEL_ROLE_OCR: _ClassVar[ModelRole]
    MODEL_ROLE_SENTENCE: _ClassVar[ModelRole]
TEXT_ENCODER_UNSPECIFIED: TextEncoder
TEXT_ENCODER_CLIP: TextEncoder
TEXT_ENCODER_SENTENCE: TextEncoder
MODEL_ROLE_UNSPECIFIED: ModelRole
MODEL_ROLE_CLIP: ModelRole
MODEL_ROLE_LABELS: ModelRole
MODEL_ROLE_OCR: ModelRole
MODEL_ROLE_SENTENCE: ModelRole

class Embedding(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class EmbedTextRequest(_message.Message):
    __slots__ = ("texts", "encoder")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    ENCODER_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    encoder: TextEncoder
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., encoder: _Optional[_Union[TextEncoder, str]] = ...) -> None: ...

class EmbedTextResponse(_message.Message):
    __slots__ = ("embeddings", "model")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    model: str
    def __init__(self, embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., model: _Optional[str] = ...) -> None: ...

class EmbedImagesRequest(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, images: _Optional[_Iterable[bytes]] = ...) -> None: ...

class EmbedImagesResponse(_message.Message):
    __slots__ = ("embeddings", "model")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    model: str
    def __init__(self, embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., model: _Optional[str] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("role", "model", "ready", "reason", "dimension", "image_size")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    role: ModelRole
    model: str
    ready: bool
    reason: str
    dimension: int
    image_size: int
    def __init__(self, role: _Optional[_Union[ModelRole, str]] = ..., model: _Optional[str] = ..., ready: bool = ..., reason: _Optional[str] = ..., dimension: _Optional[int] = ..., image_size: _Optional[int] = ...) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("models", "device")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelStatus]
    device: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelStatus, _Mapping]]] = ..., device: _Optional[str] = ...) -> None: ...

class AnalyzeImagesRequest(_message.Message):
    __slots__ = ("images", "skip_text")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    SKIP_TEXT_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    skip_text: bool
    def __init__(self, images: _Optional[_Iterable[bytes]] = ..., skip_text: bool = ...) -> None: ...

class ImageAnalysis(_message.Message):
    __slots__ = ("labels", "ocr_text", "text_embedding")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    OCR_TEXT_FIELD_NUMBER: _ClassVar[int]
    TEXT_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[_photo_pb2.Label]
    ocr_text: str
    text_embedding: Embedding
    def __init__(self, labels: _Optional[_Iterable[_Union[_photo_pb2.Label, _Mapping]]] = ..., ocr_text: _Optional[str] = ..., text_embedding: _Optional[_Union[Embedding, _Mapping]] = ...) -> None: ...

class AnalyzeImagesResponse(_message.Message):
    __slots__ = ("analyses", "model")
    ANALYSES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    analyses: _containers.RepeatedCompositeFieldContainer[ImageAnalysis]
    model: str
    def __init__(self, analyses: _Optional[_Iterable[_Union[ImageAnalysis, _Mapping]]] = ..., model: _Optional[str] = ...) -> None: ...
