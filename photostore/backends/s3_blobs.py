"""Blobs in one S3 bucket (MinIO in production, SeaweedFS locally) through the minio client.

Objects up to PART_SIZE go in one PUT, larger ones as a multipart upload in PART_SIZE parts (S3
makes the object visible only when complete, so every put is all or nothing). The HTTP pool has
short timeouts and few retries, so a stopped server fails a call within seconds.
"""
from __future__ import annotations

import datetime as dt
import io
import os
import threading
import urllib.parse
from typing import NoReturn

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError

from photostore.backends.base import (BlobError, BlobNotFoundError, BlobReader, BlobStore,
                                      BlobUnavailableError)
from photostore.backends.blob_keys import check_blob_key
from photostore.settings import BlobsSettings

PART_SIZE = 8 * 1024 * 1024  # multipart part size; S3 allows 5 MiB to 5 GiB
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 10.0  # longest wait for the next bytes of an answer
RETRIES = 2  # after the first try: connection errors and 500/502/503/504 (a hung server: one)
POOL_SIZE = 16
DEFAULT_REGION = "us-east-1"  # S3's region when none is set
MAX_PRESIGN_S = 7 * 24 * 3600  # S3's limit
NOT_FOUND_CODES = {"NoSuchKey", "NoSuchBucket"}
BUCKET_EXISTS_CODES = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}
# Error codes that mean "try again later" even when a proxy answers them with a 4xx status.
TRANSIENT_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"}


class S3BlobReader(BlobReader):
    """The body of one GET, streamed; close() gives the connection back to the pool."""

    def __init__(self, response: urllib3.BaseHTTPResponse, store: S3BlobStore, key: str):
        self._response = response
        self._store = store
        self._key = key
        self._remaining = self.size = int(response.headers.get("Content-Length", "0"))
        self.content_type = response.headers.get("Content-Type") or "application/octet-stream"
        self._closed = False

    def read(self, n: int = -1) -> bytes:
        if self._closed:
            raise BlobUnavailableError(f"blob {self._key!r} was read after close")
        if self._remaining <= 0:
            return b""
        try:
            data = self._response.read(None if n is None or n < 0 else min(n, self._remaining))
        except (urllib3.exceptions.HTTPError, OSError) as e:
            self.close()
            raise BlobUnavailableError(f"reading {self._key!r} from {self._store.describe()} failed: {e}") from e
        self._remaining -= len(data)
        if not data and self._remaining > 0:
            self.close()
            raise BlobUnavailableError(f"{self._store.describe()} cut {self._key!r} short "
                                       f"({self._remaining} of {self.size} bytes missing)")
        return data

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._remaining > 0:  # an unread body: the connection cannot be reused
            self._response.close()
        self._response.release_conn()


