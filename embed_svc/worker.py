"""The embed worker, in two stages, each its own consumer group:

* index (photos.uploaded): EmbedImages (CLIP vector) and AnalyzeImages without OCR (labels, text
  vector of the labels) -> the photo is searchable (photos.status INDEXED), then queued on
  photos.text;
* text (photos.text): AnalyzeImages with OCR -> text vector and keywords of labels and text read
  (photos.status text_state DONE). It never holds back the first stage: the EmbedService runs OCR
  only when no other inference waits.

The worker reads each original once per stage and sends the EmbedService a copy of the size the
models read (copies.py), never the original. Workers of a stage share its topic's partitions.
A photo whose attempt fails is sent again with its attempt count in the event (so the count
survives restarts and rebalances) and the original is committed: nothing blocks a partition.
After worker_max_attempts the event goes to the stage's dead-letter topic and the photo is marked
failed (a failed text stage leaves the photo searchable). Writes come before the commit.

`photostore serve worker` runs both stages until SIGTERM/SIGINT; `--once` stops when both
backlogs are empty; `--stages` picks the stages.
"""
from __future__ import annotations

import abc
import argparse
import concurrent.futures
import dataclasses
import datetime as dt
import logging
import signal
import threading
import time
from typing import Any, Callable

import grpc
import numpy as np
import tenacity
from prometheus_client import Counter, Gauge
from tqdm import tqdm

from embed_svc.copies import UndecodableImageError, model_copy
from embed_svc.limits import MAX_IMAGES
from photos.v1 import embed_pb2, embed_pb2_grpc, events_pb2, photo_pb2
from photostore import events as photo_events, telemetry
from photostore.auth import bearer_metadata, service_api_key
from photostore.backends import open_blobs, open_events, open_vectors
from photostore.backends.base import (
    SPACE_CLIP, SPACE_TEXT, TOPIC_PHOTO_TEXT, TOPIC_PHOTO_UPLOADED, BackendUnavailableError, BlobNotFoundError,
    BlobStore, Event, EventConsumer, EventLog, EventProducer, InvalidBlobKeyError, Record, TopicPartition,
    VectorObject, VectorStore)
from photostore.convert import from_timestamp, role_name
from photostore.errors import decode_details, status_details
from photostore.memory import release_memory
from photostore.metrics import serve_metrics
from photostore.server import MAX_MESSAGE_BYTES, GrpcService, make_channel, setup_process, start_server
from photostore.settings import Settings, get_settings

log = logging.getLogger(__name__)

GROUP = "embed-worker"  # the index stage
TEXT_GROUP = "text-worker"  # the text stage
POLL_TIMEOUT_S = 1.0
INFO_TIMEOUT_S = 10.0
EMBED_TIMEOUT_S = 300.0
# Images per EmbedImages/AnalyzeImages call are bounded by bytes too, leaving room for the envelope.
REQUEST_BYTES_BUDGET = MAX_MESSAGE_BYTES - 1024 * 1024
PROGRESS_LOG_INTERVAL_S = 10.0
TRANSIENT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                             grpc.StatusCode.RESOURCE_EXHAUSTED})
SPACES = (SPACE_CLIP, SPACE_TEXT)
# Copy sizes when the EmbedService does not say (services from before image_size).
DEFAULT_IMAGE_SIZE = 224
DEFAULT_OCR_SIZE = 1280

PHOTOS_INDEXED = Counter("photos_indexed_total", "Photos embedded and indexed by the embed worker")
PHOTOS_FAILED = Counter("photos_failed_total", "Photos the embed worker gave up on")
PHOTOS_RETRIED = Counter("photos_retried_total", "Indexing attempts that failed and were queued again")
EMBED_BACKLOG = Gauge("embed_backlog", "photos.uploaded events the embed worker has not committed")
TEXT_READ = Counter("photos_text_read_total", "Photos whose text the text stage read")
TEXT_FAILED = Counter("photos_text_failed_total", "Photos whose text the text stage gave up on")
TEXT_RETRIED = Counter("photos_text_retried_total", "Text attempts that failed and were queued again")
TEXT_BACKLOG = Gauge("text_backlog", "photos.text events the text stage has not committed")

# Outcome kinds; the first three are also BatchStats field names.
INDEXED, FAILED, SKIPPED, ERROR = "indexed", "failed", "skipped", "error"


class ServiceDownError(Exception):
    """The EmbedService is unreachable or its models are not ready: not the photos' fault."""


