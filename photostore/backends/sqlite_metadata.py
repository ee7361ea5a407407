"""Photo documents in SQLite, with the unique indexes of the MongoDB twin (mongo_metadata.py)."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Sequence

from photostore.backends.base import STATUS_INDEXED, TEXT_DONE, MetadataStore, Page, PhotoRecord, utcnow
from photostore.backends.sqlite_util import SqliteDatabase

SCHEMA = """
CREATE TABLE IF NOT EXISTS photos (
  id TEXT PRIMARY KEY, owner TEXT NOT NULL, filename TEXT NOT NULL, sha256 TEXT NOT NULL,
  content_type TEXT NOT NULL, size_bytes INTEGER NOT NULL, width INTEGER NOT NULL,
  height INTEGER NOT NULL, blob_key TEXT NOT NULL, thumbnail_key TEXT NOT NULL,
  created_at REAL NOT NULL, updated_at REAL NOT NULL, taken_at REAL, sort_time REAL NOT NULL,
  camera_make TEXT NOT NULL, camera_model TEXT NOT NULL,
  latitude REAL, longitude REAL, altitude REAL,
  status TEXT NOT NULL, status_reason TEXT NOT NULL, embedding_model TEXT NOT NULL,
  index_attempts INTEGER NOT NULL,
  labels TEXT NOT NULL, ocr_text TEXT NOT NULL, embedding_models TEXT NOT NULL,
  text_state TEXT NOT NULL DEFAULT '', text_state_reason TEXT NOT NULL DEFAULT '',
  published INTEGER NOT NULL, reindex_queued_at REAL, reindex_queued_for TEXT NOT NULL DEFAULT '[]',
  UNIQUE (owner, sha256));
CREATE INDEX IF NOT EXISTS photos_by_time ON photos (owner, sort_time DESC, id DESC);
DROP INDEX IF EXISTS photos_unpublished;
CREATE INDEX IF NOT EXISTS photos_outbox ON photos (created_at, id) WHERE published = 0;
CREATE TABLE IF NOT EXISTS upload_requests (
  owner TEXT NOT NULL, request_id TEXT NOT NULL, photo_id TEXT NOT NULL,
  PRIMARY KEY (owner, request_id));
