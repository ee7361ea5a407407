"""The blob keys every BlobStore accepts: relative '/'-separated paths, the same on disk and in S3."""
from __future__ import annotations

from photostore.backends.base import InvalidBlobKeyError

MAX_KEY_BYTES = 1024  # S3's limit on object names


def check_blob_key(key: str) -> str:
    """Returns the key, or raises InvalidBlobKeyError: empty, absolute, with empty, '.' or '..'
    segments (a trailing '/' included), with NUL or backslash, or longer than S3 allows."""
    if not isinstance(key, str) or not key:
        raise InvalidBlobKeyError(f"blob key must be a non-empty string: {key!r}")
    if key.startswith("/"):
        raise InvalidBlobKeyError(f"blob key must be relative: {key!r}")
    if "\x00" in key or "\\" in key:
        raise InvalidBlobKeyError(f"blob key has a NUL or backslash: {key!r}")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise InvalidBlobKeyError(f"blob key has an empty, '.' or '..' segment: {key!r}")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidBlobKeyError(f"blob key is not valid unicode: {key!r}") from None
    if size > MAX_KEY_BYTES:
        raise InvalidBlobKeyError(f"blob key is longer than {MAX_KEY_BYTES} bytes: {key[:40]!r}...")
    return key
