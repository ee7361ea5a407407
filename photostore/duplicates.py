"""Near-duplicate photos: perceptual hashes, their distances, and groups of photos that look alike.

A photo's hash is imagehash's pHash: the signs of the 8x8 lowest frequencies of the DCT of a 32x32
grey copy, 64 bits stored as 16 hex digits. Re-saving, resizing and slight crops change few bits;
different pictures differ in about half of them (docs/ARCHITECTURE.md has the measured figures that
set `near_duplicate_max_distance`). Hashes are compared as uint64 with a popcount of their XOR:
numpy for one photo against all of an owner's, faiss's binary range search for all pairs.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import logging
import queue
import threading
import time
from typing import Iterable, Sequence

import imagehash
import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from photostore.backends.base import (
    SPACE_CLIP,
    BackendUnavailableError,
    BlobNotFoundError,
    BlobStore,
    MetadataStore,
    PhotoFacts,
    PhotoFilter,
    PhotoRecord,
    VectorStore,
)

log = logging.getLogger(__name__)

HASH_SIZE = 8  # 8x8 DCT signs: 64 bits
HASH_HEX_DIGITS = HASH_SIZE * HASH_SIZE // 4
# Rows of vectors compared against all others at once when pairing by cosine.
COSINE_BLOCK = 1024
# Similar photos an upload answers with, nearest first.
MAX_SIMILAR = 10
# Owners whose groups are kept, and for how long (new CLIP vectors show after this).
GROUP_CACHE_OWNERS = 32
GROUP_CACHE_S = 60.0
# Owners whose hashes an upload compares against are kept this long (then read again: photos
# uploaded through other replicas show after it), and how many owners.
HASH_CACHE_S = 30.0
HASH_CACHE_OWNERS = 8
# Grey-level standard deviation (of 255) below which an image counts as one colour: not hashed.
FLAT_MAX_STD = 2.0
# Photos read per backfill batch.
BACKFILL_BATCH = 100


def phash(img: Image.Image) -> str:
    """The perceptual hash of a decoded image (any size or mode) as 16 hex digits; "" for an image
    of (nearly) one colour, whose hash says nothing about it (all such images hash alike)."""
    grey = img.convert("L").resize((HASH_SIZE * 4, HASH_SIZE * 4), Image.Resampling.LANCZOS)
    if np.asarray(grey, dtype=np.float32).std() < FLAT_MAX_STD:
        return ""
    return str(imagehash.phash(grey, hash_size=HASH_SIZE))


def phash_of(data: bytes) -> str:
    """The perceptual hash of encoded image bytes (a stored thumbnail or model copy)."""
    with Image.open(io.BytesIO(data)) as img:
        return phash(img)


def to_uint64(hashes: Iterable[str]) -> np.ndarray:
    """Hex hashes as uint64 (one per hash, in order)."""
    return np.fromiter((int(h, 16) for h in hashes), dtype=np.uint64)


def distance(a: str, b: str) -> int:
    """Bits that differ between two hex hashes (Hamming distance, 0 to 64)."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def distances(query: str, hashes: np.ndarray) -> np.ndarray:
    """Hamming distance of `query` (hex) to each of `hashes` (uint64)."""
    return np.bitwise_count(hashes ^ np.uint64(int(query, 16)))


def similar_to(query: str, facts: Sequence[PhotoFacts], max_distance: int,
               exclude: str = "") -> list[tuple[PhotoFacts, int]]:
    """(photo, distance) of the photos whose hash is within max_distance of `query`, nearest
    first; photos without a hash and `exclude` (an id) are left out."""
    hashed = [f for f in facts if f.phash and f.id != exclude]
    if not hashed:
        return []
    d = distances(query, to_uint64(f.phash for f in hashed))
    near = np.flatnonzero(d <= max_distance)
    return sorted(((hashed[i], int(d[i])) for i in near), key=lambda pair: (pair[1], pair[0].id))


def phash_pairs(hashes: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j), i != j, of hashes within max_distance of each other (both ways)."""
    from photostore.backends.ann_index import faiss  # loaded there, its loader's noise quieted

    if len(hashes) < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    codes = np.ascontiguousarray(hashes, dtype=np.uint64).view(np.uint8).reshape(-1, 8)
    index = faiss.IndexBinaryFlat(HASH_SIZE * HASH_SIZE)
    index.add(codes)
    lims, _, found = index.range_search(codes, max_distance + 1)  # finds distance < radius
    queries = np.repeat(np.arange(len(hashes)), np.diff(lims).astype(np.int64))
    keep = queries != found
    return queries[keep], found[keep].astype(np.int64)


def cosine_pairs(vectors: np.ndarray, min_cosine: float) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j), i < j, of L2-normalised rows whose cosine is at least min_cosine."""
    rows, cols = [], []
    for start in range(0, len(vectors), COSINE_BLOCK):
        block = vectors[start:start + COSINE_BLOCK] @ vectors.T
        i, j = np.nonzero(block >= min_cosine)
        i = i + start
        upper = i < j
        rows.append(i[upper])
        cols.append(j[upper])
    if not rows:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(rows), np.concatenate(cols)


