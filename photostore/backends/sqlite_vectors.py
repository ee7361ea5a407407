"""Vectors persisted in SQLite and searched from an in-process numpy index.

Every write appends to a change log; each process keeps its index in memory and, before a search,
applies only the changes since the last one it saw. So the worker writes in one process and search
reads in another, and a restart rebuilds the index from disk.
"""
from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import numpy as np

from photostore.backends.base import SPACE_CLIP, VectorFilter, VectorObject, VectorStore
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
"""


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
        self._lock = threading.Lock()
        self._seen_seq = 0
        self._indexes: dict[str, _ModelIndex] = {}
        self._model_of: dict[tuple[str, str], str] = {}  # (photo_id, space) -> model
        self._owner_codes: dict[str, int] = {}

    # Writes
    def upsert(self, obj: VectorObject) -> None:
        self.upsert_many([obj])

    def upsert_many(self, objs) -> None:
        with self.db.transaction() as conn:
            for obj in objs:
                vector = np.asarray(obj.vector, np.float32).reshape(-1)
                seq = conn.execute("INSERT INTO changes (photo_id, space, op) VALUES (?, ?, 'upsert')",
                                   (obj.photo_id, obj.space)).lastrowid
                conn.execute("INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (obj.photo_id, obj.space, obj.owner, obj.model, vector.size,
                              vector.tobytes(),
                              None if obj.taken_at is None else obj.taken_at.timestamp(),
                              obj.camera_make, obj.camera_model, seq))

    def delete(self, photo_id: str) -> None:
        with self.db.transaction() as conn:
            spaces = conn.execute("SELECT space FROM objects WHERE photo_id = ?", (photo_id,)).fetchall()
            conn.execute("DELETE FROM objects WHERE photo_id = ?", (photo_id,))
            conn.executemany("INSERT INTO changes (photo_id, space, op) VALUES (?, ?, 'delete')",
                             [(photo_id, row["space"]) for row in spaces])

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
        rows = self.db.query("SELECT * FROM objects WHERE photo_id = ? AND space = ?", (photo_id, space))
        return self._object(rows[0]) if rows else None

    def count(self, model: str | None = None) -> int:
        if model is None:
            return self.db.query("SELECT count(*) FROM objects")[0][0]
        return self.db.query("SELECT count(*) FROM objects WHERE model = ?", (model,))[0][0]

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
            top = top[np.lexsort((rows[top], -scores[top]))]
            return [(index.ids[rows[i]], float(scores[i])) for i in top]
