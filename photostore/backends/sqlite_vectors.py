"""Vectors persisted in SQLite and searched from an in-process numpy matrix plus a faiss HNSW index.

Every write appends to a change log; each process keeps its index in memory and, before a search,
applies only the changes since the last one it saw. So the worker writes in one process and search
reads in another, and a restart reloads the index from disk.

Search: filtered candidate sets smaller than `exact_below` rows are scanned exactly; larger ones go
through the model's ANN index (built once the model has `exact_below` vectors) with the filter as a
faiss IDSelector, oversampled and re-ranked against the float32 vectors, so scores are exact; when
the graph search finds too few matching rows the search falls back to the exact scan. BLAS threads
are left as they are: the ANN path does one small gather + matrix product per search.

The ANN index is saved next to the SQLite file (<file>.<model hash>.ann, with the change-log seq it
covers) by the processes that search (they build it): after a build, after many additions and on
close. Writes are atomic (temp file + os.replace) and serialised by a lock file; a process only
replaces a file covering fewer changes. At start a valid file is loaded and caught up from the log;
a missing, corrupt or mismatching one is rebuilt.

Per photo, `photos` holds the filter properties and the keyword text (its words, see base.words),
indexed by an FTS5 table for keyword_search.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from photostore.backends.ann_index import AnnIndex
from photostore.backends.base import WORD, SPACE_CLIP, VectorFilter, VectorObject, VectorStore, words
from photostore.backends.sqlite_util import SqliteDatabase
from photostore.settings import Settings

log = logging.getLogger(__name__)
_DEFAULTS = Settings.model_fields

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
-- rowid = photos.id; unicode61 splits words as base.words does ("_" separates, letters and digits);
-- owner holds one token per owner (owner_token), so the match is cut to the owner's photos early.
CREATE VIRTUAL TABLE IF NOT EXISTS photo_words USING fts5(
  words, owner, tokenize = "unicode61 remove_diacritics 0");
"""
# Vectors written before the photos table existed: their photos, with the properties of their vectors.
MIGRATE_PHOTOS = """
INSERT OR IGNORE INTO photos (photo_id, owner, taken_at, camera_make, camera_model)
  SELECT photo_id, owner, taken_at, lower(camera_make), lower(camera_model) FROM objects GROUP BY photo_id
"""
CHUNK = 500  # ids per IN (...) query
OVERSAMPLE = 4  # ANN candidates per hit wanted, re-ranked exactly
MIN_CANDIDATES = 100
MAX_EF_FACTOR = 16  # at most this much wider an HNSW search for a narrow filter
SAVE_EVERY = 10_000  # rows added to an ANN index before it is saved again (or a tenth of it)


def owner_token(owner: str) -> str:
    """The owner as one full-text token (any owner string, no collisions in practice)."""
    return "o" + hashlib.blake2b(owner.encode(), digest_size=12).hexdigest()


def keyword_text(text: str) -> str:
    """The keyword text as stored: its words, so FTS5 tokens and base.words agree."""
    return " ".join(WORD.findall(text.lower()))