@dataclasses.dataclass
class Upload:
    """One work request: a photo to index, or to read the text of."""
    event: Event
    message: events_pb2.PhotoEvent
    subject: events_pb2.IndexingSubject
    photo_id: str
    owner: str
    blob_key: str
    model_copy_key: str  # empty: the photo has no copy
    filename: str
    taken_at: dt.datetime | None
    camera_make: str
    camera_model: str
    reindex: bool  # queued again: spaces whose vector has the current model are left alone
    attempts: int  # failed attempts before this one

    @classmethod
    def from_event(cls, event: Event) -> Upload:
        """Raises MalformedEventError for a record that is not a work request."""
        message = photo_events.decode(event)
        request = photo_events.indexing_request(message, event.topic)
        subject = request.subject
        if not subject.photo_id or not subject.blob_key:
            raise photo_events.MalformedEventError("work request without photo id or blob key")
        return cls(event=event, message=message, subject=subject, photo_id=subject.photo_id,
                   owner=subject.owner, blob_key=subject.blob_key, model_copy_key=subject.model_copy_key,
                   filename=subject.filename,
                   taken_at=from_timestamp(subject.take_time, subject.HasField("take_time")),
                   camera_make=subject.camera_make, camera_model=subject.camera_model,
                   reindex=message.WhichOneof("event") == "reindex_requested",
                   attempts=request.attempts)


@dataclasses.dataclass(frozen=True)
class ReadyModels:
    """What EmbedService can do now: vector models per space ("" while not ready), whether it
    reads text (OCR) and whether that is ready, the copy sizes its models read, or why not."""
    clip: str = ""
    text: str = ""  # the labels and sentence models (and OCR, when it runs) together
    reads_text: bool = False  # an OCR model is configured
    ocr_ready: bool = False
    image_size: int = DEFAULT_IMAGE_SIZE  # short side of copies for CLIP and labels
    ocr_size: int = DEFAULT_OCR_SIZE  # long side of copies for OCR
    reason: str = ""

    def model(self, space: str) -> str:
        return self.clip if space == SPACE_CLIP else self.text


@dataclasses.dataclass
class Analysis:
    """Labels and OCR text of a photo, and its text vector (None when it has neither)."""
    labels: list[tuple[str, float]]
    ocr_text: str
    vector: np.ndarray | None
    model: str


@dataclasses.dataclass
class Outcome:
    kind: str  # INDEXED (done), FAILED (for good), SKIPPED (photo deleted) or ERROR (worth another attempt)
    reason: str = ""
    # space -> (model, vector) to write
    vectors: dict[str, tuple[str, np.ndarray]] = dataclasses.field(default_factory=dict)
    # space -> model of a vector the photo keeps (current on a reindex, or its model not ready)
    kept: dict[str, str] = dataclasses.field(default_factory=dict)
    analysis: Analysis | None = None  # when analysed this time


@dataclasses.dataclass
class BatchStats:
    indexed: int = 0
    failed: int = 0
    skipped: int = 0
    retrying: int = 0

    @property
    def committed(self) -> int:
        return self.indexed + self.failed + self.skipped

    def add(self, other: BatchStats) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


@dataclasses.dataclass(frozen=True)
class StageMetrics:
    done: Counter
    failed: Counter
    retried: Counter
    backlog: Gauge
    verb: str  # for the progress log: "indexed", "read the text of"


class _ProgressLog:
    """Updates the metrics per batch and logs a summary line every PROGRESS_LOG_INTERVAL_S."""

    def __init__(self, metrics: StageMetrics):
        self._metrics = metrics
        self._since = time.monotonic()
        self._stats = BatchStats()

    def record(self, stats: BatchStats, backlog: int) -> None:
        self._metrics.done.inc(stats.indexed)
        self._metrics.failed.inc(stats.failed)
        self._metrics.retried.inc(stats.retrying)
        self._metrics.backlog.set(backlog)
        self._stats.add(stats)
        elapsed = time.monotonic() - self._since
        if self._stats.committed and (elapsed >= PROGRESS_LOG_INTERVAL_S or backlog == 0):
            log.info("%s %d photos (%d failed) in %.1f s; backlog %d", self._metrics.verb,
                     self._stats.indexed, self._stats.failed, elapsed, backlog)
            self._since, self._stats = time.monotonic(), BatchStats()


