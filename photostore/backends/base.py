"""The small interfaces every backend implements.

Each is shaped after the scale-out engine that will implement it next (S3, MongoDB,
Kafka, Weaviate); the embedded twins live beside this file.
"""
from __future__ import annotations

import abc
import collections
import re
import dataclasses
import errno
import datetime as dt
from typing import Any, Callable, Iterable, Iterator, Sequence

STATUS_UPLOADED = "uploaded"
STATUS_INDEXED = "indexed"
STATUS_FAILED = "failed"

# Where reading a searchable photo's text (OCR, the later stage) stands; "" for photos indexed
# before the stage existed (their text was read with their indexing).
TEXT_PENDING = "pending"
TEXT_DONE = "done"
TEXT_FAILED = "failed"
TEXT_SKIPPED = "skipped"

# Vector spaces: one vector per photo in each.
SPACE_CLIP = "clip"  # CLIP image embedding
SPACE_TEXT = "text"  # sentence embedding of the photo's labels and OCR text

# Event topics (proto/photos/v1/events.proto says what each carries).
TOPIC_PHOTO_UPLOADED = "photos.uploaded"
TOPIC_PHOTO_UPLOADED_DLQ = "photos.uploaded.dlq"
TOPIC_PHOTO_TEXT = "photos.text"
TOPIC_PHOTO_TEXT_DLQ = "photos.text.dlq"
TOPIC_PHOTO_STATUS = "photos.status"
TOPIC_PHOTO_CHANGES = "photos.changes"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclasses.dataclass
class User:
    id: str
    name: str
    created_at: dt.datetime


@dataclasses.dataclass
class SessionRecord:
    """A live browser session (its token is never stored, only its sha256)."""
    user: User
    created_at: dt.datetime
    last_seen: dt.datetime
    # When it ends unless used before: min(last_seen + idle, created_at + max age).
    expire_time: dt.datetime


# Session lifetimes (the defaults of settings.session_idle_seconds / session_max_age_seconds), and
# how often a session's last_seen is written at most (not on every request).
SESSION_IDLE_SECONDS = 12 * 3600
SESSION_MAX_AGE_SECONDS = 7 * 24 * 3600
SESSION_TOUCH_SECONDS = 60


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
    text_state: str = ""  # TEXT_*
    text_state_reason: str = ""
    # Outbox flag: the upload event has been written to the event log.
    published: bool = False
    # When ReindexPhotos last queued it, and for which models: later calls for those models
    # leave it queued once for a while (ingest_svc.service.REINDEX_IN_FLIGHT_S).
    reindex_queued_at: dt.datetime | None = None
    reindex_queued_for: list[str] = dataclasses.field(default_factory=list)
    # The preview rendition (renditions/...), "" when none was made (photos stored before).
    preview_key: str = ""
    # Reverse-geocoded place of the GPS coordinates; "" when none.
    place_city: str = ""
    place_region: str = ""
    place_country: str = ""
    place_country_code: str = ""
    favorite: bool = False
    # Set while in the trash; purged after the retention.
    deleted_at: dt.datetime | None = None
    # Ids of the albums it is in.
    album_ids: list[str] = dataclasses.field(default_factory=list)
    # Perceptual hash (imagehash.phash, 64 bits as 16 hex digits); "" when not computed.
    phash: str = ""

    @property
    def model_copy_key(self) -> str:
        """The copy of the original that the image models read (made at upload)."""
        return f"copies/{self.owner}/{self.id}.jpg"

    @property
    def sort_time(self) -> dt.datetime:
        """Time used for ordering and date filters: taken, else uploaded."""
        return self.taken_at or self.created_at


@dataclasses.dataclass
class PhotoFilter:
    """What list_photos (and summarize) keep besides the owner; empty fields mean any."""
    status: str | None = None
    start: dt.datetime | None = None  # sort_time >= start
    end: dt.datetime | None = None  # sort_time < end
    camera_make: str = ""  # case-insensitive exact
    camera_model: str = ""
    place: str = ""  # case-insensitive exact match of city, region, country or country code
    album_id: str = ""
    favorite: bool = False  # only favourites
    # False: photos not in the trash; True: only those in the trash (ordered by deleted_at, newest first).
    deleted: bool = False


