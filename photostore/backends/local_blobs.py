"""Blobs as files under one directory; writes go to a temp file and are renamed into place.

The content type is not stored: open() derives it from the first bytes (the image formats ingest
accepts), else application/octet-stream. Files written by earlier versions read the same way.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from photostore.backends.base import (DISK_FULL_ERRNOS, BlobError, BlobNotFoundError, BlobReader,
                                      BlobStorageFullError, BlobStore, BlobUnavailableError,
                                      InvalidBlobKeyError)
from photostore.backends.blob_keys import check_blob_key

COPY_CHUNK_BYTES = 1024 * 1024
SNIFF_BYTES = 32
OCTET_STREAM = "application/octet-stream"
# ISO base media brands (bytes 8-12 after "ftyp") of HEIF still images.
HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}


def sniff_content_type(head: bytes) -> str:
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        if head[8:12] in (b"avif", b"avis"):
            return "image/avif"
        if head[8:12] in HEIF_BRANDS:
            return "image/heic"
    return OCTET_STREAM


class LocalBlobReader(BlobReader):
    def __init__(self, file: BinaryIO, key: str):
        self._file = file
        self._key = key
        try:
            self.size = os.fstat(file.fileno()).st_size
            self.content_type = sniff_content_type(os.pread(file.fileno(), SNIFF_BYTES, 0))
        except OSError as e:
            file.close()
            raise BlobUnavailableError(f"cannot read blob {key!r}: {e}") from e

    def read(self, n: int = -1) -> bytes:
        try:
            return self._file.read(n)
        except (OSError, ValueError) as e:  # ValueError: read after close
            raise BlobUnavailableError(f"cannot read blob {self._key!r}: {e}") from e

    def close(self) -> None:
        self._file.close()


class LocalBlobStore(BlobStore):
    def __init__(self, root: Path):
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BlobUnavailableError(f"cannot create the blob directory {self.root}: {e}") from e

    def describe(self) -> str:
        return f"local disk at {self.root}"

    def _path(self, key: str) -> Path:
        return self.root / check_blob_key(key)

    def _unavailable(self, what: str, key: str, e: OSError) -> BlobError:
        if e.errno == errno.ENAMETOOLONG:
            return InvalidBlobKeyError(f"blob key too long for {self.root}: {key!r}")
        if e.errno in DISK_FULL_ERRNOS:
            return BlobStorageFullError(f"cannot {what} blob {key!r}: the disk of {self.root} is full")
        return BlobUnavailableError(f"cannot {what} blob {key!r} under {self.root}: {e}")

    def _write(self, key: str, write: Callable[[BinaryIO], None]) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        except (FileExistsError, NotADirectoryError):
            raise InvalidBlobKeyError(f"blob key {key!r} runs through another blob in {self.root}") from None
        except OSError as e:
            raise self._unavailable("write", key, e) from e
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException as e:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(e, IsADirectoryError):
                raise InvalidBlobKeyError(f"blob key {key!r} is a prefix of other blobs in {self.root}") from None
            if isinstance(e, OSError):
                raise self._unavailable("write", key, e) from e
            raise

    def put_file(self, key: str, path: str, content_type: str) -> None:
        try:
            src = open(path, "rb")
        except OSError as e:
            raise BlobError(f"cannot read {path} to store as {key!r}: {e}") from e
        with src:
            self._write(key, lambda out: shutil.copyfileobj(src, out, COPY_CHUNK_BYTES))

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        self._write(key, lambda out: out.write(data))

    def open(self, key: str) -> BlobReader:
        path = self._path(key)
        try:
            file = open(path, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise BlobNotFoundError(key) from None
        except OSError as e:
            raise self._unavailable("open", key, e) from e
        return LocalBlobReader(file, key)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except (NotADirectoryError, IsADirectoryError):
            pass  # no blob under this key
        except OSError as e:
            raise self._unavailable("delete", key, e) from e
