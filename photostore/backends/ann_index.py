"""Approximate nearest-neighbour index of one model's vectors: faiss HNSW over 8-bit scalar codes.

Index ids are the rows of the store's matrix (appended in order, never reused): a replaced or
deleted row stays in the graph and is left out by the filter bitmap until the store compacts.
Candidates are re-ranked by the store against its float32 vectors, so scores stay exact.

Saved as one file: a header line (JSON: the change-log seq it covers, a checksum of the rest), a
line with the photo id of every row (JSON, null for dead rows), then faiss.serialize_index; written
to a temp file and os.replace'd, so a reader sees the old file or the new one, never a torn one.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np

# faiss's loader logs each instruction-set build it tries and lacks (this wheel dispatches at run
# time from one library): three "could not load" messages in every service log at start.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)
import faiss  # noqa: E402

FACTORY = "HNSW32,SQ8"  # graph degree 32; 8 bits per dimension (a quarter of float32)
EF_CONSTRUCTION = 80
MAGIC = "photostore-ann-1"


class AnnIndex:
    def __init__(self, index: faiss.Index):
        self.index = index

    @classmethod
    def build(cls, vectors: np.ndarray, threads: int = 0) -> AnnIndex:
        """An index over `vectors` (rows 0..n-1), built with `threads` OpenMP threads (0: all)."""
        index = faiss.index_factory(vectors.shape[1], FACTORY, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = EF_CONSTRUCTION
        previous = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(threads or os.cpu_count() or 1)
        try:
            index.train(vectors[:: max(1, len(vectors) // 100_000)])  # SQ8 ranges from a sample
            ann = cls(index)
            ann.add(vectors)
        finally:
            faiss.omp_set_num_threads(previous)
        return ann

    @property
    def size(self) -> int:
        return self.index.ntotal

    def add(self, vectors: np.ndarray) -> None:
        """Appends rows size..size+len(vectors)-1."""
        for start in range(0, len(vectors), 100_000):
            self.index.add(np.ascontiguousarray(vectors[start:start + 100_000], np.float32))

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray, ef: int) -> np.ndarray:
        """Rows of up to k approximate best matches among rows where `allowed` (bool, one per row)."""
        faiss.omp_set_num_threads(1)  # this thread's: one query needs no team of spinning threads
        bitmap = np.packbits(allowed[: self.size], bitorder="little")
        selector = faiss.IDSelectorBitmap(self.size, faiss.swig_ptr(bitmap))
        params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(ef, k))
        _, rows = self.index.search(query.reshape(1, -1), k, params=params)
        return rows[0][rows[0] >= 0]

    def snapshot(self, seq: int, row_ids: list[str | None]) -> list[bytes]:
        """The file's contents for `save`: a copy taken now, so the index may change meanwhile."""
        rows = json.dumps(row_ids).encode() + b"\n"
        payload = faiss.serialize_index(self.index).tobytes()
        crc = zlib.crc32(payload, zlib.crc32(rows))
        return [json.dumps({"magic": MAGIC, "seq": seq, "crc32": crc}).encode() + b"\n", rows, payload]

    @staticmethod
    def saved_seq(path: Path) -> int:
        """The change-log seq the file at `path` covers; -1 if there is none readable."""
        try:
            with open(path, "rb") as f:
                return int(json.loads(f.readline())["seq"])
        except (OSError, ValueError, KeyError, TypeError):
            return -1

    @staticmethod
    def save(path: Path, snapshot: list[bytes]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.writelines(snapshot)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> tuple[AnnIndex, int, list[str | None]]:
        """(index, seq covered, photo id per row); ValueError if the file is not a whole index."""
        with open(path, "rb") as f:
            header_line, rows_line, payload = f.readline(), f.readline(), f.read()
        try:
            header = json.loads(header_line)
            ok = header["magic"] == MAGIC and header["crc32"] == zlib.crc32(payload, zlib.crc32(rows_line))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"unreadable index header in {path}") from e
        if not ok:
            raise ValueError(f"{path} is not a complete index")
        row_ids = json.loads(rows_line)
        ann = cls(faiss.deserialize_index(np.frombuffer(payload, np.uint8)))
        if ann.size != len(row_ids):
            raise ValueError(f"{path}: {ann.size} vectors for {len(row_ids)} rows")
        return ann, int(header["seq"]), row_ids