class StageWorker(abc.ABC):
    """One stage's loop: poll a batch, work on it with the ready models, write, send statuses,
    retries and dead letters, then commit. Delivery is at least once; writes are idempotent."""

    group = ""
    topic = ""
    progress = "embedding"
    metrics: StageMetrics

    def __init__(self, settings: Settings, *, consumer: EventConsumer, producer: EventProducer,
                 blobs: BlobStore, vectors: VectorStore, stub: embed_pb2_grpc.EmbedServiceStub,
                 api_key: str, backlog: Callable[[], int], ahead: Callable[[], int] | None = None):
        """`ahead`: the backlog of an earlier stage; this one takes no work while it has any."""
        self._settings = settings
        self._ahead = ahead
        self._yielding = False
        self._consumer = consumer
        self._producer = producer
        self._blobs = blobs
        self._vectors = vectors
        self._stub = stub
        self._metadata = bearer_metadata(api_key)
        self._backlog = backlog  # records of the group not committed yet, all partitions
        self._waiting_reason = ""
        self._working_with: tuple = ()
        self._stop = threading.Event()
        self._progress = _ProgressLog(self.metrics)
        self._last_turn = time.monotonic()

    def stalled_for(self) -> float:
        """Seconds since the loop last came round (a poll, a batch, a wait for a model)."""
        return time.monotonic() - self._last_turn

    def stop(self) -> None:
        """The current batch finishes, then run() returns."""
        self._stop.set()

    def run(self, until_idle: bool = False) -> BatchStats:
        """Works until stop() (or, with until_idle, until no request is left uncommitted).
        The backlog (a watermark query per partition) is asked after each batch only with
        until_idle, else every PROGRESS_LOG_INTERVAL_S for the metric."""
        totals = BatchStats()
        backlog = self._backlog()
        asked = time.monotonic()
        bar = tqdm(total=backlog, unit="photo", desc=self.progress, disable=None) if until_idle else None
        try:
            rewind = False
            while not self._stop.is_set() and not (until_idle and backlog == 0):
                self._last_turn = time.monotonic()
                try:
                    if rewind:  # redeliver what was polled but not committed
                        self._consumer.seek_to_committed()
                        rewind = False
                    stats = self.step()
                except BackendUnavailableError as e:  # an engine is down: nothing was committed
                    log.warning("%s batch put back, an engine is unavailable: %s", self.group, e)
                    rewind = True
                    self._stop.wait(self._settings.worker_backoff_max_seconds)
                    continue
                except Exception:  # noqa: BLE001 - nothing was committed; the batch comes again
                    log.exception("%s batch failed; retrying", self.group)
                    rewind = True
                    self._stop.wait(self._settings.worker_backoff_seconds)
                    continue
                if stats is None:  # no model ready: the requests wait
                    self._stop.wait(self._settings.worker_backoff_seconds)
                    continue
                if stats.committed + stats.retrying:  # the originals of the batch are freed
                    release_memory()
                totals.add(stats)
                if until_idle or time.monotonic() - asked >= PROGRESS_LOG_INTERVAL_S:
                    backlog, asked = self._backlog(), time.monotonic()
                self._progress.record(stats, backlog)
                if bar is not None:
                    bar.total = bar.n + stats.committed + backlog
                    bar.update(stats.committed)
        finally:
            if bar is not None:
                bar.close()
        return totals

    def run_until_idle(self) -> BatchStats:
        return self.run(until_idle=True)

    def step(self) -> BatchStats | None:
        """One batch; None while no model is ready (what was polled is put back uncommitted).
        Nothing while an earlier stage has a backlog: its photos become searchable first."""
        if self._ahead is not None and (ahead := self._ahead()) > 0:
            if not self._yielding:
                log.info("%s waits while %d photos are being indexed", self.group, ahead)
            self._yielding = True
            self._stop.wait(POLL_TIMEOUT_S)
            return BatchStats()
        self._yielding = False
        events = self._consumer.poll(self._settings.worker_batch_size, timeout_s=POLL_TIMEOUT_S)
        if not events:
            return BatchStats()
        # Asked after the poll: a reindex queued once a model was ready sees that model ready.
        ready = self.ready_models()
        if not self._can_work(ready):
            self._consumer.seek_to_committed()
            if ready.reason != self._waiting_reason:
                log.warning("%s: waiting for a model, requests stay queued: %s", self.group, ready.reason)
            self._waiting_reason = ready.reason
            return None
        if self._models_in_use(ready) != self._working_with:
            self._working_with, self._waiting_reason = self._models_in_use(ready), ""
            log.info("%s working with %s", self.group, ", ".join(
                f"{what} {model or '(not ready)'}" for what, model in self._working_with))
        # Each batch is one request: its logs and calls carry an id of its own (and one trace).
        with telemetry.batch_scope(f"{self.group} batch", **{"photostore.batch_size": len(events)}):
            return self.process_batch(events, ready)

    def ready_models(self) -> ReadyModels:
        """Asks GetModelInfo what is ready; nothing when the service is unreachable."""
        try:
            info = self._stub.GetModelInfo(embed_pb2.GetModelInfoRequest(), metadata=self._metadata,
                                           timeout=INFO_TIMEOUT_S)
        except grpc.RpcError as e:
            return ReadyModels(reason=f"EmbedService unreachable: {e.code().name}: {e.details()}")
        return ready_models_of(info)

    @abc.abstractmethod
    def _can_work(self, ready: ReadyModels) -> bool:
        """Whether the models this stage needs are ready."""

    @abc.abstractmethod
    def _models_in_use(self, ready: ReadyModels) -> tuple:
        """(what, model) pairs for the log line when they change."""

    def process_batch(self, events: list[Event], ready: ReadyModels) -> BatchStats | None:
        """Works on polled requests with the ready models, writes vectors, then sends statuses,
        retries and dead letters, and only then commits the whole batch.

        A photo worth another attempt is sent again with its attempt count (behind the others in
        its partition); one given up goes to the dead-letter topic and is marked failed.
        """
        stats = BatchStats()
        uploads: list[Upload] = []
        out: list[Record] = []
        for event in events:
            try:
                uploads.append(Upload.from_event(event))
            except photo_events.MalformedEventError as e:
                out += self._malformed(event, str(e))
                stats.failed += 1
        try:
            outcomes = self._work(uploads, ready)
        except ServiceDownError as e:
            log.warning("%s batch of %d put back: %s", self.group, len(events), e)
            self._consumer.seek_to_committed()
            return None
        vectors: list[VectorObject] = []
        fewest_attempts = 0
        for upload, outcome in zip(uploads, outcomes):
            attempts = upload.attempts + 1  # this one included
            if outcome.kind == ERROR:
                if attempts < self._settings.worker_max_attempts:
                    log.warning("photo %s: %s attempt %d failed (%s); queued again", upload.photo_id,
                                self.group, attempts, outcome.reason)
                    out.append(photo_events.retry_record(upload.message, attempts))
                    stats.retrying += 1
                    fewest_attempts = min(fewest_attempts or attempts, attempts)
                    continue
                outcome = Outcome(FAILED, f"gave up after {attempts} attempts: {outcome.reason}")
            if outcome.kind == SKIPPED:
                log.info("photo %s skipped: %s", upload.photo_id, outcome.reason)
            elif outcome.kind == FAILED:
                log.warning("photo %s: %s failed: %s", upload.photo_id, self.group, outcome.reason)
                out += [photo_events.status_record(self._failure_status(
                            upload.photo_id, upload.owner, outcome.reason, attempts)),
                        photo_events.dead_letter_record(upload.message, upload.event, outcome.reason)]
            else:
                vectors += self._vector_objects(upload, outcome)
                out += self._outcome_records(upload, outcome, attempts, ready)
            setattr(stats, outcome.kind, getattr(stats, outcome.kind) + 1)
        if vectors:
            self._vectors.upsert_many(vectors)
        if out:
            self._producer.send_many(out)
        self._consumer.commit(events)
        if fewest_attempts:
            self._stop.wait(min(self._settings.worker_backoff_max_seconds,
                                self._settings.worker_backoff_seconds * 2 ** (fewest_attempts - 1)))
        return stats

    @abc.abstractmethod
    def _work(self, uploads: list[Upload], ready: ReadyModels) -> list[Outcome]:
        """One outcome per request."""

    @abc.abstractmethod
    def _vector_objects(self, upload: Upload, outcome: Outcome) -> list[VectorObject]:
        """What a photo done writes to the index."""

    @abc.abstractmethod
    def _outcome_records(self, upload: Upload, outcome: Outcome, attempts: int,
                         ready: ReadyModels) -> list[Record]:
        """The photos.status event of a photo done (and what follows it)."""

    @abc.abstractmethod
    def _failure_status(self, photo_id: str, owner: str, reason: str, attempts: int
                        ) -> events_pb2.PhotoStatusChangedEvent:
        """The photos.status event of a photo given up."""

    # Shared steps

    def _read_copies(self, uploads: list[Upload], outcomes: list[Outcome | None], *, short_side: int = 0,
                     long_side: int = 0) -> dict[int, bytes]:
        """{index: model-sized copy} of each photo still to do; outcomes of those that cannot be.
        Reads the copy made at upload where it is large enough, else (or without one) the original."""
        copy_will_do = 0 < short_side <= self._settings.model_copy_px and not long_side
        images: dict[int, bytes] = {}
        for i, upload in enumerate(uploads):
            if outcomes[i] is not None:
                continue
            try:  # BlobUnavailableError fails the batch: it comes again after a pause
                data = self._read_image(upload, copy_will_do)
            except BlobNotFoundError:  # the photo was deleted since
                outcomes[i] = Outcome(SKIPPED, "blob is gone")
                continue
            except InvalidBlobKeyError as e:
                outcomes[i] = Outcome(FAILED, f"bad blob key: {e}")
                continue
            try:
                images[i] = model_copy(data, max_pixels=self._settings.max_image_pixels,
                                       short_side=short_side, long_side=long_side)
            except UndecodableImageError as e:
                outcomes[i] = Outcome(FAILED, f"cannot decode image: {e}")
        return images

    def _read_image(self, upload: Upload, copy_will_do: bool) -> bytes:
        if copy_will_do and upload.model_copy_key:
            try:
                return self._blobs.read_bytes(upload.model_copy_key)
            except (BlobNotFoundError, InvalidBlobKeyError):  # stored before copies were made
                pass
        return self._blobs.read_bytes(upload.blob_key)

    def _per_image(self, call: Callable[[list[bytes]], list[Any]], space: str,
                   images: list[tuple[int, bytes]]) -> dict[int, Any]:
        """{index: result or Outcome} of `call` over chunks within the request limits."""
        results: dict[int, Any] = {}
        chunk: list[tuple[int, bytes]] = []
        chunk_bytes = 0

        def flush() -> None:
            nonlocal chunk, chunk_bytes
            if chunk:
                for (i, _), result in zip(chunk, self._isolating(call, space, [data for _, data in chunk])):
                    results[i] = result
            chunk, chunk_bytes = [], 0

        for i, data in images:
            if chunk_bytes + len(data) > REQUEST_BYTES_BUDGET or len(chunk) == MAX_IMAGES:
                flush()
            chunk.append((i, data))
            chunk_bytes += len(data)
        flush()
        return results

    def _isolating(self, call: Callable[[list[bytes]], list[Any]], space: str,
                   images: list[bytes]) -> list[Any]:
        """One call for all; on INVALID_ARGUMENT one call per image to isolate the bad one(s)."""
        try:
            return call(images)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.INVALID_ARGUMENT:
                if len(images) == 1:
                    return [Outcome(FAILED, _invalid_image_reason(e))]
                return [self._isolating(call, space, [image])[0] for image in images]
            if self._stop.is_set() or not self._can_work(self.ready_models()):
                raise ServiceDownError(f"{e.code().name}: {e.details()}") from e
            return [Outcome(ERROR, f"{e.code().name}: {e.details()}")] * len(images)

    def _embed_clip(self, images: list[bytes]) -> list[tuple[str, np.ndarray]]:
        response = self._call(self._stub.EmbedImages, embed_pb2.EmbedImagesRequest(images=images))
        return [(response.model, np.asarray(e.values, np.float32)) for e in response.embeddings]

    def _analyze(self, images: list[bytes], *, read_text: bool) -> list[Analysis]:
        response = self._call(self._stub.AnalyzeImages,
                              embed_pb2.AnalyzeImagesRequest(images=images, skip_text=not read_text))
        return [Analysis(labels=[(label.text, label.score) for label in a.labels], ocr_text=a.ocr_text,
                         vector=np.asarray(a.text_embedding.values, np.float32)
                         if a.text_embedding.values else None, model=response.model)
                for a in response.analyses]

    def _call(self, method, request):
        """The RPC, retried while the error is transient."""
        settings = self._settings
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(
                lambda e: isinstance(e, grpc.RpcError) and e.code() in TRANSIENT_CODES),
            wait=tenacity.wait_exponential(multiplier=settings.worker_backoff_seconds,
                                           max=settings.worker_backoff_max_seconds),
            stop=(tenacity.stop_after_attempt(settings.worker_max_attempts)
                  | tenacity.stop_when_event_set(self._stop)),
            sleep=self._stop.wait,
            before_sleep=tenacity.before_sleep_log(log, logging.WARNING),
            reraise=True)
        return retrying(method, request, metadata=self._metadata, timeout=EMBED_TIMEOUT_S)

    def _keyword_object(self, upload: Upload, analysis: Analysis | None, vectors: dict[str, tuple[str, np.ndarray]]
                        ) -> list[VectorObject]:
        """The vectors to write, carrying the photo's keywords (filename, labels, text read) when
        `analysis` is given (or on a first indexing); keywords alone when there is no vector."""
        keywords = None
        if analysis is not None or not upload.reindex:
            keywords = " ".join([upload.filename, *(name for name, _ in (analysis.labels if analysis else ())),
                                 analysis.ocr_text if analysis else ""]).strip()
        objects = [VectorObject(
            photo_id=upload.photo_id, owner=upload.owner, model=model, vector=vector, space=space,
            taken_at=upload.taken_at, camera_make=upload.camera_make,
            camera_model=upload.camera_model, keywords=keywords)
            for space, (model, vector) in vectors.items()]
        if not objects and keywords is not None:  # no vector this time: keywords alone
            objects = [VectorObject(photo_id=upload.photo_id, owner=upload.owner, model="", vector=None,
                                    taken_at=upload.taken_at, camera_make=upload.camera_make,
                                    camera_model=upload.camera_model, keywords=keywords)]
        return objects

    def _malformed(self, event: Event, reason: str) -> list[Record]:
        """The dead letter of a record that is no work request, and a failed status when it
        names a photo (which would stay waiting for ever otherwise)."""
        log.error("dead-lettering a malformed record at %s[%d]@%d: %s", event.topic, event.partition,
                  event.offset, reason)
        try:
            message = photo_events.decode(event)
        except photo_events.MalformedEventError:
            return [photo_events.dead_letter_record(None, event, reason)]
        out = [photo_events.dead_letter_record(message, event, reason)]
        kind = message.WhichOneof("event")
        if kind in photo_events.REQUEST_TOPICS and (subject := getattr(message, kind).subject).photo_id:
            out.append(photo_events.status_record(self._failure_status(
                subject.photo_id, subject.owner, f"cannot be processed: {reason}", 1)))
        return out


