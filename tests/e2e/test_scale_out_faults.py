"""The scale-out stack while its engines fail: the broker stopped for 30 s during 200 uploads, then
the vector store stopped for 30 s. Nothing is lost: every upload answered OK ends indexed (once per
vector space), or it failed UNAVAILABLE; searches meanwhile fail UNAVAILABLE with a clear message.

This module runs its own Kafka and Weaviate (stopped and started here), and the session's MongoDB
and S3 servers."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from photos.v1 import ingest_pb2, photo_pb2, search_pb2
from photostore.auth import bearer_metadata
from photostore.backends import open_vectors
from tests import engines
from tests.e2e.conftest import scale_out_backends
from tests.photo_samples import jpeg_bytes, upload
from tests.stack import Stack

pytestmark = pytest.mark.timeout(900)

OUTAGE_S = 30
UPLOADS = 200
SETTLE_TIMEOUT_S = 420


@pytest.fixture(scope="module")
def own_engines(tmp_path_factory):
    kafka = engines.kafka(tmp_path_factory.mktemp("kafka")).start()
    weaviate = engines.weaviate(tmp_path_factory.mktemp("weaviate")).start()
    yield kafka, weaviate
    for engine in (kafka, weaviate):
        engine.stop()


@pytest.fixture(scope="module")
def stack(request, tmp_path_factory, tiny_clip, own_engines):
    kafka, weaviate = own_engines
    backends = scale_out_backends(request)
    backends.update({
        "PHOTOSTORE_EVENTS__KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka.env['KAFKA_PORT']}",
        "PHOTOSTORE_VECTORS__WEAVIATE_HTTP_PORT": weaviate.env["WEAVIATE_HTTP_PORT"],
        "PHOTOSTORE_VECTORS__WEAVIATE_GRPC_PORT": weaviate.env["WEAVIATE_GRPC_PORT"],
    })
    workdir = tmp_path_factory.mktemp("faults")
    s = Stack(workdir, tiny_clip.checkpoint_path, tiny_clip, backends=backends, env={
        "PHOTOSTORE_SIGNALS_ENABLED": "false", "PHOTOSTORE_SEARCH_WEIGHT_KEYWORD": "0",
        "PHOTOSTORE_SEARCH_MIN_CLIP": "-1", "PHOTOSTORE_SEARCH_MIN_PROBABILITY": "0",
        "PHOTOSTORE_OUTBOX_INTERVAL_SECONDS": "2", "PHOTOSTORE_EVENTS__SEND_TIMEOUT_S": "5"})
    s.start_all()
    yield s
    s.stop_all()


def counts(stack, key) -> dict[int, int]:
    return {status: stack.ingest.ListPhotos(ingest_pb2.ListPhotosRequest(page_size=1, status=status),
                                            metadata=bearer_metadata(key), timeout=30).total_size
            for status in (photo_pb2.PHOTO_STATUS_UNSPECIFIED, photo_pb2.PHOTO_STATUS_UPLOADED,
                           photo_pb2.PHOTO_STATUS_INDEXED, photo_pb2.PHOTO_STATUS_FAILED)}


def wait_all_indexed(stack, key, expected: int) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while (now := counts(stack, key))[photo_pb2.PHOTO_STATUS_INDEXED] != expected:
        assert now[photo_pb2.PHOTO_STATUS_FAILED] == 0, now
        assert time.monotonic() < deadline, f"not all {expected} indexed: {now}\n{stack.logs()}"
        time.sleep(0.5)


def test_broker_outage_during_uploads_loses_nothing(stack, own_engines):
    kafka, _ = own_engines
    key = stack.add_user("alice")
    ok, unavailable, started = [], [], threading.Event()
    lock = threading.Lock()

    def send(i: int) -> None:
        replica = stack.ingest if i % 2 else stack.ingest2
        try:
            response = upload(replica, key, jpeg_bytes(color=(i % 256, (i * 7) % 256, 99)), f"burst-{i}.jpg")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, (e.code(), e.details())
            with lock:
                unavailable.append(i)
        else:
            with lock:
                ok.append(response.photo.name)
        if i == 20:
            started.set()

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(send, i) for i in range(UPLOADS)]
        assert started.wait(120)
        kafka.stop()
        outage_ends = time.monotonic() + OUTAGE_S
        while time.monotonic() < outage_ends:  # the outage itself: uploads go on meanwhile
            time.sleep(0.5)
        kafka.start()
        for future in futures:
            future.result()
    assert len(ok) + len(unavailable) == UPLOADS and len(set(ok)) == len(ok)

    wait_all_indexed(stack, key, len(ok))
    assert counts(stack, key)[photo_pb2.PHOTO_STATUS_UNSPECIFIED] == len(ok)
    # Redelivery after the outage never makes a second vector: one per photo.
    vectors = open_vectors(stack.settings())
    model = stack.ingest.GetPhoto(ingest_pb2.GetPhotoRequest(name=ok[0]), metadata=bearer_metadata(key)
                                  ).photo.embedding_models[0]
    try:
        assert vectors.count(model) == len(ok)
    finally:
        vectors.close()


def test_vector_store_outage_fails_searches_clearly_and_indexing_catches_up(stack, own_engines):
    _, weaviate = own_engines
    key = stack.add_user("bob")
    weaviate.stop()
    try:
        names = [upload(stack.ingest, key, jpeg_bytes(color=(i * 11 % 256, 40, 200)), f"later-{i}.jpg").photo.name
                 for i in range(20)]
        with pytest.raises(grpc.RpcError) as err:
            stack.search.SearchPhotos(search_pb2.SearchPhotosRequest(query="a photo"),
                                      metadata=bearer_metadata(key), timeout=60)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "unavailable" in err.value.details() and weaviate.env["WEAVIATE_HTTP_PORT"] in err.value.details()
        time.sleep(OUTAGE_S)  # the rest of the outage: the worker keeps retrying its batch
        assert counts(stack, key)[photo_pb2.PHOTO_STATUS_INDEXED] == 0
    finally:
        weaviate.start()
    wait_all_indexed(stack, key, len(names))
    found = stack.search.SearchPhotos(search_pb2.SearchPhotosRequest(query="a photo", page_size=50),
                                      metadata=bearer_metadata(key), timeout=60)
    assert {h.photo.name for h in found.hits} == set(names)
