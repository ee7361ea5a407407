"""`photostore export`: originals into a folder, under their own file names.

- Names: the name the photo was uploaded with; a second photo of the same name gets "name (2).ext".
  An existing file is never overwritten: a finished download is linked into place (`os.link`
  fails on an existing name; filesystems without hard links take an O_EXCL claim instead).
- Verified: each download is hashed as it is written and must match the photo's sha256, else
  nothing is kept.
- Resumable, with no state of its own: a photo whose name (or one of its "(n)" variants) already
  holds a file of the same size and sha256 counts as already exported.
- Bytes come from GetPhotoDownloadUrl's URL where the blob store gives one (S3: straight from the
  store), else from the DownloadPhoto stream.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import itertools
import mimetypes
import os
from pathlib import Path
from typing import Iterator

import grpc
import requests
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from photos.v1 import album_pb2, album_pb2_grpc, ingest_pb2, ingest_pb2_grpc, photo_pb2, search_pb2

PAGE_SIZE = 1000  # ListPhotos' maximum
SEARCH_PAGE_SIZE = 200  # SearchPhotos' maximum
CHUNK_BYTES = 1024 * 1024
MAX_NAME_BYTES = 200  # leaves room for " (n)" within the usual 255
# A download may take this long plus a second per MiB before it is given up.
DOWNLOAD_BASE_TIMEOUT_S = 120.0
PART_PREFIX = ".photostore-"  # temp files in the destination, hidden


class ExportError(Exception):
    """A photo that could not be exported (the message says why)."""


@dataclasses.dataclass
class ExportResult:
    photo: photo_pb2.Photo
    outcome: str  # "exported" | "present" (already exported) | "failed"
    path: Path | None = None
    reason: str = ""


def safe_filename(photo: photo_pb2.Photo) -> str:
    """The uploaded file name without any folder part, control characters or leading dots
    (not hidden); the photo id when nothing is left."""
    name = photo.filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable()).strip().lstrip(".")
    if not name:
        name = photo.name.rsplit("/", 1)[-1] + (mimetypes.guess_extension(photo.content_type) or "")
    stem, ext = os.path.splitext(name)
    while len((stem + ext).encode()) > MAX_NAME_BYTES and stem:
        stem = stem[:-1]
    return stem + ext


def candidate_names(filename: str) -> Iterator[str]:
    """"a.jpg", "a (2).jpg", "a (3).jpg", ..."""
    stem, ext = os.path.splitext(filename)
    yield filename
    for n in itertools.count(2):
        yield f"{stem} ({n}){ext}"


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _is_unavailable(err: BaseException) -> bool:
    return (isinstance(err, grpc.RpcError) and err.code() == grpc.StatusCode.UNAVAILABLE) or \
        isinstance(err, (requests.ConnectionError, requests.Timeout))


# What to export

def list_photos(stub: ingest_pb2_grpc.IngestServiceStub, metadata, *, album: str = "") -> list[photo_pb2.Photo]:
    """Every photo of the caller (or of one album), not those in the trash."""
    photos, token = [], ""
    while True:
        page = stub.ListPhotos(ingest_pb2.ListPhotosRequest(page_size=PAGE_SIZE, page_token=token, album=album),
                               metadata=metadata, timeout=60)
        photos += page.photos
        token = page.next_page_token
        if not token:
            return photos


def search_photos(stub, metadata, query: str, *, min_score: float | None = None,
                  limit: int | None = None) -> list[photo_pb2.Photo]:
    """The hits of a search, best first, every page (or the first `limit`)."""
    photos, token = [], ""
    while limit is None or len(photos) < limit:
        page = stub.SearchPhotos(search_pb2.SearchPhotosRequest(
            query=query, page_size=SEARCH_PAGE_SIZE, min_score=min_score, page_token=token),
            metadata=metadata, timeout=120)
        photos += [hit.photo for hit in page.hits]
        token = page.next_page_token
        if not token:
            break
    return photos if limit is None else photos[:limit]


def resolve_album(stub: album_pb2_grpc.AlbumServiceStub, metadata, album: str) -> str:
    """"albums/{id}" as given, or the one album of the caller with this title (exactly, else
    ignoring case); raises ExportError when there is none or several."""
    if album.startswith("albums/"):
        return album
    albums, token = [], ""
    while True:
        page = stub.ListAlbums(album_pb2.ListAlbumsRequest(page_size=PAGE_SIZE, page_token=token),
                               metadata=metadata, timeout=60)
        albums += page.albums
        token = page.next_page_token
        if not token:
            break
    matches = [a for a in albums if a.title == album] or \
        [a for a in albums if a.title.casefold() == album.casefold()]
    if not matches:
        titles = ", ".join(sorted(repr(a.title) for a in albums)) or "none"
        raise ExportError(f"no album titled {album!r} (yours: {titles})")
    if len(matches) > 1:
        raise ExportError(f"{len(matches)} albums are titled {album!r}: pass one of "
                          + ", ".join(a.name for a in matches))
    return matches[0].name


# Downloading

class Exporter:
    """Exports photos into `dest`; safe to call from several threads at once."""

    def __init__(self, stub: ingest_pb2_grpc.IngestServiceStub, metadata, dest: Path):
        self._stub, self._metadata, self._dest = stub, metadata, dest
        self._urls = True  # False once the store said it gives none: no more asking
        self._http = requests.Session()

    def export(self, photo: photo_pb2.Photo) -> ExportResult:
        filename = safe_filename(photo)
        if (present := self._already_exported(photo, filename)) is not None:
            return ExportResult(photo, "present", present)
        part = self._dest / f"{PART_PREFIX}{photo.name.rsplit('/', 1)[-1]}.part"
        try:
            self._download(photo, part)
            return ExportResult(photo, "exported", self._place(part, filename))
        except ExportError as e:
            return ExportResult(photo, "failed", reason=str(e))
        except grpc.RpcError as e:
            return ExportResult(photo, "failed", reason=f"{e.code().name}: {e.details()}")
        except (OSError, requests.RequestException) as e:
            return ExportResult(photo, "failed", reason=str(e))
        finally:
            part.unlink(missing_ok=True)

    def _already_exported(self, photo: photo_pb2.Photo, filename: str) -> Path | None:
        """The file of this name (or a "(n)" variant, up to the first free one) with the photo's
        bytes: sizes compared first, hashed only when equal."""
        for name in candidate_names(filename):
            path = self._dest / name
            try:
                if path.stat().st_size == photo.size_bytes and file_sha256(path) == photo.sha256:
                    return path
            except FileNotFoundError:
                return None
            except OSError:
                continue  # unreadable: not ours to judge, and never overwritten

    @retry(retry=retry_if_exception(_is_unavailable), stop=stop_after_attempt(4),
           wait=wait_exponential(multiplier=0.5, max=5), reraise=True)
    def _download(self, photo: photo_pb2.Photo, part: Path) -> None:
        """The original into `part`, checked against its size and sha256."""
        timeout = DOWNLOAD_BASE_TIMEOUT_S + photo.size_bytes / CHUNK_BYTES
        digest, size = hashlib.sha256(), 0
        with part.open("wb") as out:
            for chunk in self._chunks(photo, timeout):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != photo.sha256:
            raise ExportError(f"downloaded {size} bytes whose sha256 {digest.hexdigest()} is not the "
                              f"photo's {photo.sha256}; nothing kept")

    def _chunks(self, photo: photo_pb2.Photo, timeout: float) -> Iterator[bytes]:
        url = self._url(photo)
        if url:
            with self._http.get(url, stream=True, timeout=60) as response:
                response.raise_for_status()
                yield from response.iter_content(CHUNK_BYTES)
            return
        for message in self._stub.DownloadPhoto(ingest_pb2.DownloadPhotoRequest(name=photo.name),
                                                metadata=self._metadata, timeout=timeout):
            yield message.chunk

    def _url(self, photo: photo_pb2.Photo) -> str:
        if not self._urls:
            return ""
        try:
            url = self._stub.GetPhotoDownloadUrl(ingest_pb2.GetPhotoDownloadUrlRequest(name=photo.name),
                                                 metadata=self._metadata, timeout=30).url
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            url = ""
        if not url:
            self._urls = False
        return url

    def _place(self, part: Path, filename: str) -> Path:
        """Links the verified download under the first free name; never replaces a file."""
        for name in candidate_names(filename):
            path = self._dest / name
            try:
                os.link(part, path)
                return path
            except FileExistsError:
                continue
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
            try:  # no hard links here (FAT, some network shares): claim the name, then move in
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            except FileExistsError:
                continue
            os.replace(part, path)
            return path
        raise AssertionError("unreachable")