def keep_order_key(f: PhotoFacts):
    """The photo to keep first: most pixels, then oldest upload, then id."""
    return (-(f.width * f.height), f.created_at, f.id)


@dataclasses.dataclass
class Group:
    photos: list[PhotoFacts]  # the one to keep first

    @property
    def newest(self) -> PhotoFacts:
        """The most recently uploaded member: where the group sorts in a listing."""
        return max(self.photos, key=lambda f: (f.created_at, f.id))


def group(facts: Sequence[PhotoFacts], max_distance: int,
          vector_pairs: tuple[np.ndarray, np.ndarray] | None = None) -> list[Group]:
    """Groups of two or more of `facts` connected by a phash distance of at most max_distance,
    or by `vector_pairs` (index pairs into `facts`); each in keep-first order, the groups by their
    newest upload, newest first."""
    hashed = np.array([i for i, f in enumerate(facts) if f.phash], dtype=np.int64)
    i, j = phash_pairs(to_uint64(facts[k].phash for k in hashed), max_distance)
    i, j = hashed[i], hashed[j]
    if vector_pairs is not None:
        i, j = np.concatenate([i, vector_pairs[0]]), np.concatenate([j, vector_pairs[1]])
    n = len(facts)
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    members: dict[int, list[PhotoFacts]] = {}
    for k in np.unique(np.concatenate([i, j])):
        members.setdefault(int(labels[k]), []).append(facts[k])
    groups = [Group(sorted(m, key=keep_order_key)) for m in members.values() if len(m) > 1]
    groups.sort(key=lambda g: (g.newest.created_at, g.newest.id), reverse=True)
    return groups


def facts_digest(facts: Sequence[PhotoFacts]) -> str:
    """Changes whenever a photo comes, goes or gets its hash."""
    digest = hashlib.sha256()
    for f in sorted(facts, key=lambda f: f.id):
        digest.update(f"{f.id}:{f.phash};".encode())
    return digest.hexdigest()


