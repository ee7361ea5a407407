"""The small interfaces every backend implements.

Each is shaped after the scale-out engine that will implement it next (S3, MongoDB,
Kafka, Weaviate); the embedded twins live beside this file.
"""
from __future__ import annotations

import abc
import dataclasses
import datetime as dt
from typing import Any, BinaryIO, Iterator, Sequence

STATUS_UPLOADED = "uploaded"
STATUS_INDEXED = "indexed"
STATUS_FAILED = "failed"

# Vector spaces: one vector per photo in each.
SPACE_CLIP = "clip"  # CLIP image embedding
SPACE_TEXT = "text"  # sentence embedding of the photo's labels and OCR text

TOPIC_PHOTO_UPLOADED = "photos.uploaded"
TOPIC_PHOTO_STATUS = "photos.status"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclasses.dataclass
class User:
    id: str
    name: str
    created_at: dt.datetime


@dataclasses.dataclass
class PhotoRecord:
    id: str
    owner: str
    filename: str
    sha256: str
    content_type: str
    size_bytes: int
    width: int
    height: int
    blob_key: str
    thumbnail_key: str
    created_at: dt.datetime
    updated_at: dt.datetime
    taken_at: dt.datetime | None = None
    camera_make: str = ""
    camera_model: str = ""
    latitude: float | None = None
    longitude: float | None = None
    altitude: float | None = None
    status: str = STATUS_UPLOADED
    status_reason: str = ""
    embedding_model: str = ""
    index_attempts: int = 0
    # (ImageNet label, probability), best first.
    labels: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    ocr_text: str = ""
    # Every model with a vector of this photo.
    embedding_models: list[str] = dataclasses.field(default_factory=list)
    # Outbox flag: the upload event has been written to the event log.
    published: bool = False

    @property
    def sort_time(self) -> dt.datetime:
        """Time used for ordering and date filters: taken, else uploaded."""
        return self.taken_at or self.created_at


@dataclasses.dataclass
class Page:
    records: list[PhotoRecord]
    next_cursor: str  # empty on the last page
    total: int


class DuplicateRequestError(Exception):
    """Raised by insert_photo when a concurrent insert won; carries the existing record."""


