"""The embed worker against the embedded backends in tmp_path and an in-process EmbedService
(CLIP only, except where the labels, OCR and sentence models are the point)."""
from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import io
import random
import shutil
import threading
import uuid
from concurrent import futures
from typing import Callable

import grpc
import numpy as np
import pytest
import skimage.data
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from prometheus_client import REGISTRY

from embed_svc.worker import (
    GROUP, BatchStats, EmbedWorker, StageWorker, TextWorker, group_backlog, ready_models_of, serve_health)
from photos.v1 import embed_pb2, embed_pb2_grpc, events_pb2, photo_pb2
from photostore import events as photo_events
from photostore.auth import service_api_key
from photostore.backends import open_blobs, open_events, open_vectors
from photostore.backends.base import (
    SPACE_CLIP, SPACE_TEXT, TOPIC_PHOTO_STATUS, TOPIC_PHOTO_TEXT, TOPIC_PHOTO_TEXT_DLQ, TOPIC_PHOTO_UPLOADED,
    TOPIC_PHOTO_UPLOADED_DLQ,
    BlobStore,
    Event, EventConsumer, EventLog, PhotoRecord, VectorFilter, VectorObject, VectorStore, utcnow, words)
from photostore.server import NOT_SERVING, SERVING, make_channel
from photostore.settings import Settings
from tests.test_embed import clip_only_settings, start_embed_server, stop_embed_server, wait_for
from tests.test_signals import TEXT_MODEL, chelsea, sign
from tests.engines import free_port
from tests.tinyclip import TINY_EMBED_DIM, write_tiny_checkpoint

pytestmark = pytest.mark.timeout(120)

OWNER = "owner-1"
TAKEN = dt.datetime(2022, 7, 1, 9, 30, tzinfo=dt.timezone.utc)
DRAIN_TIMEOUT_S = 60.0
INDEXED = photo_pb2.PHOTO_STATUS_INDEXED
FAILED = photo_pb2.PHOTO_STATUS_FAILED