class _ModelIndex:
    """Rows of one model's vectors with their filter properties, grown by doubling, and the ANN
    index over them. A vector never changes in place: a new vector takes a new row, the old one
    dies (so ANN ids, which are rows, stay valid) until `compacted`."""

    def __init__(self, dim: int, capacity: int = 64):
        self.dim = dim
        self.size = 0
        self.matrix = np.zeros((capacity, dim), np.float32)
        self.owner = np.zeros(capacity, np.int64)
        self.taken = np.full(capacity, np.nan)
        self.camera_make = np.zeros(capacity, object)
        self.camera_model = np.zeros(capacity, object)
        self.alive = np.zeros(capacity, bool)
        self.ids: list[str | None] = []
        self.row_of: dict[str, int] = {}
        self.ann: AnnIndex | None = None
        self.building = False
        self.saved_size = 0  # rows in the ANN when it was last saved

    @property
    def dead(self) -> int:
        return self.size - len(self.row_of)

    def _grow(self, capacity: int) -> None:
        for name in ("matrix", "owner", "taken", "camera_make", "camera_model", "alive"):
            old = getattr(self, name)
            new = np.zeros((capacity, *old.shape[1:]), old.dtype)
            if name == "taken":
                new[:] = np.nan
            new[: len(old)] = old
            setattr(self, name, new)

    def put(self, photo_id: str, vector: np.ndarray, owner_code: int, taken: float | None,
            camera_make: str, camera_model: str, row: int | None = None) -> None:
        """Adds or replaces the photo's vector (at `row` of a loaded layout, when given)."""
        old = self.row_of.get(photo_id)
        if old is not None and not np.array_equal(self.matrix[old], vector):
            self.remove(photo_id)
            old = None
        if row is None:
            row = old
        if row is None:
            if self.size == len(self.alive):
                self._grow(len(self.alive) * 2)
            row = self.size
            self.size += 1
            self.ids.append(photo_id)
        self.ids[row] = photo_id
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
            self.ids[row] = None

    @classmethod
    def with_layout(cls, dim: int, row_ids: list[str | None], ann: AnnIndex) -> _ModelIndex:
        """Empty rows laid out as a saved ANN index has them, to be filled by put(row=...)."""
        index = cls(dim, max(64, len(row_ids)))
        index.size = len(row_ids)
        index.ids = [None] * len(row_ids)
        index.ann = ann
        index.saved_size = ann.size
        return index

    def compacted(self) -> _ModelIndex:
        """The live rows only, renumbered, without an ANN index."""
        rows = np.flatnonzero(self.alive[: self.size])
        index = _ModelIndex(self.dim, max(64, len(rows)))
        index.size = len(rows)
        for name in ("matrix", "owner", "taken", "camera_make", "camera_model", "alive"):
            getattr(index, name)[: len(rows)] = getattr(self, name)[rows]
        index.ids = [self.ids[row] for row in rows]
        index.row_of = {photo_id: row for row, photo_id in enumerate(index.ids)}
        return index


