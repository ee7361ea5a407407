"""The BlobStore contract, run against the local disk and a real S3 engine (SeaweedFS)."""
from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid

import pytest
import requests
from minio import Minio

from photostore.backends.base import (BlobError, BlobNotFoundError, BlobStore, BlobUnavailableError,
                                      InvalidBlobKeyError)
from photostore.backends.local_blobs import LocalBlobStore
from photostore.backends.s3_blobs import PART_SIZE, S3BlobStore
from photostore.settings import BlobsSettings

JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"
PNG_HEAD = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
BAD_KEYS = ["", "/abs", "../escape", "a/../../b", "a/..", "./a", "a//b", "a/", "a\x00b", "a\\b", "x" * 1025]


def drop_bucket(settings: BlobsSettings) -> None:
    client = Minio(settings.s3_endpoint, settings.s3_access_key.get_secret_value(),
                   settings.s3_secret_key.get_secret_value(), secure=settings.s3_secure)
    if client.bucket_exists(settings.s3_bucket):
        for obj in client.list_objects(settings.s3_bucket, recursive=True):
            client.remove_object(settings.s3_bucket, obj.object_name)
        client.remove_bucket(settings.s3_bucket)


@pytest.fixture
def s3_store(request, tmp_path):
    """The S3 store alone, for what only it does (URLs for browsers)."""
    yield from _store("s3", request, tmp_path)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    yield from _store(request.param, request, tmp_path)


def _store(kind, request, tmp_path):
    if kind == "local":
        yield LocalBlobStore(tmp_path / "blobs")
        assert not list((tmp_path / "blobs").rglob(".tmp-*")), "temp files left behind"
        return
    settings = request.getfixturevalue("s3_settings").model_copy(
        update={"s3_bucket": f"t-{uuid.uuid4().hex[:16]}"})
    s3 = S3BlobStore(settings)
    try:
        yield s3
    finally:
        s3.close()
        drop_bucket(settings)


def is_s3(store: BlobStore) -> bool:
    return isinstance(store, S3BlobStore)


def test_bytes_round_trip(store):
    data = JPEG_HEAD + os.urandom(3000)
    store.put_bytes("originals/u1/p1", data, "image/jpeg")
    with store.open("originals/u1/p1") as reader:
        assert reader.size == len(data)
        assert reader.content_type == "image/jpeg"
        assert reader.read() == data
        assert reader.read() == b""
    assert store.read_bytes("originals/u1/p1") == data


def test_file_round_trip(store, tmp_path):
    src = tmp_path / "src.png"
    data = PNG_HEAD + b"hello" * 100
    src.write_bytes(data)
    store.put_file("t/p2", str(src), "image/png")
    with store.open("t/p2") as reader:
        assert (reader.size, reader.content_type) == (len(data), "image/png")
        assert reader.read() == data


def test_empty_blob(store):
    store.put_bytes("empty", b"", "application/octet-stream")
    with store.open("empty") as reader:
        assert reader.size == 0
        assert reader.read() == b""


def test_chunks_and_partial_reads(store):
    data = bytes(range(256)) * 40  # 10,240 bytes
    store.put_bytes("a/b/c", data, "application/octet-stream")
    with store.open("a/b/c") as reader:
        chunks = list(reader.chunks(1024))
    assert [len(c) for c in chunks] == [1024] * 10
    assert b"".join(chunks) == data
    with store.open("a/b/c") as reader:
        assert reader.read(5) == data[:5]
        assert reader.read(10) == data[5:15]
        # closing with most of the body unread is fine; the store stays usable
    assert store.read_bytes("a/b/c") == data


def test_declared_content_type_kept_by_s3(store):
    store.put_bytes("doc", b"plain words", "text/plain")
    with store.open("doc") as reader:
        # Local disk derives the type from the bytes; S3 keeps what was declared.
        assert reader.content_type == ("text/plain" if is_s3(store) else "application/octet-stream")