def photo_filter(filter: PhotoFilter | None, *, status: str | None = None, start: dt.datetime | None = None,
                 end: dt.datetime | None = None) -> PhotoFilter:
    """list_photos' filter with its status/start/end shorthands applied (those given win)."""
    shorthands = {name: value for name, value in (("status", status), ("start", start), ("end", end))
                  if value is not None}
    return dataclasses.replace(filter or PhotoFilter(), **shorthands)


@dataclasses.dataclass
class PhotoFacts:
    """The light view of a photo that browsing summaries and duplicate finding read."""
    id: str
    sort_time: dt.datetime
    created_at: dt.datetime
    size_bytes: int
    width: int
    height: int
    camera_make: str = ""
    camera_model: str = ""
    place_city: str = ""
    place_region: str = ""
    place_country: str = ""
    place_country_code: str = ""
    phash: str = ""


@dataclasses.dataclass
class PhotoSummary:
    """Counts of an owner's matching photos, for browsing without a query."""
    # (year, month, count), newest first (by sort_time, UTC).
    months: list[tuple[int, int, int]]
    # (camera_make, camera_model, count), most photos first, then by name; photos without a camera left out.
    cameras: list[tuple[str, str, int]]
    # ((city, region, country, country_code), count), most photos first, then by name; photos
    # without a place left out.
    places: list[tuple[tuple[str, str, str, str], int]]
    total: int

    @classmethod
    def of(cls, facts: Sequence[PhotoFacts]) -> PhotoSummary:
        return cls.counted(
            collections.Counter((f.sort_time.year, f.sort_time.month) for f in facts),
            collections.Counter((f.camera_make, f.camera_model) for f in facts if f.camera_make or f.camera_model),
            collections.Counter((f.place_city, f.place_region, f.place_country, f.place_country_code)
                                for f in facts if f.place_city or f.place_country_code))

    @classmethod
    def counted(cls, months: collections.Counter, cameras: collections.Counter,
                places: collections.Counter) -> PhotoSummary:
        """From counts keyed by (year, month), (make, model) and (city, region, country, code)."""
        return cls(months=[(y, m, n) for (y, m), n in sorted(months.items(), reverse=True)],
                   cameras=[(make, model, n) for (make, model), n in _most_first(cameras)],
                   places=list(_most_first(places)), total=sum(months.values()))


def _most_first(counts: collections.Counter) -> list:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


@dataclasses.dataclass
class AlbumRecord:
    id: str
    owner: str
    title: str
    created_at: dt.datetime
    updated_at: dt.datetime
    cover_photo_id: str = ""
    # Photos in it that are not in the trash (filled in by reads).
    photo_count: int = 0


@dataclasses.dataclass
class Page:
    records: list[PhotoRecord]
    # Sort key (sort_time, id) of the last record when more follow, else None; the API layer
    # turns it into an opaque page token (photostore/pagination.py).
    next_after: tuple[dt.datetime, str] | None
    # Records matching the filter across all pages; None when the backend was not asked to count.
    total: int | None = None


class BackendUnavailableError(Exception):
    """An engine could not be reached or failed transiently: worth another try later. Services
    answer UNAVAILABLE for it; workers put their batch back and retry after a pause."""


class MetadataUnavailableError(BackendUnavailableError):
    """The metadata or users store could not be reached."""


class StorageFullError(BackendUnavailableError):
    """An engine's disk (or quota) is full: a retry helps only once space is freed."""


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


# Blobs


class BlobError(Exception):
    """Base of the errors a BlobStore raises; callers never see a filesystem or S3 type."""


class BlobNotFoundError(BlobError, KeyError):
    """No object under this key (deleted, or never written)."""


class BlobUnavailableError(BlobError, BackendUnavailableError):
    """The store could not be reached or failed transiently: worth another try later."""