class SqliteVectorStore(VectorStore):
    """exact_below: filtered candidate sets (and models) smaller than this are scanned exactly;
    ef_search: HNSW search breadth; background_build: build ANN indexes in a thread, searching
    exactly meanwhile (else in the search that needs one)."""

    def __init__(self, path: Path, exact_below: int = _DEFAULTS["vector_exact_below"].default,
                 ef_search: int = _DEFAULTS["vector_ann_ef_search"].default, background_build: bool = True):
        self.db = SqliteDatabase(path, SCHEMA)
        self.exact_below = exact_below
        self.ef_search = ef_search
        self.background_build = background_build
        self._builders: list[threading.Thread] = []
        if not self.db.query("SELECT EXISTS (SELECT 1 FROM photos)")[0][0]:
            with self.db.transaction() as conn:
                conn.execute(MIGRATE_PHOTOS)
        self._migrate_keywords()
        self._lock = threading.Lock()
        self._seen_seq = 0
        self._indexes: dict[str, _ModelIndex] = {}
        self._model_of: dict[tuple[str, str], str] = {}  # (photo_id, space) -> model
        self._owner_codes: dict[str, int] = {}

    def _migrate_keywords(self) -> None:
        """Keywords indexed before the owner joined the full-text table (photo_keywords, one
        column) move to photo_words."""
        moved = "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'photo_keywords')"
        if not self.db.query(moved)[0][0]:
            return
        with self.db.transaction() as conn:
            if not conn.execute(moved).fetchone()[0]:  # another process moved them meanwhile
                return
            rows = conn.execute("SELECT id, keywords, owner FROM photos WHERE keywords IS NOT NULL").fetchall()
            conn.execute("DELETE FROM photo_words")
            conn.executemany("INSERT INTO photo_words (rowid, words, owner) VALUES (?, ?, ?)",
                             ((r["id"], r["keywords"], owner_token(r["owner"])) for r in rows))
            conn.execute("DROP TABLE photo_keywords")
        log.info("moved the keywords of %d photos to the owner-keyed full-text table", len(rows))

    def close(self) -> None:
        """Waits for index builds; saves the ANN indexes this process extended since their last save."""
        self.wait_for_index()
        with self._lock:
            pending = [(model, self._snapshot(index)) for model, index in self._indexes.items()
                       if index.ann is not None and index.ann.size > index.saved_size]
        for model, snapshot in pending:
            self._save(model, *snapshot)

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
        token = owner_token(obj.owner)
        if obj.keywords is not None:
            text = keyword_text(obj.keywords)
            conn.execute("UPDATE photos SET keywords = ? WHERE id = ?", (text, row["id"]))
            conn.execute("DELETE FROM photo_words WHERE rowid = ?", (row["id"],))
            conn.execute("INSERT INTO photo_words (rowid, words, owner) VALUES (?, ?, ?)",
                         (row["id"], text, token))
        else:
            conn.execute("UPDATE photo_words SET owner = ? WHERE rowid = ? AND owner != ?",
                         (token, row["id"], token))
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
                conn.execute("DELETE FROM photo_words WHERE rowid = ?", (row["id"],))

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
        """The owner's photos with the most of `terms`, newest first among equals. The newest
        `limit` photos with all the terms and the newest `limit` with any are read (full-text
        matches walked from the newest, cut at `limit`), so a common word never costs a pass over
        every photo that has it."""
        terms = [t for t in dict.fromkeys(t.lower() for t in terms) if WORD.fullmatch(t)]
        if not terms or limit <= 0:
            return []
        owner = f"owner : {owner_token(flt.owner)}"
        quoted = [f'"{t}"' for t in terms]
        matches = [f"{owner} AND words : ({' OR '.join(quoted)})"]
        if len(terms) > 1:
            matches.insert(0, f"{owner} AND words : ({' AND '.join(quoted)})")
        # The full-text match is the outer loop (CROSS JOIN), walked in rowid order so LIMIT stops it.
        sql, filters = "SELECT k.rowid, k.words, p.photo_id FROM photo_words k CROSS JOIN photos p " \
                       "ON p.id = k.rowid WHERE photo_words MATCH ?", []
        if flt.start is not None:
            sql += " AND p.taken_at >= ?"
            filters.append(flt.start.timestamp())
        if flt.end is not None:
            sql += " AND p.taken_at < ?"
            filters.append(flt.end.timestamp())
        if flt.camera_make:
            sql += " AND p.camera_make = ?"
            filters.append(flt.camera_make.lower())
        if flt.camera_model:
            sql += " AND p.camera_model = ?"
            filters.append(flt.camera_model.lower())
        sql += " ORDER BY k.rowid DESC LIMIT ?"
        found: dict[int, tuple[str, list[str]]] = {}
        for match in matches:
            for row in self.db.query(sql, [match, *filters, limit]):
                if row["rowid"] not in found:
                    present = words(row["words"])
                    found[row["rowid"]] = (row["photo_id"], [t for t in terms if t in present])
        ranked = sorted(found.items(), key=lambda item: (-len(item[1][1]), -item[0]))
        return [hit for _, hit in ranked[:limit]]

    def describe(self) -> str:
        return f"embedded (SQLite + faiss HNSW, exact below {self.exact_below} rows) at {self.db.path}"

    def _owner_code(self, owner: str) -> int:
        return self._owner_codes.setdefault(owner, len(self._owner_codes) + 1)

    def _refresh(self) -> None:
        """Applies changes written (by any process) since the last refresh, then keeps the ANN
        indexes in step. The first refresh starts from the saved ANN indexes where they are valid."""
        latest = self.db.query("SELECT max(seq) FROM changes")[0][0] or 0
        if latest > self._seen_seq:
            conn = self.db.connection()
            conn.execute("BEGIN")  # one snapshot for both reads
            try:
                deleted = conn.execute("SELECT photo_id, space FROM changes WHERE seq > ? AND op = 'delete'",
                                       (self._seen_seq,)).fetchall()
                upserted = conn.execute("SELECT * FROM objects WHERE seq > ? AND seq <= ?",
                                        (self._seen_seq, latest)).fetchall()
            finally:
                conn.execute("COMMIT")
            saved_rows = self._load_saved(upserted) if self._seen_seq == 0 else {}
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
                index.put(obj.photo_id, obj.vector, self._owner_code(obj.owner), row["taken_at"],
                          obj.camera_make, obj.camera_model, saved_rows.get((obj.model, obj.photo_id, row["seq"])))
                self._model_of[key] = obj.model
            self._seen_seq = latest
        for model in list(self._indexes):
            self._maintain(model)

    def _ann_path(self, model: str) -> Path:
        return self.db.path.with_name(f"{self.db.path.name}.{hashlib.sha1(model.encode()).hexdigest()[:16]}.ann")

    def _load_saved(self, objects) -> dict[tuple[str, str, int], int]:
        """Sets up the models whose saved ANN index matches the database: {(model, photo_id, seq):
        row} for the objects it covers; objects written later are added on top."""
        by_model: dict[str, list] = {}
        for row in objects:
            by_model.setdefault(row["model"], []).append(row)
        placed: dict[tuple[str, str, int], int] = {}
        for model, rows in by_model.items():
            path = self._ann_path(model)
            if not path.exists():
                continue
            try:
                ann, saved_seq, row_ids = AnnIndex.load(path)
            except (OSError, ValueError, RuntimeError) as e:  # faiss raises RuntimeError
                log.warning("rebuilding the ANN index of %s: %s", model, e)
                continue
            row_of = {photo_id: r for r, photo_id in enumerate(row_ids) if photo_id is not None}
            covered = {(model, row["photo_id"], row["seq"]): row_of.get(row["photo_id"])
                       for row in rows if row["seq"] <= saved_seq}
            if None in covered.values() or not self._matches(ann, covered.values(), rows, saved_seq):
                log.warning("rebuilding the ANN index of %s: %s does not match the database", model, path)
                continue
            self._indexes[model] = _ModelIndex.with_layout(ann.index.d, row_ids, ann)
            placed.update(covered)
        return placed

    @staticmethod
    def _matches(ann: AnnIndex, rows_covered, objects, saved_seq: int, sample: int = 32) -> bool:
        """Whether a sample of the saved vectors are those in the database (SQ8 error aside)."""
        covered = [obj for obj in objects if obj["seq"] <= saved_seq][:sample]
        for obj, row in zip(covered, rows_covered):
            saved = ann.index.reconstruct(int(row))
            if saved.size != obj["dim"] or np.abs(saved - np.frombuffer(obj["vector"], np.float32)).max() > 0.05:
                return False
        return True

    def _maintain(self, model: str) -> None:
        """Compacts when dead rows pile up, extends the ANN index with new rows, builds one when a
        model outgrows exact search, and saves it after many additions."""
        index = self._indexes[model]
        if index.dead > max(1024, index.size // 4) and not index.building:
            index = self._indexes[model] = index.compacted()
        if index.ann is not None:
            if index.ann.size < index.size:
                index.ann.add(index.matrix[index.ann.size: index.size])
            if index.ann.size - index.saved_size >= max(SAVE_EVERY, index.saved_size // 10):
                self._start(self._save, model, *self._snapshot(index))
        elif len(index.row_of) >= self.exact_below and not index.building:
            index.building = True
            if self.background_build:
                self._start(self._build, model, index, index.size)
            else:
                self._build(model, index, index.size, locked=True)

    def _start(self, task, *args) -> None:
        """Runs `task` in a thread (or now, without background_build)."""
        if not self.background_build:
            task(*args)
            return
        self._builders = [t for t in self._builders if t.is_alive()]
        thread = threading.Thread(target=task, args=args, name=f"ann-{task.__name__}", daemon=True)
        self._builders.append(thread)
        thread.start()

    def wait_for_index(self) -> None:
        """Waits for the ANN builds and saves under way."""
        for thread in list(self._builders):
            thread.join()

    def _build(self, model: str, index: _ModelIndex, rows: int, locked: bool = False) -> None:
        """Builds the ANN index over the first `rows` rows (never changed later, see _ModelIndex),
        then installs it with the rows added meanwhile, and saves it."""
        started = time.perf_counter()
        ann = AnnIndex.build(index.matrix[:rows])
        with contextlib.nullcontext() if locked else self._lock:
            index.building = False
            if self._indexes.get(model) is not index:  # compacted meanwhile
                return
            ann.add(index.matrix[rows: index.size])
            index.ann = ann
            snapshot = self._snapshot(index)
        log.info("built the ANN index of %s (%d rows) in %.1fs", model, rows, time.perf_counter() - started)
        self._save(model, *snapshot)

    def _snapshot(self, index: _ModelIndex) -> tuple[int, list[bytes]]:
        """(rows, file contents) of the index as of now; call with the lock held."""
        index.saved_size = index.ann.size
        return index.ann.size, index.ann.snapshot(self._seen_seq, index.ids[: index.ann.size])

    def _save(self, model: str, rows: int, snapshot: list[bytes]) -> None:
        """Writes the file unless another process is writing it or it already covers as much;
        os.replace makes each write all-or-nothing for readers."""
        path = self._ann_path(model)
        seq = json.loads(snapshot[0])["seq"]
        with open(path.with_name(path.name + ".lock"), "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            if AnnIndex.saved_seq(path) < seq:
                AnnIndex.save(path, snapshot)
                log.info("saved the ANN index of %s (%d rows, seq %d) to %s", model, rows, seq, path)

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
            matching = int(np.count_nonzero(mask))
            if matching == 0:
                return []
            rows = None
            if index.ann is not None and matching >= self.exact_below:
                rows = self._ann_candidates(index, query, mask, matching, limit)
            if rows is None:
                rows = np.flatnonzero(mask)
            scores = index.matrix[rows] @ query if rows.size < n // 4 else (index.matrix[:n] @ query)[rows]
            keep = scores >= min_score
            rows, scores = rows[keep], scores[keep]
            k = min(limit, rows.size)
            top = np.argpartition(-scores, k - 1)[:k] if k < rows.size else np.arange(rows.size)
            hits = [(index.ids[rows[i]], float(scores[i])) for i in top]
            return sorted(hits, key=lambda hit: (-hit[1], hit[0]))  # ties by photo id

    def scores(self, vector, model: str, space: str, photo_ids: Sequence[str]) -> dict[str, float]:
        """From the vectors held in memory for search (no read of the database)."""
        query = np.asarray(vector, np.float32).reshape(-1)
        query = query / (np.linalg.norm(query) or 1.0)
        with self._lock:
            self._refresh()
            index = self._indexes.get(model)
            if index is None:
                return {}
            found = [(photo_id, index.row_of[photo_id]) for photo_id in dict.fromkeys(photo_ids)
                     if self._model_of.get((photo_id, space)) == model and photo_id in index.row_of]
            if not found:
                return {}
            stored = index.matrix[[row for _, row in found]]
        norms = np.linalg.norm(stored, axis=1)
        values = stored @ query / np.where(norms == 0, 1.0, norms)
        return {photo_id: float(value) for (photo_id, _), value in zip(found, values)}

    def _ann_candidates(self, index: _ModelIndex, query: np.ndarray, mask: np.ndarray, matching: int,
                        limit: int) -> np.ndarray | None:
        """Rows of the ANN's best matches within `mask`, oversampled for the exact re-rank; None
        when too few turn up (a narrow filter the graph search starves on): scan exactly then."""
        k = min(matching, max(OVERSAMPLE * limit, MIN_CANDIDATES))
        breadth = min(MAX_EF_FACTOR, index.size / matching)  # a narrow filter needs a wider search
        rows = index.ann.search(query, k, mask, int(self.ef_search * breadth))
        return rows if rows.size >= min(limit, matching) else None
