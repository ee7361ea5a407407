"""Photo documents, users, API key and session token hashes in MongoDB (any server of the wire
protocol; tested against SecantusDB, see deploy/local/mongodb.sh), through pymongo.

Why the upload request ids live inside the photo document (`request_ids`, an array) rather than in
a collection of their own: MongoDB makes every single-document write atomic, and checks unique
indexes as part of that write. With the ids embedded,

- insert_photo is one insert_one of the photo with its request id: the unique indexes on
  (owner, sha256) and (owner, request_ids) let exactly one of any concurrent inserts of the same
  bytes or request id through, and the losers read the winner;
- delete_photo is one find_one_and_delete: the photo and its request ids go together;
- adding a later request id to an existing photo (a retry under a new id that found the same
  bytes) is one $addToSet on that document, which the unique index again guards.

A separate requests collection would need a multi-document transaction to keep the two in step,
and transactions need a replica set; this layout works on a standalone server as well.

Albums follow the same rule: an album is a document of `albums` (its request id inside it, under
a unique index), and membership lives on the photos (`album_ids`, multikey-indexed), changed by
$addToSet/$pull in update_many: each photo's change is atomic, so adding, removing and deleting
need no transaction. Writes that could race with a delete of the album write the photos first and
the album second, and undo their photo writes when the album turned out to be gone.

Dates are BSON dates: UTC, kept to the millisecond. The client is tz-aware, so every datetime read
back is aware (UTC). An unreachable server raises MetadataUnavailableError after about
SERVER_SELECTION_TIMEOUT_MS.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
import uuid
from typing import Any, Sequence

import bson
import pymongo
from pymongo.errors import ConnectionFailure, DuplicateKeyError

from photostore.backends.base import (SESSION_IDLE_SECONDS, SESSION_MAX_AGE_SECONDS, SESSION_TOUCH_SECONDS,
                                      AlbumRecord, MetadataStore, MetadataUnavailableError, Page, PhotoFacts,
                                      PhotoFilter, PhotoRecord, SessionRecord, User, UserStore, photo_filter,
                                      utcnow)
from photostore.settings import MetadataSettings

SERVER_SELECTION_TIMEOUT_MS = 5000
PHOTOS = "photos"
ALBUMS = "albums"
USERS = "users"
SESSIONS = "sessions"
_FIELDS = [f.name for f in dataclasses.fields(PhotoRecord) if f.name != "id"]
_FACTS = [f.name for f in dataclasses.fields(PhotoFacts) if f.name != "id"]
_NEWEST_FIRST = [("sort_time", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)]
_NEWEST_DELETED_FIRST = [("deleted_at", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)]
_OLDEST_DELETED_FIRST = [("deleted_at", pymongo.ASCENDING), ("_id", pymongo.ASCENDING)]
_OLDEST_FIRST = [("created_at", pymongo.ASCENDING), ("_id", pymongo.ASCENDING)]
_RECENTLY_UPDATED_FIRST = [("updated_at", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)]
_PLACE_FIELDS = ("place_city", "place_region", "place_country", "place_country_code")
# deleted_at is set: a range, which SecantusDB bounds its index scan by (not so $ne: null).
_IN_TRASH = {"$gte": dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)}
_INSERT_ATTEMPTS = 5


def _client(settings: MetadataSettings) -> pymongo.MongoClient:
    uri = settings.mongodb_uri.get_secret_value()
    # Timeouts given in the URI win over these defaults.
    timeouts = {name: SERVER_SELECTION_TIMEOUT_MS for name in ("serverSelectionTimeoutMS", "connectTimeoutMS")
                if name.lower() not in uri.lower()}
    return pymongo.MongoClient(uri, tz_aware=True, tzinfo=dt.timezone.utc, appname="photostore",
                               **timeouts)


def _ms(time: dt.datetime) -> dt.datetime:
    """A datetime as BSON keeps it: to the millisecond."""
    return time.replace(microsecond=time.microsecond // 1000 * 1000)


def _address(settings: MetadataSettings) -> str:
    """host:port/db from the URI, without credentials or options."""
    rest = settings.mongodb_uri.get_secret_value().split("://", 1)[-1]
    hosts = rest.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    return f"mongodb at {hosts}/{settings.mongodb_database}"


def _surface_outages(method):
    """Driver errors that mean the server is unreachable become MetadataUnavailableError."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except ConnectionFailure as e:  # also AutoReconnect, ServerSelectionTimeoutError, NetworkTimeout
            raise MetadataUnavailableError(f"{self.describe()} unreachable: {e}") from e
    return wrapper