class BlobStorageFullError(BlobUnavailableError, StorageFullError):
    """The blob store's disk is full."""


class InvalidBlobKeyError(BlobError, ValueError):
    """The key is not acceptable to the store (escapes its root, empty, ...)."""


class BlobReader(abc.ABC):
    """An open object: its size and type, and its bytes as a stream."""

    size: int
    content_type: str

    @abc.abstractmethod
    def read(self, n: int = -1) -> bytes: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def chunks(self, chunk_size: int) -> Iterator[bytes]:
        while chunk := self.read(chunk_size):
            yield chunk


class BlobStore(abc.ABC):
    """Objects by key (S3-like): whole writes, streamed reads. Every method raises only the
    BlobError types above."""

    @abc.abstractmethod
    def put_file(self, key: str, path: str, content_type: str) -> None:
        """Stores the file at `path` under `key`, atomically (all or nothing); large files go in parts."""

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes, content_type: str) -> None: ...

    @abc.abstractmethod
    def open(self, key: str) -> BlobReader:
        """One request: size, type and a stream of the bytes. Raises BlobNotFoundError."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Idempotent."""

    def presigned_url(self, key: str, expires_s: int, *, filename: str = "") -> str | None:
        """A URL the browser can GET the object from directly, valid for expires_s; None when the
        store has no such thing (local disk): the bytes then go through the services."""
        return None

    def read_bytes(self, key: str) -> bytes:
        with self.open(key) as reader:
            return reader.read()

    def describe(self) -> str:
        """Backend and address, for status output."""
        return type(self).__name__

    def close(self) -> None:
        pass


# Users and photo metadata


class UserStore(abc.ABC):
    """Users and their API keys (hashes only). Owned by the ingest service."""

    @abc.abstractmethod
    def create_user(self, name: str, key_hash: str) -> User:
        """Raises ValueError if the name is taken."""

    @abc.abstractmethod
    def add_api_key(self, user_id: str, key_hash: str) -> None:
        """Idempotent."""

    @abc.abstractmethod
    def replace_api_keys(self, user_id: str, key_hash: str) -> int:
        """Makes key_hash the user's only API key (its other keys are revoked) and ends every
        session of the user, since a session was signed in with a key that may be the one being
        replaced; returns how many sessions ended. Raises ValueError for an unknown user or a
        hash that belongs to another user (then nothing changes)."""

    @abc.abstractmethod
    def user_by_key_hash(self, key_hash: str) -> User | None: ...

    @abc.abstractmethod
    def user_by_name(self, name: str) -> User | None: ...

    # Browser sessions: a session token is a bearer credential of its user (not of the key it was
    # made with). The implementations' constructors take the lifetimes.
    session_idle_s: float = SESSION_IDLE_SECONDS
    session_max_age_s: float = SESSION_MAX_AGE_SECONDS

    def session_expiry(self, created_at: dt.datetime, last_seen: dt.datetime) -> dt.datetime:
        return min(last_seen + dt.timedelta(seconds=self.session_idle_s),
                   created_at + dt.timedelta(seconds=self.session_max_age_s))

    @abc.abstractmethod
    def create_session(self, user_id: str, token_hash: str, *,
                       now: dt.datetime | None = None) -> SessionRecord:
        """A new session of the user under the token's hash; expired sessions are pruned."""

    @abc.abstractmethod
    def session_by_token_hash(self, token_hash: str, *,
                              now: dt.datetime | None = None) -> SessionRecord | None:
        """The live session (its last_seen written when SESSION_TOUCH_SECONDS old), or None; an
        expired one is deleted."""

    @abc.abstractmethod
    def delete_session(self, token_hash: str) -> bool:
        """Ends a session; False when there was none."""

    def describe(self) -> str:
        """Backend and address, for status output."""
        return type(self).__name__

    def close(self) -> None:
        pass