class DuplicateFinder:
    """An owner's near-duplicates, read from the metadata store (every replica sees the same), the
    groups cached per owner while the owner's photos stay the same; and the lazy backfill of
    hashes for photos stored before hashes were made."""

    def __init__(self, metadata: MetadataStore, vectors: VectorStore, blobs: BlobStore, *,
                 max_distance: int, min_cosine: float, clip_max_photos: int):
        self._metadata = metadata
        self._vectors = vectors
        self._blobs = blobs
        self.max_distance = max_distance
        self.min_cosine = min_cosine
        self.clip_max_photos = clip_max_photos
        self._groups: collections.OrderedDict[str, tuple[str, float, list[Group]]] = collections.OrderedDict()
        self._hashes: collections.OrderedDict[str, tuple[float, list[str], np.ndarray]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._backfill_queue: queue.Queue[str] = queue.Queue()
        self._queued: set[str] = set()
        self._unhashable: set[str] = set()  # photos without copy or thumbnail, or of one colour

    def similar(self, record: PhotoRecord) -> list[str]:
        """Ids of the owner's photos that look like `record` (just stored), nearest first. The
        owner's hashes are read once per HASH_CACHE_S and the uploads of this process added to
        them, so a bulk import does not read them per photo; callers drop photos trashed since."""
        if not record.phash:
            return []
        with self._lock:
            cached = self._hashes.get(record.owner)
        if cached is None or time.monotonic() - cached[0] > HASH_CACHE_S:
            facts = [f for f in self._facts(record.owner) if f.phash]
            cached = (time.monotonic(), [f.id for f in facts], to_uint64(f.phash for f in facts))
        loaded_at, ids, hashes = cached
        d = distances(record.phash, hashes)
        near = sorted((int(d[k]), ids[k]) for k in np.flatnonzero(d <= self.max_distance)
                      if ids[k] != record.id)
        if record.id not in ids:
            ids, hashes = ids + [record.id], np.append(hashes, to_uint64([record.phash]))
        with self._lock:
            self._hashes[record.owner] = (loaded_at, ids, hashes)
            self._hashes.move_to_end(record.owner)
            while len(self._hashes) > HASH_CACHE_OWNERS:
                self._hashes.popitem(last=False)
        return [photo_id for _, photo_id in near[:MAX_SIMILAR]]

    def groups(self, owner: str) -> list[Group]:
        """The owner's groups of photos that look alike (not in the trash), newest group first."""
        facts = self._facts(owner)
        digest = facts_digest(facts)
        with self._lock:
            cached = self._groups.get(owner)
            if cached and cached[0] == digest and time.monotonic() - cached[1] < GROUP_CACHE_S:
                return cached[2]
        try:
            vector_pairs = self._vector_pairs(facts)
        except BackendUnavailableError as e:  # the hashes still group
            log.warning("near-duplicates: grouping by hash only, the vectors are unavailable: %s", e)
            vector_pairs = None
        found = group(facts, self.max_distance, vector_pairs)
        with self._lock:
            self._groups[owner] = (digest, time.monotonic(), found)
            self._groups.move_to_end(owner)
            while len(self._groups) > GROUP_CACHE_OWNERS:
                self._groups.popitem(last=False)
        return found

    def _facts(self, owner: str) -> list[PhotoFacts]:
        facts = self._metadata.photo_facts(owner, PhotoFilter())
        if any(not f.phash and f.id not in self._unhashable for f in facts):
            self._queue_backfill(owner)
        return facts

    def _vector_pairs(self, facts: Sequence[PhotoFacts]) -> tuple[np.ndarray, np.ndarray] | None:
        """Index pairs of `facts` whose CLIP vectors (of the same model) are close enough."""
        if not 2 <= len(facts) <= self.clip_max_photos:
            return None
        found = self._vectors.get_many([f.id for f in facts], SPACE_CLIP)
        position = {f.id: k for k, f in enumerate(facts)}
        by_model: dict[str, list[str]] = {}
        for photo_id, obj in found.items():
            if obj.vector is not None:
                by_model.setdefault(obj.model, []).append(photo_id)
        rows, cols = [], []
        for ids in by_model.values():
            matrix = np.stack([np.asarray(found[i].vector, dtype=np.float32) for i in ids])
            i, j = cosine_pairs(matrix, self.min_cosine)
            index = np.array([position[p] for p in ids], dtype=np.int64)
            rows.append(index[i])
            cols.append(index[j])
        if not rows:
            return None
        return np.concatenate(rows), np.concatenate(cols)

    # Backfill: photos stored before hashes were made get one from their model copy.

    def _queue_backfill(self, owner: str) -> None:
        with self._lock:
            if owner in self._queued:
                return
            self._queued.add(owner)
        self._backfill_queue.put(owner)

    def run_backfill(self, stopping: threading.Event, poll_s: float = 1.0) -> None:
        """Hashes the photos lacking a hash of each owner seen with some, until `stopping`."""
        while not stopping.is_set():
            try:
                owner = self._backfill_queue.get(timeout=poll_s)
            except queue.Empty:
                continue
            try:
                if hashed := self.backfill(owner, stopping):
                    log.info("near-duplicates: hashed %d earlier photos of %s", hashed, owner)
            except Exception:  # noqa: BLE001 - tried again the next time the owner is seen
                log.exception("near-duplicates: hashing the earlier photos of %s failed", owner)
            finally:
                with self._lock:
                    self._queued.discard(owner)

    def backfill(self, owner: str, stopping: threading.Event | None = None) -> int:
        """Hashes the owner's photos (the trash too) that lack a hash, from the 256 px model copy
        (the thumbnail where there is none); returns how many it hashed."""
        missing = [f.id for flt in (PhotoFilter(), PhotoFilter(deleted=True))
                   for f in self._metadata.photo_facts(owner, flt)
                   if not f.phash and f.id not in self._unhashable]
        hashed = 0
        for start in range(0, len(missing), BACKFILL_BATCH):
            if stopping is not None and stopping.is_set():
                break
            for record in self._metadata.get_photos(owner, missing[start:start + BACKFILL_BATCH]):
                if not (h := self._hash_stored(record)):  # no copy, or one colour
                    self._unhashable.add(record.id)
                elif self._metadata.update_photo(record.id, phash=h) is not None:
                    hashed += 1
        return hashed

    def _hash_stored(self, record: PhotoRecord) -> str | None:
        for key in (record.model_copy_key, record.thumbnail_key):
            try:
                return phash_of(self._blobs.read_bytes(key))
            except BlobNotFoundError:
                continue
            except OSError:  # not an image Pillow reads
                log.warning("near-duplicates: cannot decode %s", key)
        return None