def _value(name: str, value: Any) -> Any:
    """A PhotoRecord field's value as the document holds it."""
    if name == "labels":
        return [[label, score] for label, score in value]
    if name in ("embedding_models", "reindex_queued_for", "album_ids"):
        return list(value)
    if name in ("published", "favorite"):
        return bool(value)
    return value


def _document(record: PhotoRecord, request_id: str = "") -> dict[str, Any]:
    doc: dict[str, Any] = {"_id": record.id}
    doc.update((name, _value(name, getattr(record, name))) for name in _FIELDS)
    doc["sort_time"] = record.sort_time
    # Left out, not empty, when there is none: the unique index is partial on its presence.
    if request_id:
        doc["request_ids"] = [request_id]
    return doc


def _record(doc: dict[str, Any]) -> PhotoRecord:
    """Fields missing from documents written by earlier versions take their defaults."""
    values = {name: doc[name] for name in _FIELDS if name in doc}
    values["labels"] = [(label, score) for label, score in doc.get("labels", [])]
    return PhotoRecord(id=doc["_id"], **values)


def _same_text(value: str) -> dict[str, Any]:
    """Case-insensitive equality (an anchored regex: no index, but the owner's narrows the scan)."""
    return {"$regex": f"^{re.escape(value)}$", "$options": "i"}


def _query(owner: str, flt: PhotoFilter) -> dict[str, Any]:
    query: dict[str, Any] = {"owner": owner}
    if flt.status:
        query["status"] = flt.status
    window = {}
    if flt.start is not None:
        window["$gte"] = flt.start
    if flt.end is not None:
        window["$lt"] = flt.end
    if window:
        query["sort_time"] = window
    for name in ("camera_make", "camera_model"):
        if value := getattr(flt, name):
            query[name] = _same_text(value)
    if flt.place:
        query["$or"] = [{name: _same_text(flt.place)} for name in _PLACE_FIELDS]
    if flt.album_id:
        query["album_ids"] = flt.album_id
    if flt.favorite:
        query["favorite"] = True
    # None also matches documents without the field (written before the trash existed).
    query["deleted_at"] = _IN_TRASH if flt.deleted else None
    return query


def _after(key: str, after: tuple[dt.datetime, str]) -> dict[str, Any]:
    """Documents after (key, _id) in (key, _id) descending order."""
    position, doc_id = after
    return {"$or": [{key: {"$lt": position}}, {key: position, "_id": {"$lt": doc_id}}]}


def _album(doc: dict[str, Any], photo_count: int) -> AlbumRecord:
    return AlbumRecord(id=doc["_id"], owner=doc["owner"], title=doc["title"], created_at=doc["created_at"],
                       updated_at=doc["updated_at"], cover_photo_id=doc.get("cover_photo_id", ""),
                       photo_count=photo_count)