class MetadataStore(abc.ABC):
    """Photo documents (MongoDB-like: unique indexes on (owner, sha256) and (owner, request_id))."""

    @abc.abstractmethod
    def insert_photo(self, record: PhotoRecord, request_id: str) -> tuple[PhotoRecord, bool]:
        """Inserts unless the owner already has these bytes (same sha256) or this request_id.

        Returns (stored record, created). Atomic: a concurrent insert of the same bytes or request
        id yields one record, and the request id always points at the stored one.
        """

    def insert_new_photos(self, records: Sequence[PhotoRecord]) -> None:
        """Bulk load of records known to be new (benchmarks, migrations)."""
        for record in records:
            self.insert_photo(record, "")

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
        filter: PhotoFilter | None = None,
        status: str | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        page_size: int = 50,
        after: tuple[dt.datetime, str] | None = None,
        count_total: bool = False,
    ) -> Page:
        """Newest first by (sort_time, id) (the trash, filter.deleted: by (deleted_at, id));
        `after` is the next_after of the page before. status/start/end are shorthands for the
        filter's fields (set one or the other)."""

    @abc.abstractmethod
    def photo_facts(self, owner: str, filter: PhotoFilter | None = None) -> list[PhotoFacts]:
        """The few fields of every matching photo that browsing and duplicate finding need, in
        no particular order (one light query, not pages of whole records)."""

    def summarize_photos(self, owner: str, filter: PhotoFilter | None = None) -> PhotoSummary:
        """Counts of the matching photos by month, camera and place (stores override it with an
        aggregation that leaves the rows in the engine)."""
        return PhotoSummary.of(self.photo_facts(owner, filter))

    @abc.abstractmethod
    def update_photo(self, photo_id: str, **changes: Any) -> PhotoRecord | None:
        """Sets the given PhotoRecord fields (not id or owner) and updated_at; None when the
        photo is gone."""

    @abc.abstractmethod
    def expired_trash(self, deleted_before: dt.datetime, limit: int = 100) -> list[PhotoRecord]:
        """Photos of any owner in the trash since before `deleted_before`, oldest first."""

    # Albums: a photo's albums are its album_ids; an album's photo_count counts its photos that
    # are not in the trash.

    @abc.abstractmethod
    def create_album(self, album: AlbumRecord, photo_ids: Sequence[str] = (), request_id: str = "") -> tuple[AlbumRecord, bool]:
        """Inserts the album with these photos (of its owner; others are ignored) unless the owner
        already made one with this request_id. Returns (stored album, created)."""

    @abc.abstractmethod
    def get_album(self, album_id: str, owner: str | None = None) -> AlbumRecord | None:
        """With owner set, an album of another owner is None."""

    @abc.abstractmethod
    def list_albums(self, owner: str, *, page_size: int = 100,
                    after: tuple[dt.datetime, str] | None = None) -> tuple[list[AlbumRecord], tuple[dt.datetime, str] | None]:
        """Most recently updated first by (updated_at, id); returns the albums and the next `after`."""

    @abc.abstractmethod
    def update_album(self, album_id: str, *, title: str | None = None,
                     cover_photo_id: str | None = None) -> AlbumRecord | None:
        """Sets the fields given and updated_at; None when the album is gone."""

    @abc.abstractmethod
    def delete_album(self, album_id: str) -> AlbumRecord | None:
        """Removes the album and its id from its photos' album_ids; returns what was removed."""

    @abc.abstractmethod
    def add_album_photos(self, album_id: str, photo_ids: Sequence[str]) -> AlbumRecord | None:
        """Adds the photos (of the album's owner; callers check) to the album; idempotent.
        None when the album is gone."""

    @abc.abstractmethod
    def remove_album_photos(self, album_id: str, photo_ids: Sequence[str]) -> AlbumRecord | None:
        """Removes them (a cover among them is unset); None when the album is gone."""

    @abc.abstractmethod
    def update_status(
        self,
        photo_id: str,
        status: str | None,
        *,
        reason: str | None = "",
        embedding_model: str | None = None,
        attempts: int | None = None,
        labels: Sequence[tuple[str, float]] | None = None,
        ocr_text: str | None = None,
        embedding_models: Sequence[str] | None = None,
        text_state: str | None = None,
        text_state_reason: str | None = None,
    ) -> PhotoRecord | None:
        """Sets status fields and updated_at (None leaves a field as is, status and reason too);
        None when the photo is gone."""

    @abc.abstractmethod
    def mark_published(self, photo_ids: Sequence[str]) -> None: ...

    @abc.abstractmethod
    def mark_reindex_queued(self, photo_ids: Sequence[str], at: dt.datetime, models: Sequence[str]) -> None:
        """Sets reindex_queued_at and reindex_queued_for of these photos."""

    @abc.abstractmethod
    def unpublished_photos(self, limit: int = 100) -> list[PhotoRecord]:
        """Oldest first."""

    @abc.abstractmethod
    def delete_photo(self, photo_id: str) -> PhotoRecord | None:
        """Removes the document and its request ids; returns what was removed."""

    def describe(self) -> str:
        """Backend and address, for status output."""
        return type(self).__name__

    def close(self) -> None:
        pass