class EmbedWorker(StageWorker):
    """The index stage: CLIP vector, labels and their text vector; the photo becomes searchable."""

    group = GROUP
    topic = TOPIC_PHOTO_UPLOADED
    progress = "indexing"
    metrics = StageMetrics(PHOTOS_INDEXED, PHOTOS_FAILED, PHOTOS_RETRIED, EMBED_BACKLOG, "indexed")

    def _can_work(self, ready: ReadyModels) -> bool:
        return bool(ready.clip or ready.text)

    def _models_in_use(self, ready: ReadyModels) -> tuple:
        return (("CLIP model", ready.clip), ("text model", ready.text))

    def _work(self, uploads: list[Upload], ready: ReadyModels) -> list[Outcome]:
        """Reads and copies the blobs, then embeds and analyses them (without OCR), each in as few
        calls as the size limits allow."""
        outcomes: list[Outcome | None] = [None] * len(uploads)
        images = self._read_copies(uploads, outcomes, short_side=ready.image_size)
        # What each photo holds already, where it matters: a reindex keeps current vectors, and a
        # space whose model is not ready keeps the vector it has (and says so in the status).
        asked = [uploads[i].photo_id for i in images
                 if uploads[i].reindex or not (ready.clip and ready.text)]
        held = {space: self._vectors.get_many(asked, space) for space in SPACES} if asked else {}
        plans = {i: self._plan(uploads[i], ready, held) for i in images}
        analyze = lambda batch: self._analyze(batch, read_text=False)  # noqa: E731
        results = {space: self._per_image(call, space, [(i, data) for i, data in images.items()
                                                        if space in plans[i][0]])
                   for space, call in ((SPACE_CLIP, self._embed_clip), (SPACE_TEXT, analyze))}
        for i, (_, kept) in plans.items():
            outcomes[i] = _combine({space: by_index[i] for space, by_index in results.items()
                                    if i in by_index}, kept)
        return outcomes  # type: ignore[return-value]

    @staticmethod
    def _plan(upload: Upload, ready: ReadyModels, held_vectors: dict[str, dict[str, VectorObject]]
              ) -> tuple[list[str], dict[str, str]]:
        """(spaces to compute, {space: model} of vectors the photo keeps). A reindex leaves a vector
        of the current model alone; a space whose model is not ready keeps what it has."""
        compute, kept = [], {}
        for space in SPACES:
            model = ready.model(space)
            if model and not upload.reindex:
                compute.append(space)
                continue
            held = held_vectors.get(space, {}).get(upload.photo_id)
            if model and (held is None or held.model != model):
                compute.append(space)
            elif held is not None:
                kept[space] = held.model
        return compute, kept

    def _vector_objects(self, upload: Upload, outcome: Outcome) -> list[VectorObject]:
        return self._keyword_object(upload, outcome.analysis, outcome.vectors)

    def _outcome_records(self, upload: Upload, outcome: Outcome, attempts: int,
                         ready: ReadyModels) -> list[Record]:
        """The photos.status event and, when labels were made this time, the text stage's request."""
        status = events_pb2.PhotoStatusChangedEvent(
            photo_id=upload.photo_id, owner=upload.owner, reason=outcome.reason, attempts=attempts,
            status=photo_pb2.PHOTO_STATUS_INDEXED)
        held = {**outcome.kept, **{space: model for space, (model, _) in outcome.vectors.items()}}
        status.clip_model = held.get(SPACE_CLIP, "")
        status.embedding_models.extend(held[space] for space in SPACES if space in held)
        read_text = False
        if outcome.analysis is not None:
            status.analysed = True
            status.labels.extend(photo_pb2.Label(text=name, score=score)
                                 for name, score in outcome.analysis.labels)
            read_text = ready.reads_text
            status.text_state = photo_pb2.STAGE_STATE_PENDING if read_text else photo_pb2.STAGE_STATE_SKIPPED
        # The status first: the text stage's outcome must come after it.
        return [photo_events.status_record(status)] + (
            [photo_events.text_request_record(upload.subject)] if read_text else [])

    def _failure_status(self, photo_id: str, owner: str, reason: str, attempts: int
                        ) -> events_pb2.PhotoStatusChangedEvent:
        return events_pb2.PhotoStatusChangedEvent(photo_id=photo_id, owner=owner, reason=reason,
                                                  attempts=attempts, status=photo_pb2.PHOTO_STATUS_FAILED)