def test_large_file_goes_in_parts(store, tmp_path):
    size = 12 * 1024 * 1024
    assert size > PART_SIZE  # the S3 store uploads it in parts
    src = tmp_path / "big.bin"
    with open(src, "wb") as out:
        for _ in range(size // (1024 * 1024)):
            out.write(os.urandom(1024 * 1024))
    expected = hashlib.sha256(src.read_bytes()).hexdigest()
    store.put_file("big/one", str(src), "image/jpeg")
    digest = hashlib.sha256()
    with store.open("big/one") as reader:
        assert reader.size == size
        for chunk in reader.chunks(1024 * 1024):
            digest.update(chunk)
    assert digest.hexdigest() == expected
    if is_s3(store):
        etag = store._client.stat_object(store._bucket, "big/one").etag
        assert etag.endswith("-2"), f"expected a two-part upload, etag {etag}"


def test_delete_is_idempotent(store):
    store.put_bytes("k", b"x", "text/plain")
    store.delete("k")
    store.delete("k")
    store.delete("never/written")
    with pytest.raises(BlobNotFoundError):
        store.open("k")


def test_missing_key(store):
    with pytest.raises(BlobNotFoundError) as raised:
        store.open("no/such/key")
    assert isinstance(raised.value, KeyError)
    with pytest.raises(KeyError):
        store.read_bytes("no/such/key")


def test_prefix_of_other_keys_is_not_a_blob(store):
    store.put_bytes("dir/inner", b"x", "text/plain")
    with pytest.raises(BlobNotFoundError):
        store.open("dir")
    store.delete("dir")
    assert store.read_bytes("dir/inner") == b"x"


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_bad_keys_refused(store, key, tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"x")
    calls = [lambda: store.put_bytes(key, b"x", "text/plain"), lambda: store.put_file(key, str(src), "text/plain"),
             lambda: store.open(key), lambda: store.delete(key)]
    if is_s3(store):
        calls.append(lambda: store.presigned_url(key, 60))
    for call in calls:
        with pytest.raises(InvalidBlobKeyError) as raised:
            call()
        assert isinstance(raised.value, ValueError)


def test_missing_source_file(store, tmp_path):
    with pytest.raises(BlobError) as raised:
        store.put_file("k", str(tmp_path / "absent"), "image/jpeg")
    assert not isinstance(raised.value, BlobUnavailableError)
    with pytest.raises(BlobNotFoundError):
        store.open("k")


def test_overwrite_replaces_whole(store):
    size = 256 * 1024
    versions = [JPEG_HEAD + bytes([v]) * (size - len(JPEG_HEAD)) for v in (1, 2)]
    store.put_bytes("photo", versions[0], "image/jpeg")
    seen, failures, writing = set(), [], threading.Event()
    writing.set()

    def reader():
        while writing.is_set():
            try:
                data = store.read_bytes("photo")
            except BaseException as e:  # noqa: BLE001 -- reported below
                failures.append(e)
                return
            if data not in versions:
                failures.append(AssertionError(f"a mixed or partial blob: {len(data)} bytes"))
                return
            seen.add(versions.index(data))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for i in range(20):
            store.put_bytes("photo", versions[i % 2], "image/jpeg")
    finally:
        writing.clear()
        for thread in threads:
            thread.join(60)
    assert not failures, failures[0]
    assert store.read_bytes("photo") == versions[1]
    assert seen  # the readers did read meanwhile


def test_presigned_url(store):
    data = JPEG_HEAD + b"pixels" * 1000
    store.put_bytes("originals/u1/p9", data, "image/jpeg")
    url = store.presigned_url("originals/u1/p9", 60, filename="Zürich \"day\" 1.jpg")
    if not is_s3(store):
        assert url is None  # local bytes go through the services
        return
    assert store._settings.s3_secret_key.get_secret_value() not in url
    response = requests.get(url, timeout=30)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["Content-Type"] == "image/jpeg"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("inline;") and "filename*=UTF-8''Z%C3%BCrich%20%22day%22%201.jpg" in disposition
    plain = requests.get(store.presigned_url("originals/u1/p9", 60), timeout=30)
    assert plain.status_code == 200 and "Content-Disposition" not in plain.headers


def test_presigned_url_expires(s3_store):
    store = s3_store
    store.put_bytes("short", b"brief", "text/plain")
    # Signatures carry whole seconds: a 1 s URL lives up to a second, and is dead 2 s on.
    url = store.presigned_url("short", 1)
    deadline = time.monotonic() + 30
    while (status := requests.get(url, timeout=30).status_code) == 200:
        assert time.monotonic() < deadline, "the 1 s URL still works after 30 s"
        time.sleep(0.2)
    assert status == 403


def test_presigned_url_bad_expiry(s3_store):
    store = s3_store
    for expires in (0, 8 * 24 * 3600):
        with pytest.raises(BlobError):
            store.presigned_url("k", expires)


def test_presigned_url_for_the_public_address(s3_store):
    """Browsers reach S3 by another name than the services (an ingress, a published port): the
    link names that address and works there."""
    internal = s3_store._settings
    port = internal.s3_endpoint.rsplit(":", 1)[1]
    public = S3BlobStore(internal.model_copy(update={"s3_public_url": f"http://localhost:{port}"}))
    try:
        public.put_bytes("originals/u1/p1", b"public bytes", "image/jpeg")
        url = public.presigned_url("originals/u1/p1", 60)
        assert url.startswith(f"http://localhost:{port}/{internal.s3_bucket}/originals/u1/p1?")
        response = requests.get(url, timeout=30)
        assert response.status_code == 200 and response.content == b"public bytes"
    finally:
        public.close()
    for bad in ("localhost:9000", "ftp://host", "https://host/prefix"):
        with pytest.raises(BlobError, match="s3_public_url"):
            S3BlobStore(internal.model_copy(update={"s3_public_url": bad}))


def test_describe_names_the_place(store):
    text = store.describe()
    if is_s3(store):
        assert text == f"s3 at http://{store._settings.s3_endpoint}/{store._bucket}"
        assert store._settings.s3_access_key.get_secret_value() not in text
    else:
        assert str(store.root) in text


# Local disk only


def test_local_other_os_errors_are_unavailable(tmp_path):
    store = LocalBlobStore(tmp_path / "blobs")
    os.symlink("loop", tmp_path / "blobs" / "loop")  # ELOOP on open
    with pytest.raises(BlobUnavailableError):
        store.open("loop")


def test_local_reads_files_of_earlier_versions(tmp_path):
    (tmp_path / "blobs" / "originals").mkdir(parents=True)
    (tmp_path / "blobs" / "originals" / "old").write_bytes(PNG_HEAD + b"rest")
    with LocalBlobStore(tmp_path / "blobs").open("originals/old") as reader:
        assert (reader.size, reader.content_type, reader.read()) == (len(PNG_HEAD) + 4, "image/png", PNG_HEAD + b"rest")


def test_local_key_too_long_for_the_filesystem(tmp_path):
    with pytest.raises(InvalidBlobKeyError):
        LocalBlobStore(tmp_path / "blobs").put_bytes("x" * 300, b"x", "text/plain")
