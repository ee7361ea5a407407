"""Vectors persisted in SQLite and searched from an in-process numpy index.

Every write appends to a change log; each process keeps its index in memory and, before a search,
applies only the changes since the last one it saw. So the worker writes in one process and search
reads in another, and a restart rebuilds the index from disk.

Per photo, `photos` holds the filter properties and the keyword text (its words, see base.words),
indexed by an FTS5 table for keyword_search.
"""
from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from photostore.backends.base import WORD, SPACE_CLIP, VectorFilter, VectorObject, VectorStore, words
from photostore.backends.sqlite_util import SqliteDatabase

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
  photo_id TEXT NOT NULL, space TEXT NOT NULL, owner TEXT NOT NULL, model TEXT NOT NULL,
  dim INTEGER NOT NULL, vector BLOB NOT NULL, taken_at REAL, camera_make TEXT NOT NULL,
  camera_model TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (photo_id, space));
CREATE INDEX IF NOT EXISTS objects_by_seq ON objects (seq);
CREATE TABLE IF NOT EXISTS changes (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, photo_id TEXT NOT NULL, space TEXT NOT NULL,
  op TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS photos (
  id INTEGER PRIMARY KEY, photo_id TEXT NOT NULL UNIQUE, owner TEXT NOT NULL, taken_at REAL,
  camera_make TEXT NOT NULL, camera_model TEXT NOT NULL, keywords TEXT);
CREATE INDEX IF NOT EXISTS photos_by_owner ON photos (owner, taken_at);
-- rowid = photos.id; unicode61 splits words as base.words does ("_" separates, letters and digits)
CREATE VIRTUAL TABLE IF NOT EXISTS photo_keywords USING fts5(
  words, tokenize = "unicode61 remove_diacritics 0");
"""
# Vectors written before the photos table existed: their photos, with the properties of their vectors.
MIGRATE_PHOTOS = """
INSERT OR IGNORE INTO photos (photo_id, owner, taken_at, camera_make, camera_model)
  SELECT photo_id, owner, taken_at, lower(camera_make), lower(camera_model) FROM objects GROUP BY photo_id
"""
CHUNK = 500  # ids per IN (...) query


def keyword_text(text: str) -> str:
    """The keyword text as stored: its words, so FTS5 tokens and base.words agree."""
    return " ".join(WORD.findall(text.lower()))


class _ModelIndex:
    """Rows of one model's vectors with their filter properties, grown by doubling."""

    def __init__(self, dim: int):
        self.dim = dim
        self.size = 0
        self.matrix = np.zeros((64, dim), np.float32)
        self.owner = np.zeros(64, np.int64)
        self.taken = np.full(64, np.nan)
        self.camera_make = np.zeros(64, object)
        self.camera_model = np.zeros(64, object)
        self.alive = np.zeros(64, bool)
        self.ids: list[str] = []
        self.row_of: dict[str, int] = {}

    def _grow(self) -> None:
        cap = len(self.alive) * 2
        for name in ("matrix", "owner", "taken", "camera_make", "camera_model", "alive"):
            old = getattr(self, name)
            new = np.zeros((cap, *old.shape[1:]), old.dtype)
            if name == "taken":
                new[:] = np.nan
            new[: len(old)] = old
            setattr(self, name, new)

    def put(self, photo_id: str, vector: np.ndarray, owner_code: int, taken: float | None,
            camera_make: str, camera_model: str) -> None:
        row = self.row_of.get(photo_id)
        if row is None:
            if self.size == len(self.alive):
                self._grow()
            row = self.size
            self.size += 1
            self.ids.append(photo_id)
            self.row_of[photo_id] = row
        self.matrix[row] = vector
        self.owner[row] = owner_code
        self.taken[row] = np.nan if taken is None else taken
        self.camera_make[row] = camera_make.lower()
        self.camera_model[row] = camera_model.lower()
        self.alive[row] = True

    def remove(self, photo_id: str) -> None:
        row = self.row_of.pop(photo_id, None)
        if row is not None:
            self.alive[row] = False


class SqliteVectorStore(VectorStore):
    def __init__(self, path: Path):
        self.db = SqliteDatabase(path, SCHEMA)
        if not self.db.query("SELECT EXISTS (SELECT 1 FROM photos)")[0][0]:
            with self.db.transaction() as conn:
                conn.execute(MIGRATE_PHOTOS)
        self._lock = threading.Lock()
        self._seen_seq = 0
        self._indexes: dict[str, _ModelIndex] = {}
        self._model_of: dict[tuple[str, str], str] = {}  # (photo_id, space) -> model
        self._owner_codes: dict[str, int] = {}

    # Writes
    def upsert(self, obj: VectorObject) -> None:
        self.upsert_many([obj])

    def upsert_many(self, objs: Sequence[VectorObject]) -> None:
        with self.db.transaction() as conn:
            for obj in objs:
                taken = None if obj.taken_at is None else obj.taken_at.timestamp()
                self._write_photo(conn, obj, taken)
                if obj.vector is None:
                    continue
                vector = np.asarray(obj.vector, np.float32).reshape(-1)
                seq = self._log(conn, obj.photo_id, obj.space, "upsert")
                conn.execute("INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (obj.photo_id, obj.space, obj.owner, obj.model, vector.size,
                              vector.tobytes(), taken, obj.camera_make, obj.camera_model, seq))

    @staticmethod
    def _log(conn, photo_id: str, space: str, op: str) -> int:
        return conn.execute("INSERT INTO changes (photo_id, space, op) VALUES (?, ?, ?)",
                            (photo_id, space, op)).lastrowid

    def _write_photo(self, conn, obj: VectorObject, taken: float | None) -> None:
        """The photo's properties (and keywords, when given); its vectors in other spaces take the
        new properties too, as one Weaviate object would."""
        make, model = obj.camera_make.lower(), obj.camera_model.lower()
        row = conn.execute("INSERT INTO photos (photo_id, owner, taken_at, camera_make, camera_model) "
                           "VALUES (?, ?, ?, ?, ?) ON CONFLICT (photo_id) DO UPDATE SET owner = excluded.owner, "
                           "taken_at = excluded.taken_at, camera_make = excluded.camera_make, "
                           "camera_model = excluded.camera_model RETURNING id",
                           (obj.photo_id, obj.owner, taken, make, model)).fetchone()
        if obj.keywords is not None:
            text = keyword_text(obj.keywords)
            conn.execute("UPDATE photos SET keywords = ? WHERE id = ?", (text, row["id"]))
            conn.execute("DELETE FROM photo_keywords WHERE rowid = ?", (row["id"],))
            conn.execute("INSERT INTO photo_keywords (rowid, words) VALUES (?, ?)", (row["id"], text))
        stale = conn.execute("SELECT space FROM objects WHERE photo_id = ? AND space != ? AND NOT "
                             "(owner = ? AND taken_at IS ? AND camera_make = ? AND camera_model = ?)",
                             (obj.photo_id, obj.space if obj.vector is not None else "", obj.owner, taken,
                              obj.camera_make, obj.camera_model)).fetchall()
        for stale_row in stale:
            seq = self._log(conn, obj.photo_id, stale_row["space"], "upsert")
            conn.execute("UPDATE objects SET owner = ?, taken_at = ?, camera_make = ?, camera_model = ?, "
                         "seq = ? WHERE photo_id = ? AND space = ?",
                         (obj.owner, taken, obj.camera_make, obj.camera_model, seq, obj.photo_id,
                          stale_row["space"]))

    def delete(self, photo_id: str) -> None:
        with self.db.transaction() as conn:
            spaces = conn.execute("SELECT space FROM objects WHERE photo_id = ?", (photo_id,)).fetchall()
            conn.execute("DELETE FROM objects WHERE photo_id = ?", (photo_id,))
            conn.executemany("INSERT INTO changes (photo_id, space, op) VALUES (?, ?, 'delete')",
                             [(photo_id, row["space"]) for row in spaces])
            row = conn.execute("DELETE FROM photos WHERE photo_id = ? RETURNING id", (photo_id,)).fetchone()
            if row is not None:
                conn.execute("DELETE FROM photo_keywords WHERE rowid = ?", (row["id"],))

    # Reads
    @staticmethod
    def _object(row) -> VectorObject:
        return VectorObject(
            photo_id=row["photo_id"], owner=row["owner"], model=row["model"],
            vector=np.frombuffer(row["vector"], np.float32).copy(),
            taken_at=None if row["taken_at"] is None else dt.datetime.fromtimestamp(
                row["taken_at"], dt.timezone.utc),
            camera_make=row["camera_make"], camera_model=row["camera_model"], space=row["space"])

    def get(self, photo_id: str, space: str = SPACE_CLIP) -> VectorObject | None:
        return self.get_many([photo_id], space).get(photo_id)

    def get_many(self, photo_ids: Sequence[str], space: str = SPACE_CLIP) -> dict[str, VectorObject]:
        found: dict[str, VectorObject] = {}
        ids = list(dict.fromkeys(photo_ids))
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i:i + CHUNK]
            rows = self.db.query(
                "SELECT o.*, p.keywords FROM objects o LEFT JOIN photos p ON p.photo_id = o.photo_id "
                f"WHERE o.space = ? AND o.photo_id IN ({','.join('?' * len(chunk))})", (space, *chunk))
            for row in rows:
                obj = self._object(row)
                obj.keywords = row["keywords"]
                found[obj.photo_id] = obj
        return found

    def count(self, model: str | None = None) -> int:
        """Photos with a vector of `model` (in any space), or all photos in the index."""
        if model is None:
            return self.db.query("SELECT count(*) FROM photos")[0][0]
        return self.db.query("SELECT count(DISTINCT photo_id) FROM objects WHERE model = ?", (model,))[0][0]

    def keyword_search(self, flt: VectorFilter, terms: Sequence[str], limit: int = 200
                       ) -> list[tuple[str, list[str]]]:
        terms = [t for t in dict.fromkeys(t.lower() for t in terms) if WORD.fullmatch(t)]
        if not terms or limit <= 0:
            return []
        sql = ("SELECT p.photo_id, p.keywords, bm25(photo_keywords) AS rank FROM photo_keywords "
               "JOIN photos p ON p.id = photo_keywords.rowid WHERE photo_keywords MATCH ? AND p.owner = ?")
        params: list = [" OR ".join(f'"{t}"' for t in terms), flt.owner]
        if flt.start is not None:
            sql += " AND p.taken_at >= ?"
            params.append(flt.start.timestamp())
        if flt.end is not None:
            sql += " AND p.taken_at < ?"
            params.append(flt.end.timestamp())
        if flt.camera_make:
            sql += " AND p.camera_make = ?"
            params.append(flt.camera_make.lower())
        if flt.camera_model:
            sql += " AND p.camera_model = ?"
            params.append(flt.camera_model.lower())
        ranked = []
        for row in self.db.query(sql, params):
            present = words(row["keywords"] or "")
            found = [t for t in terms if t in present]
            if found:  # bm25(): lower is better
                ranked.append((-len(found), row["rank"], row["photo_id"], found))
        ranked.sort(key=lambda r: r[:3])
        return [(photo_id, found) for _, _, photo_id, found in ranked[:limit]]

    def describe(self) -> str:
        return f"embedded (SQLite + exact numpy search) at {self.db.path}"

    def _owner_code(self, owner: str) -> int:
        return self._owner_codes.setdefault(owner, len(self._owner_codes) + 1)

    def _refresh(self) -> None:
        """Applies changes written (by any process) since the last refresh."""
        latest = self.db.query("SELECT max(seq) FROM changes")[0][0] or 0
        if latest <= self._seen_seq:
            return
        conn = self.db.connection()
        conn.execute("BEGIN")  # one snapshot for both reads
        try:
            deleted = conn.execute("SELECT photo_id, space FROM changes WHERE seq > ? AND op = 'delete'",
                                   (self._seen_seq,)).fetchall()
            upserted = conn.execute("SELECT * FROM objects WHERE seq > ? AND seq <= ?",
                                    (self._seen_seq, latest)).fetchall()
        finally:
            conn.execute("COMMIT")
        for row in deleted:
            model = self._model_of.pop((row["photo_id"], row["space"]), None)
            if model is not None:
                self._indexes[model].remove(row["photo_id"])
        for row in upserted:
            obj = self._object(row)
            key = (obj.photo_id, obj.space)
            previous = self._model_of.get(key)
            if previous is not None and previous != obj.model:
                self._indexes[previous].remove(obj.photo_id)
            index = self._indexes.setdefault(obj.model, _ModelIndex(obj.vector.size))
            index.put(obj.photo_id, obj.vector, self._owner_code(obj.owner),
                      row["taken_at"], obj.camera_make, obj.camera_model)
            self._model_of[key] = obj.model
        self._seen_seq = latest

    def search(self, vector, model: str, flt: VectorFilter, limit: int,
               min_score: float = -1.0) -> list[tuple[str, float]]:
        query = np.asarray(vector, np.float32).reshape(-1)
        with self._lock:
            self._refresh()
            index = self._indexes.get(model)
            if index is None or index.size == 0 or limit <= 0:
                return []
            if query.size != index.dim:
                raise ValueError(f"query has {query.size} dimensions, model {model} has {index.dim}")
            n = index.size
            mask = index.alive[:n] & (index.owner[:n] == self._owner_codes.get(flt.owner, -1))
            if flt.start is not None:
                mask &= index.taken[:n] >= flt.start.timestamp()
            if flt.end is not None:
                mask &= index.taken[:n] < flt.end.timestamp()
            if flt.camera_make:
                mask &= index.camera_make[:n] == flt.camera_make.lower()
            if flt.camera_model:
                mask &= index.camera_model[:n] == flt.camera_model.lower()
            rows = np.flatnonzero(mask)
            if rows.size == 0:
                return []
            scores = (index.matrix[:n] @ query)[rows]
            keep = scores >= min_score
            rows, scores = rows[keep], scores[keep]
            k = min(limit, rows.size)
            top = np.argpartition(-scores, k - 1)[:k] if k < rows.size else np.arange(rows.size)
            hits = [(index.ids[rows[i]], float(scores[i])) for i in top]
            return sorted(hits, key=lambda hit: (-hit[1], hit[0]))  # ties by photo id