class S3BlobStore(BlobStore):
    def __init__(self, settings: BlobsSettings):
        self._settings = settings
        self._bucket = settings.s3_bucket
        scheme = "https" if settings.s3_secure else "http"
        self._where = f"s3 at {scheme}://{settings.s3_endpoint}/{settings.s3_bucket}"
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
            maxsize=POOL_SIZE,
            retries=urllib3.Retry(total=RETRIES, read=1, backoff_factor=0.2,
                                  status_forcelist=(500, 502, 503, 504), raise_on_status=False),
        )
        try:
            self._client = Minio(settings.s3_endpoint,
                                 access_key=settings.s3_access_key.get_secret_value() or None,
                                 secret_key=settings.s3_secret_key.get_secret_value() or None,
                                 secure=settings.s3_secure, region=settings.s3_region or None,
                                 http_client=self._http)
            self._signer = self._public_signer(settings) if settings.s3_public_url else self._client
        except ValueError as e:
            raise BlobError(f"bad S3 settings for {self._where}: {e}") from e
        self._bucket_ready = False
        self._bucket_lock = threading.Lock()

    @staticmethod
    def _public_signer(settings: BlobsSettings) -> Minio:
        """Signs download links for the address browsers use (signing needs no request to it;
        the region must be known, since the client cannot ask that address for it)."""
        url = urllib.parse.urlsplit(settings.s3_public_url)
        if url.scheme not in ("http", "https") or not url.netloc or url.path.strip("/") or url.query:
            raise ValueError(f"s3_public_url must be http(s)://host[:port], not {settings.s3_public_url!r}")
        return Minio(url.netloc, access_key=settings.s3_access_key.get_secret_value() or None,
                     secret_key=settings.s3_secret_key.get_secret_value() or None,
                     secure=url.scheme == "https", region=settings.s3_region or DEFAULT_REGION)

    def describe(self) -> str:
        return self._where

    def _fail(self, e: Exception, action: str, key: str = "") -> NoReturn:
        """Raises the BlobError for a client exception."""
        what = f"{action} {key!r}" if key else action
        if isinstance(e, S3Error):
            status = e.response.status if e.response is not None else 0
            if e.code in NOT_FOUND_CODES and key:
                raise BlobNotFoundError(key) from None
            if status >= 500 or e.code in TRANSIENT_CODES:
                raise BlobUnavailableError(f"{what}: {self._where} failed ({e.code}: {e.message})") from e
            raise BlobError(f"{what}: {self._where} refused it ({e.code}: {e.message})") from e
        if isinstance(e, (ServerError, InvalidResponseError)):
            status = e.status_code if isinstance(e, ServerError) else getattr(e, "_code", 0)
            if status >= 500:
                raise BlobUnavailableError(f"{what}: {self._where} answered HTTP {status}") from e
            raise BlobError(f"{what}: {self._where} answered HTTP {status}: {e}") from e
        if isinstance(e, (urllib3.exceptions.HTTPError, OSError)):
            reason = getattr(e, "reason", None) or e
            raise BlobUnavailableError(f"{what}: cannot reach {self._where}: {reason}") from e
        raise BlobError(f"{what}: {self._where}: {e}") from e

    def _ensure_bucket(self) -> None:
        """Creates the bucket on first use; a concurrent creator winning the race is fine."""
        if self._bucket_ready:
            return
        with self._bucket_lock:
            if self._bucket_ready:
                return
            try:
                if not self._client.bucket_exists(self._bucket):
                    try:
                        self._client.make_bucket(self._bucket, location=self._settings.s3_region or None)
                    except S3Error as e:
                        if e.code not in BUCKET_EXISTS_CODES:
                            raise
            except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as e:
                self._fail(e, "create bucket")
            self._bucket_ready = True

    def put_file(self, key: str, path: str, content_type: str) -> None:
        check_blob_key(key)
        try:
            src = open(path, "rb")
        except OSError as e:
            raise BlobError(f"cannot read {path} to store as {key!r}: {e}") from e
        with src:
            try:
                size = os.fstat(src.fileno()).st_size
            except OSError as e:
                raise BlobError(f"cannot read {path} to store as {key!r}: {e}") from e
            self._put(key, src, size, content_type)

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        check_blob_key(key)
        self._put(key, io.BytesIO(data), len(data), content_type)

    def _put(self, key: str, data, size: int, content_type: str) -> None:
        self._ensure_bucket()
        try:
            self._client.put_object(self._bucket, key, data, size,
                                    content_type=content_type or "application/octet-stream",
                                    part_size=PART_SIZE)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as e:
            self._fail(e, "put", key)

    def open(self, key: str) -> BlobReader:
        check_blob_key(key)
        try:
            response = self._client.get_object(self._bucket, key)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as e:
            self._fail(e, "open", key)
        return S3BlobReader(response, self, key)

    def delete(self, key: str) -> None:
        check_blob_key(key)
        try:
            self._client.remove_object(self._bucket, key)
        except S3Error as e:
            if e.code not in NOT_FOUND_CODES:
                self._fail(e, "delete", key)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as e:
            self._fail(e, "delete", key)

    def presigned_url(self, key: str, expires_s: int, *, filename: str = "") -> str | None:
        check_blob_key(key)
        if not 1 <= expires_s <= MAX_PRESIGN_S:
            raise BlobError(f"a presigned URL lives 1 s to 7 days, not {expires_s} s")
        headers = {"response-content-disposition": content_disposition(filename)} if filename else None
        self._ensure_bucket()  # the client asks the bucket's region before signing
        try:
            return self._signer.presigned_get_object(self._bucket, key, expires=dt.timedelta(seconds=expires_s),
                                                     response_headers=headers)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as e:
            self._fail(e, "presign", key)

    def close(self) -> None:
        self._http.clear()


def content_disposition(filename: str) -> str:
    """Shown in the browser, saved under `filename` (RFC 6266: ASCII fallback plus UTF-8)."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    quoted = urllib.parse.quote(filename, safe="")
    return f"inline; filename=\"{fallback}\"; filename*=UTF-8''{quoted}"