class BlobStore(abc.ABC):
    """Objects by key (S3-like): whole writes, streamed reads."""

    @abc.abstractmethod
    def put_file(self, key: str, path: str, content_type: str) -> None:
        """Stores the file at `path` under `key`, atomically (all or nothing)."""

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes, content_type: str) -> None: ...

    @abc.abstractmethod
    def open(self, key: str) -> BinaryIO:
        """Opens the object for reading; raises KeyError when missing."""

    @abc.abstractmethod
    def size(self, key: str) -> int:
        """Raises KeyError when missing."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Idempotent."""

    def read_bytes(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def iter_chunks(self, key: str, chunk_size: int) -> Iterator[bytes]:
        with self.open(key) as f:
            while chunk := f.read(chunk_size):
                yield chunk


class MetadataStore(abc.ABC):
    """Users and photo documents (MongoDB-like: unique indexes, atomic single-document updates)."""

    # Users and API keys
    @abc.abstractmethod
    def create_user(self, name: str, key_hash: str) -> User:
        """Raises ValueError if the name is taken."""

    @abc.abstractmethod
    def add_api_key(self, user_id: str, key_hash: str) -> None: ...

    @abc.abstractmethod
    def user_by_key_hash(self, key_hash: str) -> User | None: ...

    @abc.abstractmethod
    def user_by_name(self, name: str) -> User | None: ...

    # Photos
    @abc.abstractmethod
    def insert_photo(self, record: PhotoRecord, request_id: str) -> tuple[PhotoRecord, bool]:
        """Inserts unless the owner already has these bytes (same sha256) or this request_id.

        Returns (stored record, created). Unique on (owner, sha256) and (owner, request_id).
        """

    @abc.abstractmethod
    def photo_by_request(self, owner: str, request_id: str) -> PhotoRecord | None: ...

    @abc.abstractmethod
    def photo_by_sha256(self, owner: str, sha256: str) -> PhotoRecord | None: ...

    @abc.abstractmethod
    def get_photo(self, photo_id: str, owner: str | None = None) -> PhotoRecord | None:
        """With owner set, a photo of another owner is None."""

    @abc.abstractmethod
    def get_photos(self, owner: str, photo_ids: Sequence[str]) -> list[PhotoRecord]:
        """In the order asked; missing or foreign ones left out."""

    @abc.abstractmethod
    def list_photos(
        self,
        owner: str,
        *,
        status: str | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        page_size: int = 50,
        cursor: str = "",
    ) -> Page:
        """Newest first by sort_time then id; cursor is the opaque next_cursor of the page before."""

    @abc.abstractmethod
    def update_status(
        self,
        photo_id: str,
        status: str,
        *,
        reason: str = "",
        embedding_model: str | None = None,
        attempts: int | None = None,
        labels: Sequence[tuple[str, float]] | None = None,
        ocr_text: str | None = None,
        embedding_models: Sequence[str] | None = None,
    ) -> PhotoRecord | None:
        """Sets status fields and updated_at (None leaves a field as is); None when the photo is gone."""

    @abc.abstractmethod
    def keyword_search(self, owner: str, terms: Sequence[str], limit: int = 200
                       ) -> list[tuple[str, list[str]]]:
        """(photo_id, terms found) of the owner's photos whose filename, label names or OCR text
        contain any of the lower-case `terms` as a word; most terms found first."""

    @abc.abstractmethod
    def mark_published(self, photo_id: str) -> None: ...

    @abc.abstractmethod
    def unpublished_photos(self, limit: int = 100) -> list[PhotoRecord]: ...

    @abc.abstractmethod
    def delete_photo(self, photo_id: str) -> PhotoRecord | None:
        """Removes the document and its request ids; returns what was removed."""


@dataclasses.dataclass
class Event:
    topic: str
    offset: int
    key: str
    value: dict[str, Any]
    timestamp: dt.datetime


class EventProducer(abc.ABC):
    @abc.abstractmethod
    def send(self, topic: str, key: str, value: dict[str, Any]) -> int:
        """Appends durably (returns after the write is on disk / acknowledged); returns the offset."""

    def close(self) -> None:
        pass


class EventConsumer(abc.ABC):
    """A member of a consumer group (Kafka-like). Delivery is at least once: records after the
    group's committed position come again after a restart until they are committed."""

    @abc.abstractmethod
    def poll(self, max_records: int = 100, timeout_s: float = 1.0) -> list[Event]:
        """Records after the last polled position, waiting up to timeout_s for any."""

    @abc.abstractmethod
    def commit(self, events: Sequence[Event]) -> None:
        """Commits the position after the highest offset per topic in `events`."""

    @abc.abstractmethod
    def lag(self) -> int:
        """Records in the subscribed topics after the group's committed position."""

    @abc.abstractmethod
    def rewind_to_committed(self) -> None:
        """Next poll starts again after the committed position (redelivers uncommitted records)."""

    def close(self) -> None:
        pass


class EventLog(abc.ABC):
    @abc.abstractmethod
    def producer(self) -> EventProducer: ...

    @abc.abstractmethod
    def consumer(self, group: str, topics: Sequence[str]) -> EventConsumer: ...

    @abc.abstractmethod
    def prune(self, older_than: dt.datetime) -> int:
        """Drops records written before `older_than` that every known consumer group has committed
        (Kafka does this itself with retention.ms); returns how many went."""


@dataclasses.dataclass
class VectorFilter:
    owner: str
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    camera_make: str = ""
    camera_model: str = ""


@dataclasses.dataclass
class VectorObject:
    photo_id: str
    owner: str
    model: str
    vector: Any  # numpy float32 array, L2-normalised
    taken_at: dt.datetime | None = None
    camera_make: str = ""
    camera_model: str = ""
    space: str = SPACE_CLIP


class VectorStore(abc.ABC):
    """Vectors with filterable properties (Weaviate-like, named vectors): one vector per photo id
    and space."""

    @abc.abstractmethod
    def upsert(self, obj: VectorObject) -> None:
        """Creates or replaces the vector of this photo_id in obj.space (idempotent)."""

    def upsert_many(self, objs: Sequence[VectorObject]) -> None:
        """Batch import; engines override this with their bulk path."""
        for obj in objs:
            self.upsert(obj)

    @abc.abstractmethod
    def delete(self, photo_id: str) -> None:
        """Removes the photo's vectors in every space; idempotent."""

    @abc.abstractmethod
    def get(self, photo_id: str, space: str = SPACE_CLIP) -> VectorObject | None: ...

    @abc.abstractmethod
    def search(
        self, vector: Any, model: str, flt: VectorFilter, limit: int, min_score: float = -1.0
    ) -> list[tuple[str, float]]:
        """(photo_id, cosine score) best first, among vectors of `model` matching the filter."""

    @abc.abstractmethod
    def count(self, model: str | None = None) -> int: ...
