"""The embed worker against the embedded backends in tmp_path and an in-process EmbedService
(CLIP only, except where the labels, OCR and sentence models are the point)."""
from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import io
import shutil
import uuid
from concurrent import futures

import grpc
import numpy as np
import pytest
import skimage.data
from PIL import Image
from prometheus_client import REGISTRY

from embed_svc.worker import GROUP, EmbedWorker
from photos.v1 import embed_pb2, embed_pb2_grpc
from photostore.auth import service_api_key
from photostore.backends import open_blobs, open_events, open_metadata, open_vectors
from photostore.backends.base import (
    SPACE_CLIP, SPACE_TEXT, STATUS_FAILED, STATUS_INDEXED, TOPIC_PHOTO_STATUS, TOPIC_PHOTO_UPLOADED,
    BlobStore, EventLog, VectorStore)
from photostore.server import make_channel
from photostore.settings import Settings
from tests.test_embed import clip_only_settings, start_embed_server, stop_embed_server, wait_for
from tests.test_signals import TEXT_MODEL, chelsea, sign
from tests.tinyclip import TINY_EMBED_DIM, write_tiny_checkpoint

pytestmark = pytest.mark.timeout(120)

OWNER = "owner-1"
TAKEN = dt.datetime(2022, 7, 1, 9, 30, tzinfo=dt.timezone.utc)