def png(seed: int) -> bytes:
    """A distinct small real photo per seed (crops of the astronaut)."""
    x, y = 40 * (seed % 8), 40 * (seed // 8 % 8)
    return encode(Image.fromarray(skimage.data.astronaut()[y:y + 96, x:x + 128]))


def encode(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


class Wrapped(EventConsumer):
    """A group member that does what the one it wraps does (a test overrides one behaviour)."""

    def __init__(self, inner: EventConsumer):
        self._inner = inner

    def poll(self, max_records: int = 100, timeout_s: float = 1.0) -> list[Event]:
        return self._inner.poll(max_records, timeout_s)

    def commit(self, events) -> None:
        self._inner.commit(events)

    def seek_to_committed(self, partitions=None) -> None:
        self._inner.seek_to_committed(partitions)

    def assignment(self):
        return self._inner.assignment()

    def close(self) -> None:
        self._inner.close()


class CommitLost(Wrapped):
    """A group member whose commits never reach the log: its worker dies before committing."""

    def commit(self, events) -> None:
        pass


@dataclasses.dataclass
class Member:
    """One worker process: its own group member, channel and any backend handles of its own."""
    worker: EmbedWorker
    consumer: EventConsumer
    channel: grpc.Channel
    handles: list = dataclasses.field(default_factory=list)
    closed: bool = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.channel.close()
        self.consumer.close()
        for handle in self.handles:
            handle.close()


@dataclasses.dataclass
class Backends:
    settings: Settings
    blobs: BlobStore
    events: EventLog
    vectors: VectorStore
    records: dict[str, PhotoRecord] = dataclasses.field(default_factory=dict)
    members: list[Member] = dataclasses.field(default_factory=list)

    def upload(self, data: bytes | None, *, photo_id: str | None = None, blob_key: str | None = None,
               filename: str = "photo.png", taken_at: dt.datetime | None = None, camera_make: str = "",
               camera_model: str = "", model_copy: bytes | None = None) -> str:
        """Writes the blob (unless None: a deleted photo) and the model copy (if given), and
        publishes photos.uploaded, as ingest does."""
        photo_id = photo_id or uuid.uuid4().hex
        blob_key = f"originals/{OWNER}/{photo_id}" if blob_key is None else blob_key
        if data is not None:
            self.blobs.put_bytes(blob_key, data, "image/png")
        now = utcnow()
        record = PhotoRecord(
            id=photo_id, owner=OWNER, filename=filename, sha256="", content_type="image/png",
            size_bytes=len(data or b""), width=128, height=96, blob_key=blob_key, thumbnail_key="",
            created_at=now, updated_at=now, taken_at=taken_at, camera_make=camera_make,
            camera_model=camera_model)
        if model_copy is not None:
            self.blobs.put_bytes(record.model_copy_key, model_copy, "image/jpeg")
        self.records[photo_id] = record
        self.events.producer().send_many([photo_events.uploaded_record(record)])
        return photo_id

    def reindex(self, photo_ids: list[str]) -> None:
        self.events.producer().send_many([photo_events.reindex_record(self.records[p]) for p in photo_ids])

    def read(self, topic: str) -> list[Event]:
        """Everything on the topic, by (partition, offset), read by a group of its own."""
        consumer = self.events.consumer(f"test-{uuid.uuid4().hex}", [topic])
        try:
            found: list[Event] = []
            while batch := consumer.poll(max_records=1000, timeout_s=0):
                found += batch
            return sorted(found, key=lambda e: (e.partition, e.offset))
        finally:
            consumer.close()

    def statuses(self) -> list[events_pb2.PhotoStatusChangedEvent]:
        return [photo_events.decode(e).status_changed for e in self.read(TOPIC_PHOTO_STATUS)]

    def status_by_photo(self) -> dict[str, events_pb2.PhotoStatusChangedEvent]:
        """The latest status of each photo."""
        return {s.photo_id: s for s in self.statuses()}

    def queued(self) -> list[tuple[Event, events_pb2.PhotoEvent]]:
        """photos.uploaded records with their decoded indexing requests."""
        return [(e, photo_events.decode(e)) for e in self.read(TOPIC_PHOTO_UPLOADED)]

    def dead_letters(self) -> list[Event]:
        return self.read(TOPIC_PHOTO_UPLOADED_DLQ)

    def lag(self) -> int:
        """Uploads the worker group has not committed, as a restarted worker would see them."""
        return sum(self.events.lag(GROUP, [TOPIC_PHOTO_UPLOADED]).values())

    def worker(self, target: str, *, consumer: EventConsumer | None = None, own_handles: bool = False,
               stage: type[StageWorker] = EmbedWorker, ahead: Callable[[], int] | None = None) -> Member:
        """A new worker of the stage, as a new process would start: with own_handles, on event log
        and vector store handles of its own."""
        events, vectors = ((open_events(self.settings), open_vectors(self.settings)) if own_handles
                           else (self.events, self.vectors))
        channel = make_channel(target)
        consumer = consumer or events.consumer(stage.group, [stage.topic])
        worker = stage(
            self.settings, consumer=consumer, producer=events.producer(), blobs=self.blobs,
            vectors=vectors, stub=embed_pb2_grpc.EmbedServiceStub(channel),
            api_key=service_api_key(self.settings), backlog=group_backlog(events, stage), ahead=ahead)
        member = Member(worker, consumer, channel, [events, vectors] if own_handles else [])
        self.members.append(member)
        return member

    def close(self) -> None:
        for member in self.members:
            member.close()


def dead_letter_of(event: Event) -> events_pb2.PhotoEvent:
    message = photo_events.decode(event)
    assert message.HasField("dead_letter")
    return message


def subject_of(message: events_pb2.PhotoEvent) -> events_pb2.IndexingSubject:
    return photo_events.indexing_request(message).subject


def subject_sent(backends: Backends, photo_id: str) -> events_pb2.IndexingSubject:
    """What ingest put in the photo's indexing request."""
    return photo_events.indexing_subject(backends.records[photo_id])


def drain(worker: EmbedWorker, timeout_s: float = DRAIN_TIMEOUT_S) -> BatchStats:
    """worker.run_until_idle(), stopped and failed if the backlog is not empty within timeout_s
    (a record that blocks its partition would keep it running for ever)."""
    with futures.ThreadPoolExecutor(max_workers=1) as pool:
        run = pool.submit(worker.run_until_idle)
        try:
            return run.result(timeout=timeout_s)
        except futures.TimeoutError:
            worker.stop()
            run.result(timeout=timeout_s)
            pytest.fail(f"the worker group still had a backlog after {timeout_s} s")


def keyword_hits(vectors: VectorStore, *terms: str, owner: str = OWNER) -> list[str]:
    return [photo_id for photo_id, _ in vectors.keyword_search(VectorFilter(owner=owner), list(terms))]


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
    member = backends.worker(f"127.0.0.1:{server.svc.port}")
    yield backends, server, member.worker
    backends.close()
    stop_embed_server(server)


def test_worker_indexes_uploads_in_batches_then_commits(stack):
    backends, server, worker = stack
    photos = {backends.upload(png(i), filename=f"astronaut-{i}.png"): png(i) for i in range(5)}
    dated = backends.upload(png(5), filename="Lighthouse_at-dawn.PNG", taken_at=TAKEN,
                            camera_make="Canon", camera_model="EOS R")
    photos[dated] = png(5)
    assert backends.lag() == 6

    first = worker.step()  # one batch: worker_batch_size uploads
    assert (first.indexed, first.failed, first.skipped, first.retrying) == (4, 0, 0, 0)
    assert backends.lag() == 2
    totals = drain(worker)

    assert (totals.indexed, totals.failed, totals.skipped) == (2, 0, 0)
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
    assert sorted(s.photo_id for s in statuses) == sorted(photos)
    for s in statuses:
        assert (s.status, s.clip_model, list(s.embedding_models), s.attempts, s.reason, s.owner) == (
            INDEXED, model, [model], 1, "", OWNER)
        assert not s.analysed and not s.labels  # not analysed: ingest leaves labels as they are
    assert backends.vectors.get(dated, SPACE_TEXT) is None
    assert backends.dead_letters() == []
    assert backends.lag() == 0
    # The filename's words are keywords.
    assert keyword_hits(backends.vectors, "lighthouse") == [dated]
    assert keyword_hits(backends.vectors, "dawn", "nowhere") == [dated]
    assert sorted(keyword_hits(backends.vectors, "astronaut")) == sorted(set(photos) - {dated})
    assert keyword_hits(backends.vectors, "lighthouse", owner="someone-else") == []


def test_redelivery_never_makes_a_second_vector(stack):
    backends, server, worker = stack
    photo_ids = [backends.upload(png(i)) for i in range(3)]
    backends.upload(png(0), photo_id=photo_ids[0])  # the outbox sent this one twice
    target = f"127.0.0.1:{server.svc.port}"
    backends.members.pop().close()  # the fixture's worker is not started
    doomed = backends.worker(target, consumer=CommitLost(backends.events.consumer(
        GROUP, [TOPIC_PHOTO_UPLOADED])))

    assert doomed.worker.step().indexed == 4
    assert backends.vectors.count() == 3
    assert backends.lag() == 4  # it died before committing
    doomed.close()
    redone = drain(backends.worker(target).worker)

    assert redone.indexed == 4
    assert backends.vectors.count() == 3
    indexed = collections.Counter(s.photo_id for s in backends.statuses() if s.status == INDEXED)
    assert indexed == {photo_ids[0]: 4, photo_ids[1]: 2, photo_ids[2]: 2}
    assert backends.lag() == 0


def test_undecodable_blob_fails_at_once_and_deleted_photo_is_skipped(stack):
    backends, server, worker = stack
    good = [backends.upload(png(i)) for i in range(2)]
    garbage = backends.upload(b"this is not an image")
    gone = backends.upload(None)
    truncated = backends.upload(png(3)[:500])

    totals = drain(worker)

    assert (totals.indexed, totals.failed, totals.skipped, totals.retrying) == (2, 2, 1, 0)
    statuses = backends.status_by_photo()
    assert gone not in statuses
    assert all(statuses[p].status == INDEXED for p in good)
    for bad in (garbage, truncated):
        assert statuses[bad].status == FAILED and statuses[bad].attempts == 1
        assert statuses[bad].reason.startswith("cannot decode image: ")
        assert backends.vectors.get(bad) is None
    assert "unknown or unsupported image format" in statuses[garbage].reason
    assert backends.vectors.count() == 2
    queued = backends.queued()
    assert len(queued) == 5  # nothing was queued again
    origin = {subject_of(message).photo_id: event for event, message in queued}
    dead = {subject_of(m).photo_id: m for m in map(dead_letter_of, backends.dead_letters())}
    assert sorted(dead) == sorted([garbage, truncated])
    for bad, message in dead.items():
        letter = message.dead_letter
        assert message.WhichOneof("event") == "uploaded"
        assert letter.reason == statuses[bad].reason
        assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
            TOPIC_PHOTO_UPLOADED, origin[bad].partition, origin[bad].offset)
    assert backends.lag() == 0


def test_the_index_stage_reads_the_copy_made_at_upload_where_it_is_large_enough(tiny, tmp_path):
    """The copy ingest made is read instead of the original (here an undecodable one, so only the
    copy can index); a model that needs more pixels than the copy has reads the original."""
    settings = worker_settings(tiny, tmp_path)
    server = start_embed_server(settings)
    backends = make_backends(settings)
    try:
        wait_for(lambda: server.info().ready)
        image_size = ready_models_of(server.stub.GetModelInfo(embed_pb2.GetModelInfoRequest(),
                                                               metadata=server.auth)).image_size
        assert 0 < image_size <= settings.model_copy_px
        target = f"127.0.0.1:{server.svc.port}"
        copy = png(1)
        from_copy = backends.upload(b"an original the worker cannot decode", model_copy=copy)
        first = backends.worker(target)
        assert drain(first.worker).indexed == 1
        first.close()  # the next worker takes over its partitions
        stored = backends.vectors.get(from_copy, SPACE_CLIP)
        expected = np.array(server.embed_images([copy]).embeddings[0].values, np.float32)
        np.testing.assert_allclose(stored.vector, expected, atol=1e-5)

        backends.settings = settings.model_copy(update={"model_copy_px": image_size - 1})
        too_small = backends.upload(b"an original the worker cannot decode", model_copy=copy)
        assert drain(backends.worker(target).worker).failed == 1
        status = backends.status_by_photo()[too_small]
        assert status.status == FAILED and "cannot decode image" in status.reason
        assert backends.vectors.get(too_small, SPACE_CLIP) is None
    finally:
        backends.close()
        stop_embed_server(server)


def test_malformed_records_are_dead_lettered_without_blocking_their_partition(stack):
    backends, server, worker = stack
    behind = uuid.uuid4().hex  # every bad record below shares its key, so its partition
    junk = random.Random(7).randbytes(64)
    with pytest.raises(photo_events.MalformedEventError):
        photo_events.decode(Event(TOPIC_PHOTO_UPLOADED, 0, 0, behind, junk, utcnow()))
    producer = backends.events.producer()
    producer.send(TOPIC_PHOTO_UPLOADED, behind, junk)
    not_a_request = photo_events.status_record(events_pb2.PhotoStatusChangedEvent(
        photo_id=behind, owner=OWNER, status=INDEXED))
    producer.send(TOPIC_PHOTO_UPLOADED, behind, not_a_request.value)
    no_blob_key = events_pb2.PhotoEvent(uploaded=events_pb2.PhotoUploadedEvent(
        subject=events_pb2.IndexingSubject(photo_id=behind, owner=OWNER))).SerializeToString()
    producer.send(TOPIC_PHOTO_UPLOADED, behind, no_blob_key)
    escaping = backends.upload(None, blob_key="../../outside.png")
    backends.upload(png(2), photo_id=behind)

    totals = drain(worker)

    assert (totals.indexed, totals.failed, totals.retrying) == (1, 4, 0)
    queued = backends.read(TOPIC_PHOTO_UPLOADED)
    assert len({e.partition for e in queued if e.key == behind}) == 1
    statuses = backends.status_by_photo()
    assert statuses[behind].status == INDEXED and backends.vectors.get(behind) is not None
    assert statuses[escaping].status == FAILED and "bad blob key" in statuses[escaping].reason
    dead = backends.dead_letters()
    dead_behind = sorted((dead_letter_of(e) for e in dead if e.key == behind),
                         key=lambda d: d.dead_letter.source_offset)
    assert len(dead_behind) == 3
    assert all(d.dead_letter.source_topic == TOPIC_PHOTO_UPLOADED for d in dead_behind)
    junk_letter, status_letter, no_key_letter = sorted(
        dead_behind, key=lambda d: (d.WhichOneof("event") or "", d.WhichOneof("event") == "uploaded"))
    assert junk_letter.dead_letter.original == junk and "parsing" in junk_letter.dead_letter.reason
    assert status_letter.WhichOneof("event") == "status_changed" and "work request" in status_letter.dead_letter.reason
    assert no_key_letter.uploaded.subject.photo_id == behind and "blob key" in no_key_letter.dead_letter.reason
    [escaped] = [dead_letter_of(e) for e in dead if e.key == escaping]
    assert escaped.dead_letter.reason == statuses[escaping].reason
    assert backends.lag() == 0


def test_uploads_wait_uncommitted_until_the_model_is_ready(tiny, tmp_path):
    checkpoint = tmp_path / "weights" / "tiny.pt"
    settings = worker_settings(tiny, tmp_path, model_pretrained=str(checkpoint))
    server = start_embed_server(settings)
    backends = make_backends(settings)
    worker = backends.worker(f"127.0.0.1:{server.svc.port}").worker
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
        totals = drain(worker)

        assert totals.indexed == 2
        assert sorted(s.photo_id for s in backends.statuses()) == sorted(photo_ids)
        assert backends.lag() == 0
    finally:
        backends.close()
        stop_embed_server(server)


def items_inferred(kind: str) -> float:
    """Items the in-process EmbedService has run through the `kind` model so far."""
    return REGISTRY.get_sample_value("embed_batch_size_sum", {"kind": kind}) or 0.0


def test_reindex_leaves_a_current_vector_alone_and_replaces_an_old_one(stack):
    backends, server, worker = stack
    current, old = backends.upload(png(0)), backends.upload(png(1), filename="harbour.png")
    assert drain(worker).indexed == 2
    model = server.info().model
    kept = backends.vectors.get(current).vector.copy()
    retired = np.ones(TINY_EMBED_DIM, np.float32) / np.sqrt(TINY_EMBED_DIM)
    backends.vectors.upsert(VectorObject(photo_id=old, owner=OWNER, model="retired/0", vector=retired))
    embedded = items_inferred("image")

    backends.reindex([current, old])
    assert drain(worker).indexed == 2

    assert items_inferred("image") == embedded + 1  # only the old vector was computed again
    np.testing.assert_array_equal(backends.vectors.get(current).vector, kept)
    replaced = backends.vectors.get(old)
    assert replaced.model == model
    np.testing.assert_allclose(replaced.vector, server.embed_images([png(1)]).embeddings[0].values,
                               atol=1e-5)
    assert backends.vectors.count(model) == 2 and backends.vectors.count("retired/0") == 0
    assert len(backends.statuses()) == 4
    reindexed = backends.status_by_photo()
    assert all((s.status, s.clip_model, list(s.embedding_models), s.attempts) == (INDEXED, model, [model], 1)
               for s in reindexed.values())
    assert keyword_hits(backends.vectors, "harbour") == [old]  # the keywords stay
    assert backends.lag() == 0


def test_signals_index_without_clip_and_a_reindex_adds_only_what_is_missing(tiny, tmp_path):
    checkpoint = tmp_path / "weights" / "tiny.pt"
    settings = worker_settings(tiny, tmp_path, model_pretrained=str(checkpoint), signals_enabled=True)
    server = start_embed_server(settings)
    backends = make_backends(settings)
    worker = backends.worker(f"127.0.0.1:{server.svc.port}").worker
    photos = {"cat": encode(chelsea().resize((225, 150))), "shop": encode(sign())}
    try:
        filenames = {"cat": "chelsea.png", "shop": "street-corner.jpg"}
        ids = {name: backends.upload(data, filename=filenames[name]) for name, data in photos.items()}
        wait_for(lambda: all(m.ready for m in server.info().models if m.role != embed_pb2.MODEL_ROLE_CLIP),
                 timeout_s=120)
        assert not server.info().ready

        assert drain(worker).indexed == 2
        # Searchable at once, with labels; the text is read by the later stage.
        statuses = backends.status_by_photo()
        top_labels = {}
        for name, photo_id in ids.items():
            status = statuses[photo_id]
            assert status.text_state == photo_pb2.STAGE_STATE_PENDING and status.ocr_text == ""
            [analysis] = server.stub.AnalyzeImages(embed_pb2.AnalyzeImagesRequest(
                images=[photos[name]], skip_text=True), metadata=server.auth).analyses
            assert status.analysed and analysis.ocr_text == ""
            stored = backends.vectors.get(photo_id, SPACE_TEXT)
            if analysis.text_embedding.values:  # a text vector of the labels alone (not of colours alone)
                assert status.clip_model == "" and list(status.embedding_models) == [TEXT_MODEL]
                assert (stored.model, stored.owner, stored.vector.shape) == (TEXT_MODEL, OWNER, (384,))
                np.testing.assert_allclose(stored.vector, analysis.text_embedding.values, atol=1e-5)
            else:  # nothing to make a text vector of until its text is read
                assert list(status.embedding_models) == [] and stored is None
            assert [(label.text, pytest.approx(label.score)) for label in status.labels] == [
                (label.text, label.score) for label in analysis.labels]
            top_labels[name] = status.labels[0].text if status.labels else ""
            assert backends.vectors.get(photo_id, SPACE_CLIP) is None
        assert top_labels["cat"] in {"tabby", "tiger cat", "Egyptian cat"}
        assert keyword_hits(backends.vectors, "roma") == []
        assert keyword_hits(backends.vectors, "chelsea") == [ids["cat"]]
        text_requests = backends.read(TOPIC_PHOTO_TEXT)
        assert sorted(e.key for e in text_requests) == sorted(ids.values())

        reader = backends.worker(f"127.0.0.1:{server.svc.port}", stage=TextWorker).worker
        assert drain(reader).indexed == 2
        statuses = backends.status_by_photo()
        for name, photo_id in ids.items():
            status = statuses[photo_id]
            assert status.text_state == photo_pb2.STAGE_STATE_DONE and status.analysed
            assert status.status == photo_pb2.PHOTO_STATUS_UNSPECIFIED  # the status stays as it is
            assert list(status.embedding_models) == [TEXT_MODEL]
            [analysis] = server.stub.AnalyzeImages(embed_pb2.AnalyzeImagesRequest(images=[photos[name]]),
                                                   metadata=server.auth).analyses
            stored = backends.vectors.get(photo_id, SPACE_TEXT)
            np.testing.assert_allclose(stored.vector, analysis.text_embedding.values, atol=1e-5)
            assert status.ocr_text == analysis.ocr_text
        assert statuses[ids["shop"]].ocr_text.split() == ["CAFE", "ROMA"]
        # Filename, label and OCR words are keywords.
        assert keyword_hits(backends.vectors, "roma") == [ids["shop"]]
        label_word = sorted(words(top_labels["cat"]) - words(statuses[ids["shop"]].ocr_text))[0]
        assert ids["cat"] in keyword_hits(backends.vectors, label_word)
        assert keyword_hits(backends.vectors, "chelsea") == [ids["cat"]]
        assert keyword_hits(backends.vectors, "corner") == [ids["shop"]]

        backends.upload(photos["shop"], photo_id=ids["shop"], filename=filenames["shop"])  # redelivered
        assert drain(worker).indexed == 1 and drain(reader).indexed == 1  # both stages again
        assert backends.vectors.count(TEXT_MODEL) == 2

        checkpoint.parent.mkdir()
        shutil.copy(tiny.checkpoint_path, checkpoint)
        clip_model = wait_for(lambda: (i := server.info()).ready and i.model)
        for _ in range(2):  # the second time every space is current: nothing is inferred at all
            labelled, embedded = items_inferred("labels"), items_inferred("image")
            seen = len(backends.statuses())
            backends.reindex(list(ids.values()))
            assert drain(worker).indexed == 2
            assert items_inferred("labels") == labelled  # the text vectors were current
            assert len(backends.statuses()) == seen + 2
            reindexed = backends.status_by_photo()
            for photo_id in ids.values():
                assert reindexed[photo_id].clip_model == clip_model
                assert list(reindexed[photo_id].embedding_models) == [clip_model, TEXT_MODEL]
                assert not reindexed[photo_id].analysed  # labels left as they are
                assert backends.vectors.get(photo_id, SPACE_CLIP).model == clip_model
        assert items_inferred("image") == embedded
        assert (backends.vectors.count(TEXT_MODEL), backends.vectors.count(clip_model)) == (2, 2)
        assert keyword_hits(backends.vectors, "roma") == [ids["shop"]]  # CLIP vectors kept the keywords
        assert backends.lag() == 0
    finally:
        backends.close()
        stop_embed_server(server)


def test_unreachable_service_keeps_uploads_queued(tiny, tmp_path):
    backends = make_backends(worker_settings(tiny, tmp_path))
    backends.upload(png(0))
    consumer = backends.events.consumer(GROUP, [TOPIC_PHOTO_UPLOADED])
    with grpc.insecure_channel("127.0.0.1:1") as nowhere:
        worker = EmbedWorker(
            backends.settings, consumer=consumer, producer=backends.events.producer(), blobs=backends.blobs,
            vectors=backends.vectors, stub=embed_pb2_grpc.EmbedServiceStub(nowhere), api_key="psk_unused",
            backlog=group_backlog(backends.events))
        assert worker.step() is None
    consumer.close()
    assert backends.lag() == 1 and backends.statuses() == []


def test_two_workers_share_the_partitions_and_index_each_photo_once(stack):
    backends, server, _ = stack
    target = f"127.0.0.1:{server.svc.port}"
    backends.members.pop().close()
    first, second = (backends.worker(target, own_handles=True) for _ in range(2))

    def split_evenly() -> bool:
        for member in (first, second):
            assert member.consumer.poll(max_records=1, timeout_s=0) == []  # nothing is queued yet
        mine, theirs = first.consumer.assignment(), second.consumer.assignment()
        return len(mine) == len(theirs) == backends.settings.events.partitions // 2 and not mine & theirs

    wait_for(split_evenly)
    photo_ids = [backends.upload(png(i)) for i in range(20)]

    with futures.ThreadPoolExecutor(max_workers=2) as pool:
        runs = [pool.submit(m.worker.run_until_idle) for m in (first, second)]
        try:
            totals = [run.result(timeout=DRAIN_TIMEOUT_S) for run in runs]
        finally:
            for member in (first, second):
                member.worker.stop()

    assert all(t.indexed > 0 for t in totals)
    assert sum(t.indexed for t in totals) == 20 and sum(t.failed + t.retrying for t in totals) == 0
    indexed = collections.Counter(s.photo_id for s in backends.statuses() if s.status == INDEXED)
    assert indexed == {photo_id: 1 for photo_id in photo_ids}
    assert backends.vectors.count() == 20
    assert backends.lag() == 0


# Retries, against a scripted EmbedService -------------------------------------------------------

class ScriptedEmbedService(embed_pb2_grpc.EmbedServiceServicer):
    """Ready at once; EmbedImages fails with the scripted codes first, then embeds. With
    text_failures it also analyses images (labels, and OCR, which fails with those codes first).
    It keeps the size of every image it was sent."""

    MODEL = "scripted/1"
    TEXT_MODEL = "scripted-text/1"
    IMAGE_SIZE = 48
    OCR_SIZE = 80

    def __init__(self, failures: list[grpc.StatusCode], text_failures: list[grpc.StatusCode] | None = None):
        self.failures = collections.deque(failures)
        self.text_failures = None if text_failures is None else collections.deque(text_failures)
        self.calls = 0
        self.sizes: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)

    def GetModelInfo(self, request, context):
        models = [embed_pb2.ModelStatus(role=embed_pb2.MODEL_ROLE_CLIP, model=self.MODEL, ready=True,
                                        dimension=2, image_size=self.IMAGE_SIZE)]
        if self.text_failures is not None:
            models += [
                embed_pb2.ModelStatus(role=embed_pb2.MODEL_ROLE_LABELS, model="labels", ready=True,
                                      image_size=self.IMAGE_SIZE),
                embed_pb2.ModelStatus(role=embed_pb2.MODEL_ROLE_OCR, model="ocr", ready=True,
                                      image_size=self.OCR_SIZE),
                embed_pb2.ModelStatus(role=embed_pb2.MODEL_ROLE_SENTENCE, model=self.TEXT_MODEL, ready=True,
                                      dimension=2)]
        return embed_pb2.GetModelInfoResponse(device="cpu", models=models)

    def _keep_sizes(self, kind: str, images) -> None:
        self.sizes[kind] += [Image.open(io.BytesIO(data)).size for data in images]

    def EmbedImages(self, request, context):
        self.calls += 1
        self._keep_sizes("clip", request.images)
        if self.failures:
            context.abort(self.failures.popleft(), "scripted failure")
        return embed_pb2.EmbedImagesResponse(
            embeddings=[embed_pb2.Embedding(values=[0.6, 0.8]) for _ in request.images], model=self.MODEL)

    def AnalyzeImages(self, request, context):
        self._keep_sizes("labels" if request.skip_text else "ocr", request.images)
        if not request.skip_text and self.text_failures:
            context.abort(self.text_failures.popleft(), "scripted OCR failure")
        return embed_pb2.AnalyzeImagesResponse(model=self.TEXT_MODEL, analyses=[embed_pb2.ImageAnalysis(
            labels=[photo_pb2.Label(text="astronaut", score=0.9)], ocr_text="" if request.skip_text else "NASA",
            text_embedding=embed_pb2.Embedding(values=[0.8, 0.6] if request.skip_text else [0.0, 1.0]))
            for _ in request.images])