class TextWorker(StageWorker):
    """The text stage: reads the text in searchable photos (OCR) and rewrites their text vector
    and keywords with it."""

    group = TEXT_GROUP
    topic = TOPIC_PHOTO_TEXT
    progress = "reading text"
    metrics = StageMetrics(TEXT_READ, TEXT_FAILED, TEXT_RETRIED, TEXT_BACKLOG, "read the text of")

    def _can_work(self, ready: ReadyModels) -> bool:
        # With OCR turned off since the request was queued, the requests are settled as skipped.
        return bool(ready.text and ready.ocr_ready) or (bool(ready.text) and not ready.reads_text)

    def _models_in_use(self, ready: ReadyModels) -> tuple:
        return (("text model", ready.text), ("OCR", "ready" if ready.ocr_ready else "off"))

    def _work(self, uploads: list[Upload], ready: ReadyModels) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(uploads)
        if not ready.reads_text:
            return [Outcome(INDEXED, "text reading is turned off")] * len(uploads)
        images = self._read_copies(uploads, outcomes, long_side=ready.ocr_size)
        analyses = self._per_image(lambda batch: self._analyze(batch, read_text=True), SPACE_TEXT,
                                   list(images.items()))
        # The photo's status lists every model with a vector of it: the CLIP one it keeps too.
        clip = self._vectors.get_many([uploads[i].photo_id for i in analyses], SPACE_CLIP) if analyses else {}
        for i, result in analyses.items():
            if isinstance(result, Outcome):
                outcomes[i] = result
                continue
            outcome = Outcome(INDEXED, analysis=result)
            if (held := clip.get(uploads[i].photo_id)) is not None:
                outcome.kept[SPACE_CLIP] = held.model
            if result.vector is not None:
                outcome.vectors[SPACE_TEXT] = (result.model, result.vector)
            outcomes[i] = outcome
        return outcomes  # type: ignore[return-value]

    def _vector_objects(self, upload: Upload, outcome: Outcome) -> list[VectorObject]:
        return [] if outcome.analysis is None else self._keyword_object(upload, outcome.analysis, outcome.vectors)

    def _outcome_records(self, upload: Upload, outcome: Outcome, attempts: int,
                         ready: ReadyModels) -> list[Record]:
        status = events_pb2.PhotoStatusChangedEvent(photo_id=upload.photo_id, owner=upload.owner,
                                                    attempts=attempts)
        if outcome.analysis is None:  # OCR turned off
            status.text_state = photo_pb2.STAGE_STATE_SKIPPED
            status.reason = outcome.reason
        else:
            status.text_state = photo_pb2.STAGE_STATE_DONE
            if SPACE_TEXT in outcome.vectors:
                held = {**outcome.kept, SPACE_TEXT: outcome.vectors[SPACE_TEXT][0]}
                status.embedding_models.extend(held[space] for space in SPACES if space in held)
            status.analysed = True
            status.labels.extend(photo_pb2.Label(text=name, score=score)
                                 for name, score in outcome.analysis.labels)
            status.ocr_text = outcome.analysis.ocr_text
        return [photo_events.status_record(status)]

    def _failure_status(self, photo_id: str, owner: str, reason: str, attempts: int
                        ) -> events_pb2.PhotoStatusChangedEvent:
        return events_pb2.PhotoStatusChangedEvent(photo_id=photo_id, owner=owner, reason=reason,
                                                  attempts=attempts, text_state=photo_pb2.STAGE_STATE_FAILED)