def png(seed: int) -> bytes:
    """A distinct small real photo per seed (crops of the astronaut)."""
    x, y = 40 * (seed % 8), 40 * (seed // 8 % 8)
    return encode(Image.fromarray(skimage.data.astronaut()[y:y + 96, x:x + 128]))


def encode(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


@dataclasses.dataclass
class Backends:
    settings: Settings
    blobs: BlobStore
    events: EventLog
    vectors: VectorStore

    def upload(self, data: bytes | None, *, photo_id: str | None = None, **extra) -> str:
        """Writes the blob (unless None: a deleted photo) and publishes photos.uploaded, as ingest does."""
        photo_id = photo_id or uuid.uuid4().hex
        blob_key = f"originals/{OWNER}/{photo_id}"
        if data is not None:
            self.blobs.put_bytes(blob_key, data, "image/png")
        self.events.producer().send(TOPIC_PHOTO_UPLOADED, photo_id, {
            "photo_id": photo_id, "owner": OWNER, "blob_key": blob_key, "sha256": "",
            "content_type": "image/png", "taken_at": None, "camera_make": "", "camera_model": "",
            **extra})
        return photo_id

    def statuses(self) -> list[dict]:
        consumer = self.events.consumer(f"test-{uuid.uuid4().hex}", [TOPIC_PHOTO_STATUS])
        return [e.value for e in consumer.poll(max_records=1000, timeout_s=0)]

    def lag(self) -> int:
        """Uploads the worker group has not committed, as a restarted worker would see them."""
        return self.events.consumer(GROUP, [TOPIC_PHOTO_UPLOADED]).lag()

    def worker(self, target: str, consumer=None) -> tuple[EmbedWorker, grpc.Channel]:
        channel = make_channel(target)
        worker = EmbedWorker(
            self.settings, consumer=consumer or self.events.consumer(GROUP, [TOPIC_PHOTO_UPLOADED]),
            producer=self.events.producer(), blobs=self.blobs, vectors=self.vectors,
            stub=embed_pb2_grpc.EmbedServiceStub(channel),
            api_key=service_api_key(self.settings, open_metadata(self.settings)))
        return worker, channel


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tinyclip"))


def make_backends(settings: Settings) -> Backends:
    return Backends(settings, open_blobs(settings), open_events(settings), open_vectors(settings))


def worker_settings(tiny, tmp_path, **overrides) -> Settings:
    return clip_only_settings(tiny, tmp_path / "data", worker_batch_size=4, worker_max_attempts=3,
                         worker_backoff_seconds=0.05, worker_backoff_max_seconds=0.2, **overrides)


@pytest.fixture
def stack(tiny, tmp_path):
    """(backends, embed server, worker) sharing one data dir."""
    settings = worker_settings(tiny, tmp_path)
    server = start_embed_server(settings)
    wait_for(lambda: server.info().ready)
    backends = make_backends(settings)
    worker, channel = backends.worker(f"127.0.0.1:{server.svc.port}")
    yield backends, server, worker
    channel.close()
    stop_embed_server(server)


def test_worker_indexes_uploads_then_commits(stack):
    backends, server, worker = stack
    photos = {backends.upload(png(i)): png(i) for i in range(5)}
    dated = backends.upload(png(5), taken_at=TAKEN.isoformat(), camera_make="Canon", camera_model="EOS R")
    photos[dated] = png(5)
    assert backends.lag() == 6

    totals = worker.run_until_idle()

    assert (totals.indexed, totals.failed, totals.skipped) == (6, 0, 0)
    model = server.info().model
    assert backends.vectors.count(model) == 6
    for photo_id, data in photos.items():
        stored = backends.vectors.get(photo_id)
        expected = np.array(server.embed_images([data]).embeddings[0].values, np.float32)
        assert stored.owner == OWNER and stored.model == model
        assert stored.vector.shape == (TINY_EMBED_DIM,)
        np.testing.assert_allclose(stored.vector, expected, atol=1e-5)
    stored = backends.vectors.get(dated)
    assert (stored.taken_at, stored.camera_make, stored.camera_model) == (TAKEN, "Canon", "EOS R")
    statuses = backends.statuses()
    assert sorted(s["photo_id"] for s in statuses) == sorted(photos)
    assert all(s["status"] == STATUS_INDEXED and s["embedding_model"] == model and s["attempts"] == 1
               and s["reason"] == "" and s["owner"] == OWNER and s["embedding_models"] == [model]
               and "labels" not in s for s in statuses)  # not analysed: ingest leaves labels as they are
    assert backends.vectors.get(dated, SPACE_TEXT) is None
    assert backends.lag() == 0


def test_redelivery_never_makes_a_second_vector(stack):
    backends, server, worker = stack
    photo_ids = [backends.upload(png(i)) for i in range(3)]
    backends.upload(png(0), photo_id=photo_ids[0])  # the outbox sent this one twice
    # A second member of the group that started before anything was committed: it sees it all again.
    late_worker, late_channel = backends.worker(f"127.0.0.1:{server.svc.port}")

    worker.run_until_idle()
    assert backends.vectors.count() == 3
    try:
        redone = late_worker.step()
    finally:
        late_channel.close()

    assert redone.indexed == 4
    assert backends.vectors.count() == 3
    assert len([s for s in backends.statuses() if s["status"] == STATUS_INDEXED]) == 8
    assert backends.lag() == 0


def test_undecodable_blob_fails_at_once_and_deleted_photo_is_skipped(stack):
    backends, server, worker = stack
    good = [backends.upload(png(i)) for i in range(2)]
    garbage = backends.upload(b"this is not an image")
    gone = backends.upload(None)
    truncated = backends.upload(png(3)[:500])

    totals = worker.run_until_idle()

    assert (totals.indexed, totals.failed, totals.skipped) == (2, 2, 1)
    statuses = {s["photo_id"]: s for s in backends.statuses()}
    assert gone not in statuses
    assert all(statuses[p]["status"] == STATUS_INDEXED for p in good)
    for bad in (garbage, truncated):
        assert statuses[bad]["status"] == STATUS_FAILED and statuses[bad]["attempts"] == 1
        assert statuses[bad]["reason"].startswith("cannot decode image: ")
        assert backends.vectors.get(bad) is None
    assert "unknown or unsupported image format" in statuses[garbage]["reason"]
    assert backends.vectors.count() == 2
    assert backends.lag() == 0


def test_malformed_events_do_not_block_the_queue(stack):
    backends, server, worker = stack
    odd_time = backends.upload(png(0), taken_at="last summer")
    no_key = backends.upload(png(1), blob_key="")
    after = backends.upload(png(2))

    totals = worker.run_until_idle()

    assert (totals.indexed, totals.failed) == (2, 1)
    assert backends.vectors.get(odd_time).taken_at is None
    statuses = {s["photo_id"]: s for s in backends.statuses()}
    assert statuses[no_key]["status"] == STATUS_FAILED and "bad blob key" in statuses[no_key]["reason"]
    assert statuses[after]["status"] == STATUS_INDEXED
    assert backends.lag() == 0


def test_uploads_wait_uncommitted_until_the_model_is_ready(tiny, tmp_path):
    checkpoint = tmp_path / "weights" / "tiny.pt"
    settings = worker_settings(tiny, tmp_path, model_pretrained=str(checkpoint))
    server = start_embed_server(settings)
    backends = make_backends(settings)
    worker, channel = backends.worker(f"127.0.0.1:{server.svc.port}")
    try:
        photo_ids = [backends.upload(png(i)) for i in range(2)]
        wait_for(lambda: "cannot load" in server.info().reason)
        for _ in range(2):
            assert worker.step() is None
        assert backends.lag() == 2
        assert backends.vectors.count() == 0 and backends.statuses() == []

        checkpoint.parent.mkdir()
        shutil.copy(tiny.checkpoint_path, checkpoint)
        wait_for(lambda: server.info().ready)
        totals = worker.run_until_idle()

        assert totals.indexed == 2
        assert sorted(s["photo_id"] for s in backends.statuses()) == sorted(photo_ids)
        assert backends.lag() == 0
    finally:
        channel.close()
        stop_embed_server(server)


def items_inferred(kind: str) -> float:
    """Items the in-process EmbedService has run through the `kind` model so far."""
    return REGISTRY.get_sample_value("embed_batch_size_sum", {"kind": kind}) or 0.0


def test_signals_index_without_clip_and_a_reindex_adds_only_what_is_missing(tiny, tmp_path):
    checkpoint = tmp_path / "weights" / "tiny.pt"
    settings = worker_settings(tiny, tmp_path, model_pretrained=str(checkpoint), signals_enabled=True)
    server = start_embed_server(settings)
    backends = make_backends(settings)
    worker, channel = backends.worker(f"127.0.0.1:{server.svc.port}")
    photos = {"cat": encode(chelsea().resize((225, 150))), "shop": encode(sign())}
    try:
        ids = {name: backends.upload(data) for name, data in photos.items()}
        wait_for(lambda: all(m.ready for m in server.info().models if m.role != "clip"), timeout_s=120)
        assert not server.info().ready

        assert worker.run_until_idle().indexed == 2
        statuses = {s["photo_id"]: s for s in backends.statuses()}
        for name, photo_id in ids.items():
            assert statuses[photo_id]["embedding_model"] == ""
            assert statuses[photo_id]["embedding_models"] == [TEXT_MODEL]
            stored = backends.vectors.get(photo_id, SPACE_TEXT)
            assert (stored.model, stored.owner, stored.vector.shape) == (TEXT_MODEL, OWNER, (384,))
            [analysis] = server.stub.AnalyzeImages(embed_pb2.AnalyzeImagesRequest(images=[photos[name]]),
                                                   metadata=server.auth).analyses
            np.testing.assert_allclose(stored.vector, analysis.text_embedding.values, atol=1e-5)
            assert statuses[photo_id]["labels"] == [[label.name, pytest.approx(label.score)]
                                                    for label in analysis.labels]
            assert backends.vectors.get(photo_id, SPACE_CLIP) is None
        assert statuses[ids["cat"]]["labels"][0][0] in {"tabby", "tiger cat", "Egyptian cat"}
        assert statuses[ids["shop"]]["ocr_text"].split() == ["CAFE", "ROMA"]

        backends.upload(photos["shop"], photo_id=ids["shop"])  # redelivered
        assert worker.run_until_idle().indexed == 1
        assert backends.vectors.count(TEXT_MODEL) == 2

        checkpoint.parent.mkdir()
        shutil.copy(tiny.checkpoint_path, checkpoint)
        clip_model = wait_for(lambda: (i := server.info()).ready and i.model)
        for _ in range(2):  # the second time every space is current: nothing is inferred at all
            labelled, embedded = items_inferred("labels"), items_inferred("image")
            for name, photo_id in ids.items():
                backends.upload(photos[name], photo_id=photo_id, reindex=True)
            assert worker.run_until_idle().indexed == 2
            assert items_inferred("labels") == labelled  # the text vectors were current
            statuses = {s["photo_id"]: s for s in backends.statuses()}
            for photo_id in ids.values():
                assert statuses[photo_id]["embedding_model"] == clip_model
                assert statuses[photo_id]["embedding_models"] == [clip_model, TEXT_MODEL]
                assert "labels" not in statuses[photo_id]  # left as they are
                assert backends.vectors.get(photo_id, SPACE_CLIP).model == clip_model
        assert items_inferred("image") == embedded
        assert (backends.vectors.count(TEXT_MODEL), backends.vectors.count(clip_model)) == (2, 2)
        assert backends.lag() == 0
    finally:
        channel.close()
        stop_embed_server(server)


def test_unreachable_service_keeps_uploads_queued(tiny, tmp_path):
    backends = make_backends(worker_settings(tiny, tmp_path))
    backends.upload(png(0))
    with grpc.insecure_channel("127.0.0.1:1") as nowhere:
        worker = EmbedWorker(
            backends.settings, consumer=backends.events.consumer(GROUP, [TOPIC_PHOTO_UPLOADED]),
            producer=backends.events.producer(), blobs=backends.blobs, vectors=backends.vectors,
            stub=embed_pb2_grpc.EmbedServiceStub(nowhere), api_key="psk_unused")
        assert worker.step() is None
    assert backends.lag() == 1 and backends.statuses() == []


# Retries, against a scripted EmbedService -------------------------------------------------------

class ScriptedEmbedService(embed_pb2_grpc.EmbedServiceServicer):
    """Ready at once; EmbedImages fails with the scripted codes first, then embeds."""

    MODEL = "scripted/1"

    def __init__(self, failures: list[grpc.StatusCode]):
        self.failures = collections.deque(failures)
        self.calls = 0

    def GetModelInfo(self, request, context):
        return embed_pb2.GetModelInfoResponse(model=self.MODEL, dimension=2, ready=True, device="cpu")

    def EmbedImages(self, request, context):
        self.calls += 1
        if self.failures:
            context.abort(self.failures.popleft(), "scripted failure")
        return embed_pb2.EmbedImagesResponse(
            embeddings=[embed_pb2.Embedding(values=[0.6, 0.8]) for _ in request.images], model=self.MODEL)


@pytest.fixture
def scripted(tiny, tmp_path):
    """Returns start(failures) -> (backends, service, worker)."""
    servers, channels = [], []

    def start(failures: list[grpc.StatusCode]):
        service = ScriptedEmbedService(failures)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        embed_pb2_grpc.add_EmbedServiceServicer_to_server(service, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        backends = make_backends(worker_settings(tiny, tmp_path))
        worker, channel = backends.worker(f"127.0.0.1:{port}")
        channels.append(channel)
        return backends, service, worker

    yield start
    for channel in channels:
        channel.close()
    for server in servers:
        server.stop(0)


def test_transient_error_is_retried_within_the_attempt(scripted):
    backends, service, worker = scripted([grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
    photo_id = backends.upload(png(0))
    assert worker.run_until_idle().indexed == 1
    assert service.calls == 3
    [status] = backends.statuses()
    assert (status["photo_id"], status["status"], status["attempts"]) == (photo_id, STATUS_INDEXED, 1)


def test_failed_attempt_holds_back_the_rest_of_the_batch_until_it_is_retried(scripted):
    backends, service, worker = scripted([grpc.StatusCode.INTERNAL])
    first, second = backends.upload(png(0)), backends.upload(png(1))

    stats = worker.step()
    assert (stats.indexed, stats.retrying) == (0, 2)
    assert backends.lag() == 2 and backends.statuses() == []

    assert worker.run_until_idle().indexed == 2
    statuses = {s["photo_id"]: s for s in backends.statuses()}
    assert statuses[first]["attempts"] == 2 and statuses[second]["attempts"] == 1
    assert backends.vectors.count(ScriptedEmbedService.MODEL) == 2


def test_photo_fails_after_max_attempts_with_the_reason(scripted):
    backends, service, worker = scripted([grpc.StatusCode.INTERNAL] * 10)
    photo_id = backends.upload(png(0))
    totals = worker.run_until_idle()
    assert (totals.indexed, totals.failed) == (0, 1)
    [status] = backends.statuses()
    assert status["photo_id"] == photo_id and status["status"] == STATUS_FAILED
    assert status["attempts"] == 3
    assert "gave up after 3 attempts" in status["reason"] and "INTERNAL" in status["reason"]
    assert backends.vectors.get(photo_id) is None
    assert backends.lag() == 0