class MongoMetadataStore(MetadataStore):
    def __init__(self, settings: MetadataSettings):
        self._settings = settings
        self._client = _client(settings)
        self._photos = self._client[settings.mongodb_database][PHOTOS]
        self._albums = self._client[settings.mongodb_database][ALBUMS]
        self._create_indexes()

    @_surface_outages
    def _create_indexes(self) -> None:
        """Idempotent: the same definitions again are a no-op on the server."""
        self._photos.create_index([("owner", 1), ("sha256", 1)], unique=True, name="owner_sha256")
        # Multikey: one entry per request id; partial, so photos without any do not collide.
        self._photos.create_index([("owner", 1), ("request_ids", 1)], unique=True, name="owner_request_ids",
                                  partialFilterExpression={"request_ids": {"$exists": True}})
        # Ascending keys, walked backwards for newest first (the same cost in MongoDB): SecantusDB
        # 0.7.0b3 scans a descending key's $gte bound as exclusive (an ascending key's $lte too, which
        # the queries here do not use). Its planner takes an index only when it holds every field
        # the query names, so the library (deleted_at null) and the trash (a deleted_at range) both
        # walk this one; photos of earlier versions, without deleted_at, are under null.
        # (owner_sort_time, of earlier versions, is left as is on databases that have it.)
        self._photos.create_index([("owner", 1), ("deleted_at", 1), ("sort_time", 1), ("_id", 1)],
                                  name="owner_deleted_at_sort_time")
        self._photos.create_index(_OLDEST_FIRST, name="outbox",
                                  partialFilterExpression={"published": False})
        # The purge: oldest deleted first, any owner.
        self._photos.create_index([("deleted_at", 1), ("_id", 1)], name="deleted_at")
        # Multikey: an album's photos (filter, counts, removal of a deleted album's id).
        self._photos.create_index([("owner", 1), ("album_ids", 1), ("deleted_at", 1)], name="owner_album_ids")
        self._albums.create_index([("owner", 1), ("updated_at", 1), ("_id", 1)], name="owner_updated_at")
        self._albums.create_index([("owner", 1), ("request_id", 1)], unique=True, name="owner_request_id",
                                  partialFilterExpression={"request_id": {"$exists": True}})

    def describe(self) -> str:
        return _address(self._settings)

    def close(self) -> None:
        self._client.close()

    def _as_stored(self, doc: dict[str, Any]) -> PhotoRecord:
        """The record as a read would return it (UTC, milliseconds)."""
        return _record(bson.decode(bson.encode(doc), codec_options=self._photos.codec_options))

    def _find_duplicate(self, owner: str, request_id: str, sha256: str) -> dict[str, Any] | None:
        doc = None
        if request_id:
            doc = self._photos.find_one({"owner": owner, "request_ids": request_id})
        return doc or self._photos.find_one({"owner": owner, "sha256": sha256})

    @_surface_outages
    def insert_photo(self, record: PhotoRecord, request_id: str) -> tuple[PhotoRecord, bool]:
        doc = _document(record, request_id)
        for _ in range(_INSERT_ATTEMPTS):
            try:
                self._photos.insert_one(doc)
                return self._as_stored(doc), True
            except DuplicateKeyError:
                pass
            existing = self._find_duplicate(record.owner, request_id, record.sha256)
            if existing is None:
                if self._photos.find_one({"_id": record.id}, {"_id": 1}) is not None:
                    raise ValueError(f"photo id {record.id!r} is taken")
                continue  # the duplicate was deleted meanwhile: insert again
            if existing["_id"] == record.id:
                return _record(existing), True  # our own insert, retried by the driver
            if request_id and request_id not in existing.get("request_ids", ()):
                try:
                    existing = self._photos.find_one_and_update(
                        {"_id": existing["_id"]}, {"$addToSet": {"request_ids": request_id}},
                        return_document=pymongo.ReturnDocument.AFTER)
                except DuplicateKeyError:
                    continue  # the request id went to another photo meanwhile: resolve it again
                if existing is None:
                    continue
            return _record(existing), False
        raise RuntimeError(f"insert of photo {record.id} kept racing with deletes")

    @_surface_outages
    def insert_new_photos(self, records: Sequence[PhotoRecord]) -> None:
        if records:
            self._photos.insert_many([_document(r) for r in records], ordered=False)

    def _one(self, query: dict[str, Any]) -> PhotoRecord | None:
        doc = self._photos.find_one(query)
        return _record(doc) if doc else None

    @_surface_outages
    def photo_by_request(self, owner: str, request_id: str) -> PhotoRecord | None:
        return self._one({"owner": owner, "request_ids": request_id})

    @_surface_outages
    def photo_by_sha256(self, owner: str, sha256: str) -> PhotoRecord | None:
        return self._one({"owner": owner, "sha256": sha256})

    @_surface_outages
    def get_photo(self, photo_id: str, owner: str | None = None) -> PhotoRecord | None:
        record = self._one({"_id": photo_id})  # by _id alone: see get_photos
        return None if record is None or (owner is not None and record.owner != owner) else record

    @_surface_outages
    def get_photos(self, owner: str, photo_ids: Sequence[str]) -> list[PhotoRecord]:
        if not photo_ids:
            return []
        # By _id alone, owner checked here: with the owner in the query SecantusDB walks the owner's
        # index instead of the _id one (3 s for 60 ids among 20k photos, against 10 ms).
        found = {doc["_id"]: _record(doc)
                 for doc in self._photos.find({"_id": {"$in": list(set(photo_ids))}})
                 if doc["owner"] == owner}
        return [found[i] for i in photo_ids if i in found]

    @_surface_outages
    def list_photos(self, owner: str, *, filter: PhotoFilter | None = None, status: str | None = None,
                    start: dt.datetime | None = None, end: dt.datetime | None = None,
                    page_size: int = 50, after: tuple[dt.datetime, str] | None = None,
                    count_total: bool = False) -> Page:
        flt = photo_filter(filter, status=status, start=start, end=end)
        query = _query(owner, flt)
        key, order = ("deleted_at", _NEWEST_DELETED_FIRST) if flt.deleted else ("sort_time", _NEWEST_FIRST)
        total = self._photos.count_documents(query) if count_total else None
        if after is not None:
            query = {"$and": [query, _after(key, after)]}
        docs = list(self._photos.find(query).sort(order).limit(page_size + 1))
        records = [_record(doc) for doc in docs[:page_size]]
        next_after = None
        if len(docs) > page_size:
            next_after = (docs[page_size - 1][key], docs[page_size - 1]["_id"])
        return Page(records=records, next_after=next_after, total=total)

    @_surface_outages
    def photo_facts(self, owner: str, filter: PhotoFilter | None = None) -> list[PhotoFacts]:
        flt = filter or PhotoFilter()
        defaults = {f.name: f.default for f in dataclasses.fields(PhotoFacts)}
        docs = self._photos.find(_query(owner, flt), dict.fromkeys(_FACTS, 1))
        return [PhotoFacts(id=doc["_id"], **{name: doc.get(name, defaults[name]) for name in _FACTS})
                for doc in docs]

    @_surface_outages
    def update_photo(self, photo_id: str, **changes: Any) -> PhotoRecord | None:
        unknown = (set(changes) - set(_FIELDS)) | (set(changes) & {"owner"})
        if unknown:
            raise ValueError(f"cannot set {', '.join(sorted(unknown))} of a photo")
        values = {name: _value(name, value) for name, value in changes.items()}
        values.setdefault("updated_at", utcnow())
        # update_one then find_one: SecantusDB's find_one_and_update scans (0.5 s at 20k photos).
        if self._photos.update_one({"_id": photo_id}, {"$set": values}).matched_count == 0:
            return None
        if "taken_at" in changes or "created_at" in changes:
            # Derived from the stored values, so concurrent changes of the times converge.
            self._photos.update_one({"_id": photo_id},
                                    [{"$set": {"sort_time": {"$ifNull": ["$taken_at", "$created_at"]}}}])
        return self._one({"_id": photo_id})

    @_surface_outages
    def expired_trash(self, deleted_before: dt.datetime, limit: int = 100) -> list[PhotoRecord]:
        return [_record(doc) for doc in self._photos.find({"deleted_at": {**_IN_TRASH, "$lt": deleted_before}})
                .sort(_OLDEST_DELETED_FIRST).limit(limit)]

    # Albums

    def _counted(self, doc: dict[str, Any] | None) -> AlbumRecord | None:
        """The album with its photo_count: one count on owner_album_ids (an $in over several albums
        is a collection scan on SecantusDB)."""
        if doc is None:
            return None
        return _album(doc, self._photos.count_documents(
            {"owner": doc["owner"], "album_ids": doc["_id"], "deleted_at": None}))

    def _set_membership(self, album_id: str, photo_ids: Sequence[str], *, member: bool) -> None:
        """$addToSet or $pull the album on these photos. By _id alone (see get_photos), which
        photos' owner never changes."""
        if photo_ids:
            change = {"$addToSet" if member else "$pull": {"album_ids": album_id}}
            self._photos.update_many({"_id": {"$in": list(photo_ids)}}, change)

    def _owned(self, owner: str, photo_ids: Sequence[str]) -> list[str]:
        """The ids among photo_ids of the owner's photos."""
        if not photo_ids:
            return []
        return [doc["_id"] for doc in self._photos.find({"_id": {"$in": list(set(photo_ids))}}, {"owner": 1})
                if doc["owner"] == owner]

    def _add_members(self, album: dict[str, Any], photo_ids: Sequence[str]) -> bool:
        """Adds the owner's photos among photo_ids to the album (photos first, then the album's
        updated_at); False, and undone, when the album was deleted meanwhile."""
        owned = self._owned(album["owner"], photo_ids)
        self._set_membership(album["_id"], owned, member=True)
        still_there = self._albums.update_one({"_id": album["_id"]}, {"$set": {"updated_at": utcnow()}})
        if still_there.matched_count == 0:
            self._set_membership(album["_id"], owned, member=False)
        return still_there.matched_count > 0

    @_surface_outages
    def create_album(self, album: AlbumRecord, photo_ids: Sequence[str] = (),
                     request_id: str = "") -> tuple[AlbumRecord, bool]:
        doc: dict[str, Any] = {"_id": album.id, "owner": album.owner, "title": album.title,
                               "cover_photo_id": album.cover_photo_id, "created_at": album.created_at,
                               "updated_at": album.updated_at}
        if request_id:  # left out when none: the unique index is partial on its presence
            doc["request_id"] = request_id
        if photo_ids:
            # The photos still to add: a retry of the request finishes what a crash left undone.
            doc["adding"] = list(dict.fromkeys(photo_ids))
        for _ in range(_INSERT_ATTEMPTS):
            try:
                self._albums.insert_one(doc)
                stored, created = doc, True
            except DuplicateKeyError:
                stored = self._albums.find_one({"owner": album.owner, "request_id": request_id}) if request_id else None
                if stored is None:
                    if self._albums.find_one({"_id": album.id}, {"_id": 1}) is not None:
                        raise ValueError(f"album id {album.id!r} is taken") from None
                    continue  # the album of this request was deleted meanwhile: insert again
                created = stored["_id"] == album.id  # our own insert, retried by the driver
            if "adding" in stored:
                owned = self._owned(album.owner, stored["adding"])
                self._set_membership(stored["_id"], owned, member=True)
                if self._albums.update_one({"_id": stored["_id"]}, {"$unset": {"adding": ""}}).matched_count == 0:
                    self._set_membership(stored["_id"], owned, member=False)  # deleted meanwhile
            return self._counted(stored), created
        raise RuntimeError(f"creation of album {album.id} kept racing with deletes")

    @_surface_outages
    def get_album(self, album_id: str, owner: str | None = None) -> AlbumRecord | None:
        doc = self._albums.find_one({"_id": album_id})
        return None if doc is None or (owner is not None and doc["owner"] != owner) else self._counted(doc)

    @_surface_outages
    def list_albums(self, owner: str, *, page_size: int = 100, after: tuple[dt.datetime, str] | None = None
                    ) -> tuple[list[AlbumRecord], tuple[dt.datetime, str] | None]:
        query: dict[str, Any] = {"owner": owner}
        if after is not None:
            query = {"$and": [query, _after("updated_at", after)]}
        docs = list(self._albums.find(query).sort(_RECENTLY_UPDATED_FIRST).limit(page_size + 1))
        more, docs = len(docs) > page_size, docs[:page_size]
        albums = [self._counted(doc) for doc in docs]
        return albums, (albums[-1].updated_at, albums[-1].id) if more else None

    @_surface_outages
    def update_album(self, album_id: str, *, title: str | None = None,
                     cover_photo_id: str | None = None) -> AlbumRecord | None:
        changes = {"title": title, "cover_photo_id": cover_photo_id, "updated_at": utcnow()}
        changes = {k: v for k, v in changes.items() if v is not None}
        if self._albums.update_one({"_id": album_id}, {"$set": changes}).matched_count == 0:
            return None
        return self.get_album(album_id)

    @_surface_outages
    def delete_album(self, album_id: str) -> AlbumRecord | None:
        doc = self._albums.find_one({"_id": album_id})
        if doc is None or self._albums.delete_one({"_id": album_id}).deleted_count == 0:
            return None
        removed = self._counted(doc)
        self._photos.update_many({"owner": doc["owner"], "album_ids": album_id}, {"$pull": {"album_ids": album_id}})
        return removed

    @_surface_outages
    def add_album_photos(self, album_id: str, photo_ids: Sequence[str]) -> AlbumRecord | None:
        doc = self._albums.find_one({"_id": album_id})
        if doc is None or not self._add_members(doc, photo_ids):
            return None
        return self.get_album(album_id)

    @_surface_outages
    def remove_album_photos(self, album_id: str, photo_ids: Sequence[str]) -> AlbumRecord | None:
        ids = list(photo_ids)
        if ids:
            self._set_membership(album_id, ids, member=False)
            self._albums.update_one({"_id": album_id, "cover_photo_id": {"$in": ids}}, {"$set": {"cover_photo_id": ""}})
        if self._albums.update_one({"_id": album_id}, {"$set": {"updated_at": utcnow()}}).matched_count == 0:
            return None
        return self.get_album(album_id)

    @_surface_outages
    def update_status(self, photo_id: str, status: str | None, *, reason: str | None = "",
                      embedding_model: str | None = None, attempts: int | None = None,
                      labels: Sequence[tuple[str, float]] | None = None,
                      ocr_text: str | None = None,
                      embedding_models: Sequence[str] | None = None, text_state: str | None = None,
                      text_state_reason: str | None = None) -> PhotoRecord | None:
        changes = {"status": status, "status_reason": reason, "updated_at": utcnow(),
                   "embedding_model": embedding_model, "index_attempts": attempts,
                   "labels": None if labels is None else [[label, score] for label, score in labels],
                   "ocr_text": ocr_text,
                   "embedding_models": None if embedding_models is None else list(embedding_models),
                   "text_state": text_state, "text_state_reason": text_state_reason}
        changes = {k: v for k, v in changes.items() if v is not None}
        doc = self._photos.find_one_and_update({"_id": photo_id}, {"$set": changes},
                                               return_document=pymongo.ReturnDocument.AFTER)
        return _record(doc) if doc else None

    @_surface_outages
    def mark_published(self, photo_ids: Sequence[str]) -> None:
        if photo_ids:
            self._photos.update_many({"_id": {"$in": list(photo_ids)}}, {"$set": {"published": True}})

    @_surface_outages
    def mark_reindex_queued(self, photo_ids: Sequence[str], at: dt.datetime, models: Sequence[str]) -> None:
        if photo_ids:
            self._photos.update_many({"_id": {"$in": list(photo_ids)}},
                                     {"$set": {"reindex_queued_at": at, "reindex_queued_for": list(models)}})

    @_surface_outages
    def unpublished_photos(self, limit: int = 100) -> list[PhotoRecord]:
        return [_record(doc) for doc in
                self._photos.find({"published": False}).sort(_OLDEST_FIRST).limit(limit)]

    @_surface_outages
    def delete_photo(self, photo_id: str) -> PhotoRecord | None:
        doc = self._photos.find_one_and_delete({"_id": photo_id})
        return _record(doc) if doc else None