STAGES = {"index": EmbedWorker, "text": TextWorker}


def ready_models_of(info: embed_pb2.GetModelInfoResponse) -> ReadyModels:
    """What GetModelInfo says the EmbedService can do, and the copy sizes its models read."""
    by_role = {m.role: m for m in info.models}
    clip = by_role.get(embed_pb2.MODEL_ROLE_CLIP)
    ocr = by_role.get(embed_pb2.MODEL_ROLE_OCR)
    analysis = [m for role, m in by_role.items() if role in (embed_pb2.MODEL_ROLE_LABELS,
                                                             embed_pb2.MODEL_ROLE_SENTENCE)]
    sentence = by_role.get(embed_pb2.MODEL_ROLE_SENTENCE)
    text = sentence.model if sentence is not None and all(m.ready for m in analysis) else ""
    image_sizes = [m.image_size for m in (clip, by_role.get(embed_pb2.MODEL_ROLE_LABELS))
                   if m is not None and m.image_size]
    reasons = [f"{role_name(m.role)}: {m.reason}" for m in info.models if not m.ready]
    return ReadyModels(clip=clip.model if clip is not None and clip.ready else "", text=text,
                       reads_text=ocr is not None, ocr_ready=ocr is not None and ocr.ready,
                       image_size=max(image_sizes, default=DEFAULT_IMAGE_SIZE),
                       ocr_size=(ocr.image_size if ocr is not None else 0) or DEFAULT_OCR_SIZE,
                       reason="; ".join(reasons))