# Events


@dataclasses.dataclass(frozen=True, order=True)
class TopicPartition:
    topic: str
    partition: int


@dataclasses.dataclass
class Event:
    topic: str
    partition: int
    offset: int
    key: str
    value: bytes  # a serialized photos.v1.PhotoEvent (photostore/events.py)
    timestamp: dt.datetime

    @property
    def topic_partition(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@dataclasses.dataclass(frozen=True)
class Record:
    """One record to send: the key picks the partition (same key, same partition, same order)."""
    topic: str
    key: str
    value: bytes


class EventLogUnavailableError(BackendUnavailableError):
    """The log could not take or give records now (broker down, timed out): retry later."""


class EventProducer(abc.ABC):
    @abc.abstractmethod
    def send_many(self, records: Sequence[Record]) -> None:
        """Appends every record durably (acknowledged by the log) before it returns; raises
        EventLogUnavailableError when they could not all be written (some may have been)."""

    def send(self, topic: str, key: str, value: bytes) -> None:
        self.send_many([Record(topic, key, value)])

    def close(self) -> None:
        pass


RebalanceCallback = Callable[[set[TopicPartition]], None]


class EventConsumer(abc.ABC):
    """A member of a consumer group (Kafka-like): the group's members share the topics'
    partitions. Delivery is at least once: records after the group's committed position in a
    partition come again after a restart or a rebalance until they are committed."""

    @abc.abstractmethod
    def poll(self, max_records: int = 100, timeout_s: float = 1.0) -> list[Event]:
        """Records after the last polled position in each assigned partition, waiting up to
        timeout_s for any. Rebalance callbacks run inside poll."""

    @abc.abstractmethod
    def commit(self, events: Sequence[Event]) -> None:
        """Commits, per (topic, partition), the position after the highest offset in `events`.
        Commits never move a position back."""

    @abc.abstractmethod
    def seek_to_committed(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Next poll starts again after the committed position (all assigned partitions when None),
        so uncommitted records are delivered again."""

    @abc.abstractmethod
    def assignment(self) -> set[TopicPartition]: ...

    def close(self) -> None:
        pass


class EventLog(abc.ABC):
    @abc.abstractmethod
    def producer(self) -> EventProducer: ...

    @abc.abstractmethod
    def consumer(self, group: str, topics: Sequence[str], *,
                 on_assigned: RebalanceCallback | None = None,
                 on_revoked: RebalanceCallback | None = None) -> EventConsumer:
        """A new member of `group`. on_revoked runs before partitions go to another member
        (commit or drop what is held for them); on_assigned after new ones arrive."""

    @abc.abstractmethod
    def broadcast(self, topics: Sequence[str]) -> EventConsumer:
        """A consumer outside any group that gets every record written from now on, in every
        partition (each process hears everything); commit is a no-op."""

    @abc.abstractmethod
    def lag(self, group: str, topics: Sequence[str]) -> dict[TopicPartition, int]:
        """Records after the group's committed position, per partition."""

    def prune(self, older_than: dt.datetime) -> int:
        """Drops records older than `older_than` that every group has committed; returns how many.
        Engines with their own retention (Kafka's retention.ms) do nothing here."""
        return 0

    def describe(self) -> str:
        """Backend and address, for status output."""
        return type(self).__name__

    def close(self) -> None:
        pass


# Vectors and keywords


@dataclasses.dataclass
class VectorFilter:
    owner: str
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    camera_make: str = ""
    camera_model: str = ""


@dataclasses.dataclass
class VectorObject:
    """One photo's vector in one space, with the photo's filter properties and keyword text."""
    photo_id: str
    owner: str
    model: str
    vector: Any  # numpy float32 array, L2-normalised; None writes only properties and keywords
    taken_at: dt.datetime | None = None
    camera_make: str = ""
    camera_model: str = ""
    space: str = SPACE_CLIP
    # Words the keyword signal matches (filename, labels, OCR text); None leaves them as they are.
    keywords: str | None = None


# What keyword_search counts as words: letters and digits; "_", "-" and "." separate words.
WORD = re.compile(r"[^\W_]+")


def words(text: str) -> set[str]:
    return set(WORD.findall(text.lower()))


class IndexUnavailableError(BackendUnavailableError):
    """The index could not be reached or failed transiently: retry later."""


class VectorStore(abc.ABC):
    """The search index (Weaviate-like, named vectors): per photo one vector per space, filter
    properties (owner, time taken, camera) and keyword text. Raises IndexUnavailableError when
    the engine cannot be reached."""

    def upsert(self, obj: VectorObject) -> None:
        self.upsert_many([obj])

    @abc.abstractmethod
    def upsert_many(self, objs: Sequence[VectorObject]) -> None:
        """Creates or replaces the vector of each photo_id in obj.space, leaving its other spaces
        as they are (idempotent); all written when it returns, else it raises."""

    @abc.abstractmethod
    def delete(self, photo_id: str) -> None:
        """Removes the photo's vectors in every space, and its keywords; idempotent."""

    @abc.abstractmethod
    def get(self, photo_id: str, space: str = SPACE_CLIP) -> VectorObject | None: ...

    def get_many(self, photo_ids: Sequence[str], space: str = SPACE_CLIP) -> dict[str, VectorObject]:
        """{photo_id: its vector in `space`} of those that have one; engines answer in one call."""
        found = {}
        for photo_id in photo_ids:
            if (obj := self.get(photo_id, space)) is not None:
                found[photo_id] = obj
        return found

    def scores(self, vector: Any, model: str, space: str, photo_ids: Sequence[str]) -> dict[str, float]:
        """{photo_id: exact cosine of `vector` and the photo's vector in `space`} of those among
        `photo_ids` whose vector there is of `model`, whatever the engine's index."""
        import numpy as np  # here: most processes that import this module never score

        query = np.asarray(vector, np.float32).reshape(-1)
        query = query / (np.linalg.norm(query) or 1.0)
        found = {}
        for photo_id, obj in self.get_many(photo_ids, space).items():
            if obj.model == model and obj.vector is not None:
                stored = np.asarray(obj.vector, np.float32).reshape(-1)
                found[photo_id] = float(query @ stored / (np.linalg.norm(stored) or 1.0))
        return found

    @abc.abstractmethod
    def search(
        self, vector: Any, model: str, flt: VectorFilter, limit: int, min_score: float = -1.0
    ) -> list[tuple[str, float]]:
        """(photo_id, cosine score) best first, among vectors of `model` matching the filter.
        Engines with an approximate index may miss a few of the exact top hits."""

    @abc.abstractmethod
    def keyword_search(self, flt: VectorFilter, terms: Sequence[str], limit: int = 200
                       ) -> list[tuple[str, list[str]]]:
        """(photo_id, terms found) of photos matching the filter whose keywords contain any of
        the lower-case `terms` as a word (see `words`); most terms found first."""

    @abc.abstractmethod
    def count(self, model: str | None = None) -> int: ...

    def describe(self) -> str:
        """Backend and address, for status output."""
        return type(self).__name__

    def close(self) -> None:
        pass