class MongoUserStore(UserStore):
    """users: {_id, name (unique), created_at, key_hashes: [...] (unique, multikey)}: a user and
    its keys are one document, so create_user is one atomic insert.
    sessions: {_id: token hash, user_id, created_at, last_seen}."""

    def __init__(self, settings: MetadataSettings, *, session_idle_s: float = SESSION_IDLE_SECONDS,
                 session_max_age_s: float = SESSION_MAX_AGE_SECONDS):
        self.session_idle_s, self.session_max_age_s = session_idle_s, session_max_age_s
        self._settings = settings
        self._client = _client(settings)
        self._users = self._client[settings.mongodb_database][USERS]
        self._sessions = self._client[settings.mongodb_database][SESSIONS]
        self._create_indexes()

    @_surface_outages
    def _create_indexes(self) -> None:
        self._users.create_index([("name", 1)], unique=True, name="name")
        self._users.create_index([("key_hashes", 1)], unique=True, name="key_hashes")
        self._sessions.create_index([("last_seen", 1)], name="last_seen")
        self._sessions.create_index([("created_at", 1)], name="created_at")
        self._sessions.create_index([("user_id", 1)], name="user_id")

    def describe(self) -> str:
        return _address(self._settings)

    def close(self) -> None:
        self._client.close()

    @staticmethod
    def _user(doc: dict[str, Any] | None) -> User | None:
        return User(id=doc["_id"], name=doc["name"], created_at=doc["created_at"]) if doc else None

    @_surface_outages
    def create_user(self, name: str, key_hash: str) -> User:
        now = utcnow()
        user = User(id=uuid.uuid4().hex, name=name,
                    created_at=now.replace(microsecond=now.microsecond // 1000 * 1000))  # BSON: ms
        try:
            self._users.insert_one({"_id": user.id, "name": name, "created_at": user.created_at,
                                    "key_hashes": [key_hash]})
        except DuplicateKeyError as e:
            if "key_hashes" in ((e.details or {}).get("keyPattern") or {}):
                raise ValueError("this API key belongs to another user") from None
            raise ValueError(f"user {name!r} already exists") from None
        return user

    @_surface_outages
    def add_api_key(self, user_id: str, key_hash: str) -> None:
        """Idempotent; a hash that already belongs to a user stays with that user."""
        try:
            self._users.update_one({"_id": user_id}, {"$addToSet": {"key_hashes": key_hash}})
        except DuplicateKeyError:
            pass

    @_surface_outages
    def replace_api_keys(self, user_id: str, key_hash: str) -> int:
        """The keys are one field of the user's document: one atomic $set replaces them all (the
        unique key_hashes index refuses another user's hash). Sessions live in their own
        collection and end right after; none made with an old key can follow, since CreateSession
        looks its key up in this store."""
        try:
            result = self._users.update_one({"_id": user_id}, {"$set": {"key_hashes": [key_hash]}})
        except DuplicateKeyError:
            raise ValueError("this API key belongs to another user") from None
        if result.matched_count == 0:
            raise ValueError(f"no user {user_id!r}")
        return self._sessions.delete_many({"user_id": user_id}).deleted_count

    @_surface_outages
    def user_by_key_hash(self, key_hash: str) -> User | None:
        return self._user(self._users.find_one({"key_hashes": key_hash}, {"key_hashes": 0}))

    @_surface_outages
    def user_by_name(self, name: str) -> User | None:
        return self._user(self._users.find_one({"name": name}, {"key_hashes": 0}))

    @_surface_outages
    def create_session(self, user_id: str, token_hash: str, *,
                       now: dt.datetime | None = None) -> SessionRecord:
        now = _ms(now or utcnow())
        user = self._user(self._users.find_one({"_id": user_id}, {"key_hashes": 0}))
        if user is None:
            raise ValueError(f"no user {user_id!r}")
        # Expired sessions go whenever a new one comes (and each on its own lookup).
        self._sessions.delete_many({"$or": [
            {"last_seen": {"$lte": now - dt.timedelta(seconds=self.session_idle_s)}},
            {"created_at": {"$lte": now - dt.timedelta(seconds=self.session_max_age_s)}}]})
        self._sessions.insert_one({"_id": token_hash, "user_id": user_id, "created_at": now,
                                   "last_seen": now})
        return SessionRecord(user=user, created_at=now, last_seen=now,
                             expire_time=self.session_expiry(now, now))

    @_surface_outages
    def session_by_token_hash(self, token_hash: str, *,
                              now: dt.datetime | None = None) -> SessionRecord | None:
        doc = self._sessions.find_one({"_id": token_hash})
        if doc is None:
            return None
        now = _ms(now or utcnow())
        created, last_seen = doc["created_at"], doc["last_seen"]
        if now >= self.session_expiry(created, last_seen):
            self._sessions.delete_one({"_id": token_hash})
            return None
        user = self._user(self._users.find_one({"_id": doc["user_id"]}, {"key_hashes": 0}))
        if user is None:
            return None
        if (now - last_seen).total_seconds() >= SESSION_TOUCH_SECONDS:
            self._sessions.update_one({"_id": token_hash, "last_seen": {"$lt": now}},
                                      {"$set": {"last_seen": now}})
            last_seen = now
        return SessionRecord(user=user, created_at=created, last_seen=last_seen,
                             expire_time=self.session_expiry(created, last_seen))

    @_surface_outages
    def delete_session(self, token_hash: str) -> bool:
        return self._sessions.delete_one({"_id": token_hash}).deleted_count > 0