def _combine(results: dict[str, Any], kept: dict[str, str]) -> Outcome:
    """One photo's outcome from its per-space results: a failure in any space decides."""
    for kind in (FAILED, ERROR):
        for result in results.values():
            if isinstance(result, Outcome) and result.kind == kind:
                return result
    outcome = Outcome(INDEXED, kept=kept)
    if (clip := results.get(SPACE_CLIP)) is not None:
        outcome.vectors[SPACE_CLIP] = clip
    if (analysis := results.get(SPACE_TEXT)) is not None:
        outcome.analysis = analysis
        if analysis.vector is not None:
            outcome.vectors[SPACE_TEXT] = (analysis.model, analysis.vector)
    return outcome


def _invalid_image_reason(err: grpc.RpcError) -> str:
    """The decoder's own words when the service sent them, else the status message."""
    status = status_details(err)
    for detail in decode_details(status) if status else ():
        if cause := detail.get("metadata", {}).get("detail"):
            return f"cannot decode image: {cause}"
    return err.details() or err.code().name


def group_backlog(events: EventLog, stage: type[StageWorker] = EmbedWorker) -> Callable[[], int]:
    def backlog() -> int:
        return sum(events.lag(stage.group, [stage.topic]).values())
    return backlog


def _log_partitions(what: str) -> Callable[[set[TopicPartition]], None]:
    def callback(partitions: set[TopicPartition]) -> None:
        if partitions:
            log.info("partitions %s: %s", what,
                     ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions)))
    return callback