@pytest.fixture
def scripted(tiny, tmp_path):
    """Returns start(failures) -> (backends, service, target)."""
    servers, started = [], []

    def start(failures: list[grpc.StatusCode], text_failures: list[grpc.StatusCode] | None = None):
        service = ScriptedEmbedService(failures, text_failures)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        embed_pb2_grpc.add_EmbedServiceServicer_to_server(service, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        backends = make_backends(worker_settings(tiny, tmp_path))
        started.append(backends)
        return backends, service, f"127.0.0.1:{port}"

    yield start
    for backends in started:
        backends.close()
    for server in servers:
        server.stop(0)


def test_transient_error_is_retried_within_the_attempt(scripted):
    backends, service, target = scripted([grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
    photo_id = backends.upload(png(0))
    assert drain(backends.worker(target).worker).indexed == 1
    assert service.calls == 3
    [status] = backends.statuses()
    assert (status.photo_id, status.status, status.attempts) == (photo_id, INDEXED, 1)
    assert len(backends.queued()) == 1


def test_failed_attempt_is_queued_again_and_a_restarted_worker_continues_the_count(scripted):
    backends, service, target = scripted([grpc.StatusCode.INTERNAL] * 2)
    first, second = backends.upload(png(0)), backends.upload(png(1))

    for attempt in (1, 2):  # each attempt by a new worker, as after a restart
        member = backends.worker(target)
        stats = member.worker.step()
        member.close()
        assert (stats.indexed, stats.failed, stats.retrying) == (0, 0, 2)
        assert backends.statuses() == []
        queued = backends.queued()
        assert len(queued) == 2 + 2 * attempt
        again = [(e, m) for e, m in queued if m.uploaded.attempts == attempt]
        assert sorted(subject_of(m).photo_id for _, m in again) == sorted([first, second])
        assert all(subject_of(m) == subject_sent(backends, subject_of(m).photo_id) for _, m in again)
        assert backends.lag() == 2  # only the records queued again: the originals are committed

    assert drain(backends.worker(target).worker).indexed == 2
    statuses = backends.status_by_photo()
    assert (statuses[first].status, statuses[first].attempts) == (INDEXED, 3)
    assert (statuses[second].status, statuses[second].attempts) == (INDEXED, 3)
    assert backends.vectors.count(ScriptedEmbedService.MODEL) == 2
    assert backends.dead_letters() == []
    assert service.calls == 3
    assert backends.lag() == 0


def test_photo_is_dead_lettered_after_max_attempts_with_the_reason(scripted):
    backends, service, target = scripted([grpc.StatusCode.INTERNAL] * 10)
    photo_id = backends.upload(png(0))
    totals = drain(backends.worker(target).worker)
    assert (totals.indexed, totals.failed, totals.retrying) == (0, 1, 2)
    assert service.calls == 3
    [status] = backends.statuses()
    assert (status.photo_id, status.status, status.attempts) == (photo_id, FAILED, 3)
    assert status.reason.startswith("gave up after 3 attempts: INTERNAL")
    assert backends.vectors.get(photo_id) is None

    [dead] = map(dead_letter_of, backends.dead_letters())
    assert subject_of(dead) == subject_sent(backends, photo_id)
    [last] = [e for e, m in backends.queued() if m.uploaded.attempts == 2]  # the third attempt's record
    assert dead.dead_letter.reason == status.reason
    assert (dead.dead_letter.source_topic, dead.dead_letter.source_partition,
            dead.dead_letter.source_offset) == (TOPIC_PHOTO_UPLOADED, last.partition, last.offset)
    assert backends.lag() == 0


def test_text_is_read_after_the_photo_is_searchable_and_its_failure_leaves_it_searchable(scripted):
    backends, service, target = scripted([], text_failures=[grpc.StatusCode.INTERNAL] * 3)
    indexer = backends.worker(target).worker
    reader = backends.worker(target, stage=TextWorker).worker
    big = encode(Image.fromarray(skimage.data.astronaut()).resize((400, 300)))

    unreadable = backends.upload(big)
    assert drain(indexer).indexed == 1
    searchable = backends.status_by_photo()[unreadable]
    assert (searchable.status, searchable.text_state) == (INDEXED, photo_pb2.STAGE_STATE_PENDING)
    assert searchable.labels[0].text == "astronaut" and searchable.ocr_text == ""
    assert backends.vectors.get(unreadable, SPACE_TEXT).vector.tolist() == pytest.approx([0.8, 0.6])
    assert keyword_hits(backends.vectors, "astronaut") == [unreadable]
    # Copies of the size the models read travel, not originals: short side 48 for CLIP and labels.
    assert service.sizes["clip"] == service.sizes["labels"] == [(64, 48)]

    totals = drain(reader)
    assert (totals.indexed, totals.failed, totals.retrying) == (0, 1, 2)
    assert service.sizes["ocr"] == [(80, 60)] * 3  # long side 80 for OCR
    failed = backends.status_by_photo()[unreadable]
    assert (failed.status, failed.text_state) == (photo_pb2.PHOTO_STATUS_UNSPECIFIED, photo_pb2.STAGE_STATE_FAILED)
    assert failed.reason.startswith("gave up after 3 attempts: INTERNAL") and failed.attempts == 3
    [dead] = map(dead_letter_of, backends.read(TOPIC_PHOTO_TEXT_DLQ))
    assert dead.WhichOneof("event") == "text_requested" and subject_of(dead).photo_id == unreadable
    # Given up, it keeps what the first stage wrote: still searchable.
    assert backends.vectors.get(unreadable, SPACE_TEXT).vector.tolist() == pytest.approx([0.8, 0.6])
    assert backends.vectors.get(unreadable, SPACE_CLIP) is not None

    read = backends.upload(png(1), filename="moon.png")
    assert drain(indexer).indexed == 1 and drain(reader).indexed == 1
    done = backends.status_by_photo()[read]
    assert (done.text_state, done.ocr_text, done.analysed) == (photo_pb2.STAGE_STATE_DONE, "NASA", True)
    assert backends.vectors.get(read, SPACE_TEXT).vector.tolist() == pytest.approx([0.0, 1.0])
    assert keyword_hits(backends.vectors, "nasa") == [read] and keyword_hits(backends.vectors, "moon") == [read]
    assert group_backlog(backends.events, TextWorker)() == 0


def test_the_text_stage_waits_while_photos_wait_to_become_searchable(scripted):
    backends, service, target = scripted([], text_failures=[])
    indexer = backends.worker(target).worker
    reader = backends.worker(target, stage=TextWorker, ahead=group_backlog(backends.events)).worker
    first = backends.upload(png(0))
    assert drain(indexer).indexed == 1  # its text request is queued
    second = backends.upload(png(1))  # waits to become searchable

    assert reader.step() == BatchStats()
    assert "ocr" not in service.sizes and group_backlog(backends.events, TextWorker)() == 1
    assert drain(indexer).indexed == 1
    assert drain(reader).indexed == 2
    statuses = backends.status_by_photo()
    assert {statuses[p].text_state for p in (first, second)} == {photo_pb2.STAGE_STATE_DONE}


def test_an_image_near_the_upload_limit_indexes(stack):
    """Originals up to max_upload_bytes index: the worker decodes them and sends a small copy."""
    backends, server, worker = stack
    limit = backends.settings.max_upload_bytes
    side = int((limit * 0.95 / 3) ** 0.5)
    noise = np.random.default_rng(7).integers(0, 256, (side, side, 3), np.uint8)
    out = io.BytesIO()
    Image.fromarray(noise).save(out, "PNG", compress_level=0)
    data = out.getvalue()
    assert 0.9 * limit < len(data) <= limit
    photo_id = backends.upload(data)
    assert drain(worker).indexed == 1
    assert backends.status_by_photo()[photo_id].status == INDEXED
    assert backends.vectors.get(photo_id, SPACE_CLIP) is not None


class StuckPoll(Wrapped):
    """A group member whose poll hangs until released (a wedged broker connection, say)."""

    def __init__(self, inner: EventConsumer):
        super().__init__(inner)
        self.release = threading.Event()

    def poll(self, max_records: int = 100, timeout_s: float = 1.0) -> list[Event]:
        self.release.wait()
        return super().poll(max_records, timeout_s)


def health_status(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def test_worker_health_says_not_serving_while_its_loop_is_stuck(tiny, tmp_path):
    """The liveness probe of `serve worker`: a loop that has not come round for
    max_poll_interval_ms (Kafka has given its partitions away by then) is NOT_SERVING."""
    settings = worker_settings(tiny, tmp_path, worker_port=free_port())
    settings = settings.model_copy(update={"events": settings.events.model_copy(
        update={"max_poll_interval_ms": 500})})
    backends = make_backends(settings)
    stuck = StuckPoll(backends.events.consumer(GROUP, [TOPIC_PHOTO_UPLOADED]))
    worker = backends.worker(f"127.0.0.1:{free_port()}", consumer=stuck).worker
    health = serve_health(settings, worker)
    target = f"127.0.0.1:{settings.worker_port}"
    running = threading.Thread(target=worker.run)
    try:
        assert health_status(target) == SERVING
        running.start()
        wait_for(lambda: health_status(target) == NOT_SERVING, timeout_s=60)
        stuck.release.set()
        wait_for(lambda: health_status(target) == SERVING, timeout_s=60)
    finally:
        stuck.release.set()
        worker.stop()
        running.join(timeout=60)
        health.stop()
        backends.close()