CREATE INDEX IF NOT EXISTS upload_requests_by_photo ON upload_requests (photo_id);
"""

_TIME_FIELDS = ("created_at", "updated_at", "taken_at", "reindex_queued_at")
_JSON_FIELDS = ("labels", "embedding_models", "reindex_queued_for")
_FIELDS = [f.name for f in dataclasses.fields(PhotoRecord)]


def _epoch(value: dt.datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _datetime(value: float | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromtimestamp(value, dt.timezone.utc)


def _record(row: sqlite3.Row) -> PhotoRecord:
    values = {name: row[name] for name in _FIELDS}
    for name in _TIME_FIELDS:
        values[name] = _datetime(values[name])
    values["labels"] = [(name, score) for name, score in json.loads(values["labels"])]
    values["embedding_models"] = json.loads(values["embedding_models"])
    values["reindex_queued_for"] = json.loads(values["reindex_queued_for"])
    values["published"] = bool(values["published"])
    return PhotoRecord(**values)


def _as_stored(record: PhotoRecord) -> PhotoRecord:
    """The record as a read returns it: times in UTC."""
    return dataclasses.replace(record, **{name: _datetime(_epoch(getattr(record, name)))
                                          for name in _TIME_FIELDS})


def _row(record: PhotoRecord) -> tuple:
    values = dataclasses.asdict(record)
    for name in _TIME_FIELDS:
        values[name] = _epoch(values[name])
    for name in _JSON_FIELDS:
        values[name] = json.dumps(values[name])
    return (*values.values(), _epoch(record.sort_time))


_INSERT_PHOTO = (f"INSERT INTO photos ({', '.join(_FIELDS)}, sort_time)"
                 f" VALUES ({', '.join('?' * (len(_FIELDS) + 1))})")


class SqliteMetadataStore(MetadataStore):
    def __init__(self, path: Path):
        self.db = SqliteDatabase(path, SCHEMA)
        self._upgrade()

    def _upgrade(self) -> None:
        """Adds the columns of later versions to a database made by an earlier one."""
        with self.db.transaction() as conn:
            columns = {row["name"] for row in conn.execute("PRAGMA table_info(photos)")}
            if "text_state" not in columns:  # before the text stage: indexed photos had their text read
                conn.execute("ALTER TABLE photos ADD COLUMN text_state TEXT NOT NULL DEFAULT ''")
                conn.execute("ALTER TABLE photos ADD COLUMN text_state_reason TEXT NOT NULL DEFAULT ''")
                conn.execute("UPDATE photos SET text_state = ? WHERE status = ?", (TEXT_DONE, STATUS_INDEXED))
            if "reindex_queued_at" not in columns:  # before ReindexPhotos remembered what it queued
                conn.execute("ALTER TABLE photos ADD COLUMN reindex_queued_at REAL")
                conn.execute("ALTER TABLE photos ADD COLUMN reindex_queued_for TEXT NOT NULL DEFAULT '[]'")

    def describe(self) -> str:
        return f"sqlite at {self.db.path}"

    def _one(self, conn, sql: str, params) -> PhotoRecord | None:
        row = conn.execute(sql, params).fetchone()
        return _record(row) if row else None

    def insert_photo(self, record: PhotoRecord, request_id: str) -> tuple[PhotoRecord, bool]:
        with self.db.transaction() as conn:
            existing = None
            if request_id:
                existing = self._one(conn, "SELECT photos.* FROM upload_requests JOIN photos"
                                     " ON photos.id = upload_requests.photo_id"
                                     " WHERE upload_requests.owner = ? AND request_id = ?",
                                     (record.owner, request_id))
            if existing is None:
                existing = self._one(conn, "SELECT * FROM photos WHERE owner = ? AND sha256 = ?",
                                     (record.owner, record.sha256))
            if existing is None:
                conn.execute(_INSERT_PHOTO, _row(record))
            stored = existing or _as_stored(record)
            if request_id:
                conn.execute("INSERT OR IGNORE INTO upload_requests VALUES (?, ?, ?)",
                             (record.owner, request_id, stored.id))
        return stored, existing is None

    def insert_new_photos(self, records: Sequence[PhotoRecord]) -> None:
        """Bulk load of records known to be new, in one transaction (benchmarks, migrations)."""
        with self.db.transaction() as conn:
            conn.executemany(_INSERT_PHOTO, [_row(r) for r in records])

    def photo_by_request(self, owner: str, request_id: str) -> PhotoRecord | None:
        return self._one(self.db.connection(),
                         "SELECT photos.* FROM upload_requests JOIN photos"
                         " ON photos.id = upload_requests.photo_id"
                         " WHERE upload_requests.owner = ? AND request_id = ?", (owner, request_id))

    def photo_by_sha256(self, owner: str, sha256: str) -> PhotoRecord | None:
        return self._one(self.db.connection(),
                         "SELECT * FROM photos WHERE owner = ? AND sha256 = ?", (owner, sha256))

    def get_photo(self, photo_id: str, owner: str | None = None) -> PhotoRecord | None:
        record = self._one(self.db.connection(), "SELECT * FROM photos WHERE id = ?", (photo_id,))
        if record is not None and owner is not None and record.owner != owner:
            return None
        return record

    def get_photos(self, owner: str, photo_ids: Sequence[str]) -> list[PhotoRecord]:
        if not photo_ids:
            return []
        found: dict[str, PhotoRecord] = {}
        ids = list(photo_ids)
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            # "+owner": look the ids up by key; the owner index would walk all the owner's photos.
            rows = self.db.query(f"SELECT * FROM photos WHERE +owner = ? AND id IN"
                                 f" ({', '.join('?' * len(part))})", (owner, *part))
            found.update((row["id"], _record(row)) for row in rows)
        return [found[i] for i in ids if i in found]

    def list_photos(self, owner: str, *, status: str | None = None,
                    start: dt.datetime | None = None, end: dt.datetime | None = None,
                    page_size: int = 50, after: tuple[dt.datetime, str] | None = None,
                    count_total: bool = False) -> Page:
        where, params = ["owner = ?"], [owner]
        if status:
            where.append("status = ?")
            params.append(status)
        if start is not None:
            where.append("sort_time >= ?")
            params.append(_epoch(start))
        if end is not None:
            where.append("sort_time < ?")
            params.append(_epoch(end))
        conn = self.db.connection()
        total = None
        if count_total:
            total = conn.execute(f"SELECT count(*) FROM photos WHERE {' AND '.join(where)}",
                                 params).fetchone()[0]
        if after is not None:
            sort_time, photo_id = _epoch(after[0]), after[1]
            where.append("(sort_time < ? OR (sort_time = ? AND id < ?))")
            params += [sort_time, sort_time, photo_id]
        rows = conn.execute(f"SELECT * FROM photos WHERE {' AND '.join(where)}"
                            " ORDER BY sort_time DESC, id DESC LIMIT ?",
                            (*params, page_size + 1)).fetchall()
        records = [_record(r) for r in rows[:page_size]]
        next_after = None
        if len(rows) > page_size:
            next_after = (records[-1].sort_time, records[-1].id)
        return Page(records=records, next_after=next_after, total=total)

    def update_status(self, photo_id: str, status: str | None, *, reason: str | None = "",
                      embedding_model: str | None = None, attempts: int | None = None,
                      labels: Sequence[tuple[str, float]] | None = None,
                      ocr_text: str | None = None,
                      embedding_models: Sequence[str] | None = None, text_state: str | None = None,
                      text_state_reason: str | None = None) -> PhotoRecord | None:
        changes = {"status": status, "status_reason": reason, "updated_at": _epoch(utcnow()),
                   "embedding_model": embedding_model, "index_attempts": attempts,
                   "labels": None if labels is None else json.dumps([list(label) for label in labels]),
                   "ocr_text": ocr_text,
                   "embedding_models": None if embedding_models is None else json.dumps(list(embedding_models)),
                   "text_state": text_state, "text_state_reason": text_state_reason}
        changes = {k: v for k, v in changes.items() if v is not None}
        with self.db.transaction() as conn:
            conn.execute(f"UPDATE photos SET {', '.join(f'{k} = ?' for k in changes)} WHERE id = ?",
                         (*changes.values(), photo_id))
            return self._one(conn, "SELECT * FROM photos WHERE id = ?", (photo_id,))

    def mark_published(self, photo_ids: Sequence[str]) -> None:
        ids = list(photo_ids)
        with self.db.transaction() as conn:
            for start in range(0, len(ids), 500):
                part = ids[start:start + 500]
                conn.execute(f"UPDATE photos SET published = 1 WHERE id IN ({', '.join('?' * len(part))})",
                             part)

    def mark_reindex_queued(self, photo_ids: Sequence[str], at: dt.datetime, models: Sequence[str]) -> None:
        ids = list(photo_ids)
        with self.db.transaction() as conn:
            for start in range(0, len(ids), 500):
                part = ids[start:start + 500]
                conn.execute("UPDATE photos SET reindex_queued_at = ?, reindex_queued_for = ?"
                             f" WHERE id IN ({', '.join('?' * len(part))})",
                             [at.timestamp(), json.dumps(list(models)), *part])

    def unpublished_photos(self, limit: int = 100) -> list[PhotoRecord]:
        return [_record(r) for r in self.db.query(
            "SELECT * FROM photos WHERE published = 0 ORDER BY created_at, id LIMIT ?", (limit,))]

    def delete_photo(self, photo_id: str) -> PhotoRecord | None:
        with self.db.transaction() as conn:
            record = self._one(conn, "SELECT * FROM photos WHERE id = ?", (photo_id,))
            conn.execute("DELETE FROM photos WHERE id = ?", (photo_id,))
            conn.execute("DELETE FROM upload_requests WHERE photo_id = ?", (photo_id,))
        return record