def serve_health(settings: Settings, *workers: StageWorker) -> GrpcService:
    """grpc.health.v1 on settings.worker_port: SERVING while every stage's loop comes round,
    NOT_SERVING once one has not for max_poll_interval_ms (Kafka has then given its partitions
    away too), so a liveness probe restarts a stuck worker."""
    svc = start_server(settings=settings, port=settings.worker_port, servicers=[], service_names=[],
                       authenticator=None, max_workers=2)
    limit_s = settings.events.max_poll_interval_ms / 1000

    def watch() -> None:
        serving = True
        while not svc.stopped.wait(min(5.0, limit_s / 4)):
            stalled = max(worker.stalled_for() for worker in workers)
            alive = stalled < limit_s
            if alive != serving:
                if alive:
                    log.info("worker loops running again")
                else:
                    log.error("a worker loop is stuck for %.0f s", stalled)
                svc.set_serving("", alive)
                serving = alive

    threading.Thread(target=watch, name="worker-health", daemon=True).start()
    return svc


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="photostore serve worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--once", action="store_true", help="stop once the backlogs are empty")
    parser.add_argument("--stages", default="index,text",
                        help="comma-separated stages to run: index, text (default: both)")
    args = parser.parse_args(argv)
    stages = [name.strip() for name in args.stages.split(",") if name.strip()]
    if not stages or any(name not in STAGES for name in stages):
        parser.error(f"--stages takes {', '.join(STAGES)}")
    setup_process("worker")
    settings = get_settings()
    serve_metrics(settings.worker_metrics_port, settings.host)
    events = open_events(settings)
    producer = events.producer()
    channel = make_channel(settings.target("embed"), settings)
    blobs, vectors = open_blobs(settings), open_vectors(settings)
    workers: list[StageWorker] = []
    consumers: list[EventConsumer] = []
    for name in stages:
        stage = STAGES[name]
        consumer = events.consumer(stage.group, [stage.topic], on_assigned=_log_partitions("assigned"),
                                   on_revoked=_log_partitions("revoked"))
        consumers.append(consumer)
        # The text stage waits while photos wait to become searchable (in any worker process).
        ahead = group_backlog(events, EmbedWorker) if stage is TextWorker else None
        workers.append(stage(settings, consumer=consumer, producer=producer, blobs=blobs, vectors=vectors,
                             stub=embed_pb2_grpc.EmbedServiceStub(channel), api_key=service_api_key(settings),
                             backlog=group_backlog(events, stage), ahead=ahead))

    def stop_all(*_) -> None:
        for worker in workers:
            worker.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop_all)
    health = serve_health(settings, *workers) if settings.worker_port and not args.once else None
    try:
        if args.once:  # in stage order: what one stage queues, the next finds
            totals = [worker.run_until_idle() for worker in workers]
        else:
            with concurrent.futures.ThreadPoolExecutor(len(workers), thread_name_prefix="stage") as pool:
                totals = [run.result() for run in [pool.submit(worker.run) for worker in workers]]
        done = BatchStats()
        for stats in totals:
            done.add(stats)
        log.info("stopped: %d done, %d failed, %d skipped in total", done.indexed, done.failed, done.skipped)
    finally:
        stop_all()
        if health is not None:
            health.stop()
        channel.close()
        for consumer in consumers:
            consumer.close()
        producer.close()


if __name__ == "__main__":
    main()
