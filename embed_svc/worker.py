"""The embed worker: photos.uploaded -> EmbedImages -> vector + photos.status, committed after the writes.

`python -m embed_svc.worker` runs until SIGTERM/SIGINT; `--once` stops when the backlog is empty.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import signal
import threading
import time
import grpc
import numpy as np
import tenacity
from prometheus_client import Counter, Gauge, start_http_server
from tqdm import tqdm

from embed_svc.service import MAX_IMAGES
from photos.v1 import embed_pb2, embed_pb2_grpc
from photostore.auth import bearer_metadata, service_api_key
from photostore.backends import open_blobs, open_events, open_metadata, open_vectors
from photostore.backends.base import (
    STATUS_FAILED, STATUS_INDEXED, TOPIC_PHOTO_STATUS, TOPIC_PHOTO_UPLOADED, BlobStore, Event,
    EventConsumer, EventProducer, VectorObject, VectorStore)
from photostore.errors import decode_details, status_details
from photostore.server import MAX_MESSAGE_BYTES, make_channel, setup_logging
from photostore.settings import Settings, get_settings

log = logging.getLogger(__name__)

GROUP = "embed-worker"
POLL_TIMEOUT_S = 1.0
INFO_TIMEOUT_S = 10.0
EMBED_TIMEOUT_S = 300.0
# Images per EmbedImages call are bounded by bytes too, leaving room for the envelope.
REQUEST_BYTES_BUDGET = MAX_MESSAGE_BYTES - 1024 * 1024
PROGRESS_LOG_INTERVAL_S = 10.0
TRANSIENT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                             grpc.StatusCode.RESOURCE_EXHAUSTED})

PHOTOS_INDEXED = Counter("photos_indexed_total", "Photos embedded and indexed by the embed worker")
PHOTOS_FAILED = Counter("photos_failed_total", "Photos the embed worker gave up on")
EMBED_BACKLOG = Gauge("embed_backlog", "photos.uploaded events the embed worker has not committed")

# Outcome kinds; the first three are also BatchStats field names.
INDEXED, FAILED, SKIPPED, ERROR = "indexed", "failed", "skipped", "error"


class ServiceDownError(Exception):
    """The EmbedService is unreachable or its model is not ready: not the photos' fault."""


@dataclasses.dataclass
class Upload:
    event: Event
    photo_id: str
    owner: str
    blob_key: str
    taken_at: dt.datetime | None
    camera_make: str
    camera_model: str

    @classmethod
    def from_event(cls, event: Event) -> Upload:
        value = event.value
        return cls(event=event, photo_id=value.get("photo_id") or event.key, owner=value.get("owner", ""),
                   blob_key=value.get("blob_key", ""), taken_at=_parse_time(value.get("taken_at")),
                   camera_make=value.get("camera_make") or "", camera_model=value.get("camera_model") or "")


def _parse_time(text: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text) if text else None
    except (TypeError, ValueError):
        log.warning("ignoring taken_at %r: not an ISO time", text)
        return None


@dataclasses.dataclass
class Outcome:
    kind: str  # INDEXED, FAILED (for good), SKIPPED (photo deleted) or ERROR (worth another attempt)
    reason: str = ""
    vector: np.ndarray | None = None
    model: str = ""


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


class _ProgressLog:
    """Updates the metrics per batch and logs a summary line every PROGRESS_LOG_INTERVAL_S."""

    def __init__(self):
        self._since = time.monotonic()
        self._stats = BatchStats()

    def record(self, stats: BatchStats, backlog: int) -> None:
        PHOTOS_INDEXED.inc(stats.indexed)
        PHOTOS_FAILED.inc(stats.failed)
        EMBED_BACKLOG.set(backlog)
        self._stats.add(stats)
        elapsed = time.monotonic() - self._since
        if self._stats.committed and (elapsed >= PROGRESS_LOG_INTERVAL_S or backlog == 0):
            log.info("indexed %d photos (%d failed) in %.1f s; backlog %d",
                     self._stats.indexed, self._stats.failed, elapsed, backlog)
            self._since, self._stats = time.monotonic(), BatchStats()


class EmbedWorker:
    """Indexes uploaded photos; delivery is at least once and the vector upsert makes it idempotent."""

    def __init__(self, settings: Settings, *, consumer: EventConsumer, producer: EventProducer,
                 blobs: BlobStore, vectors: VectorStore, stub: embed_pb2_grpc.EmbedServiceStub,
                 api_key: str):
        self._settings = settings
        self._consumer = consumer
        self._producer = producer
        self._blobs = blobs
        self._vectors = vectors
        self._stub = stub
        self._metadata = bearer_metadata(api_key)
        self._attempts: dict[str, int] = {}  # failed attempts of photos not settled yet
        self._waiting_reason = ""
        self._stop = threading.Event()
        self._progress = _ProgressLog()

    def stop(self) -> None:
        """The current batch finishes, then run() returns."""
        self._stop.set()

    def run(self, until_idle: bool = False) -> BatchStats:
        """Indexes until stop() (or, with until_idle, until no upload is left uncommitted)."""
        totals = BatchStats()
        backlog = self._consumer.lag()
        bar = tqdm(total=backlog, unit="photo", desc="embedding", disable=None) if until_idle else None
        try:
            while not self._stop.is_set() and not (until_idle and backlog == 0):
                try:
                    stats = self.step()
                except Exception:  # noqa: BLE001 - nothing was committed; the batch comes again
                    log.exception("embed batch failed; retrying")
                    self._consumer.rewind_to_committed()
                    self._stop.wait(self._settings.worker_backoff_seconds)
                    continue
                if stats is None:  # model not ready: the uploads wait
                    EMBED_BACKLOG.set(self._consumer.lag())
                    self._stop.wait(self._settings.worker_backoff_seconds)
                    continue
                totals.add(stats)
                backlog = self._consumer.lag()
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
        """One round: None while the model is not ready (nothing polled stays in flight), else one batch."""
        if not self.model_ready():
            return None
        return self.process_batch()

    def model_ready(self) -> bool:
        """Asks GetModelInfo; while not ready, rewinds so uncommitted uploads stay queued."""
        try:
            info = self._stub.GetModelInfo(embed_pb2.GetModelInfoRequest(), metadata=self._metadata,
                                           timeout=INFO_TIMEOUT_S)
            reason = "" if info.ready else info.reason or f"model {info.model} is not ready"
        except grpc.RpcError as e:
            reason = f"EmbedService unreachable: {e.code().name}: {e.details()}"
        if reason:
            self._consumer.rewind_to_committed()
            if reason != self._waiting_reason:
                log.warning("waiting for the model, uploads stay queued: %s", reason)
            self._waiting_reason = reason
            return False
        if self._waiting_reason:
            log.info("model %s is ready; indexing", info.model)
            self._waiting_reason = ""
        return True

    def process_batch(self) -> BatchStats:
        """Polls up to worker_batch_size uploads, embeds, writes, then commits what is settled.

        Outcomes are written in offset order up to the first photo worth another attempt; only
        that prefix is committed and the rest is redelivered after a backoff.
        """
        stats = BatchStats()
        events = self._consumer.poll(self._settings.worker_batch_size, timeout_s=POLL_TIMEOUT_S)
        if not events:
            return stats
        uploads = [Upload.from_event(e) for e in events]
        try:
            outcomes = self._embed(uploads)
        except ServiceDownError as e:
            log.warning("batch of %d put back: %s", len(uploads), e)
            self._consumer.rewind_to_committed()
            return stats
        settled: list[Event] = []
        for upload, outcome in zip(uploads, outcomes):
            attempts = self._attempts.pop(upload.photo_id, 0) + 1  # this one included
            if outcome.kind == ERROR:
                if attempts < self._settings.worker_max_attempts:
                    log.warning("photo %s: attempt %d failed (%s); retrying", upload.photo_id, attempts,
                                outcome.reason)
                    self._attempts[upload.photo_id] = attempts
                    stats.retrying = len(uploads) - len(settled)
                    break
                outcome = Outcome(FAILED, f"gave up after {attempts} attempts: {outcome.reason}")
            self._write(upload, outcome, attempts)
            setattr(stats, outcome.kind, getattr(stats, outcome.kind) + 1)
            settled.append(upload.event)
        if settled:
            self._consumer.commit(settled)
        if stats.retrying:
            self._consumer.rewind_to_committed()
            attempts = self._attempts[uploads[len(settled)].photo_id]
            self._stop.wait(min(self._settings.worker_backoff_max_seconds,
                                self._settings.worker_backoff_seconds * 2 ** (attempts - 1)))
        return stats

    # Embedding

    def _embed(self, uploads: list[Upload]) -> list[Outcome]:
        """Reads the blobs and embeds them in as few EmbedImages calls as the size limits allow."""
        outcomes: list[Outcome | None] = [None] * len(uploads)
        chunk: list[tuple[int, bytes]] = []
        chunk_bytes = 0

        def flush() -> None:
            nonlocal chunk, chunk_bytes
            if chunk:
                for (i, _), outcome in zip(chunk, self._embed_images([data for _, data in chunk])):
                    outcomes[i] = outcome
            chunk, chunk_bytes = [], 0

        for i, upload in enumerate(uploads):
            try:
                data = self._blobs.read_bytes(upload.blob_key)
            except KeyError:  # the photo was deleted since
                outcomes[i] = Outcome(SKIPPED, "blob is gone")
                continue
            except (ValueError, IsADirectoryError) as e:
                outcomes[i] = Outcome(FAILED, f"bad blob key {upload.blob_key!r}: {e}")
                continue
            if len(data) > REQUEST_BYTES_BUDGET:
                outcomes[i] = Outcome(FAILED, f"image of {len(data)} bytes exceeds the "
                                              f"{REQUEST_BYTES_BUDGET} bytes EmbedService accepts")
                continue
            if chunk_bytes + len(data) > REQUEST_BYTES_BUDGET or len(chunk) == MAX_IMAGES:
                flush()
            chunk.append((i, data))
            chunk_bytes += len(data)
        flush()
        return outcomes  # type: ignore[return-value]

    def _embed_images(self, images: list[bytes]) -> list[Outcome]:
        """One call for all; on INVALID_ARGUMENT one call per image to isolate the bad one(s)."""
        try:
            response = self._call_embed_images(images)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.INVALID_ARGUMENT:
                if len(images) == 1:
                    return [Outcome(FAILED, _invalid_image_reason(e))]
                return [self._embed_images([image])[0] for image in images]
            if self._stop.is_set() or not self.model_ready():
                raise ServiceDownError(f"{e.code().name}: {e.details()}") from e
            return [Outcome(ERROR, f"{e.code().name}: {e.details()}")] * len(images)
        return [Outcome(INDEXED, vector=np.asarray(emb.values, np.float32), model=response.model)
                for emb in response.embeddings]

    def _call_embed_images(self, images: list[bytes]) -> embed_pb2.EmbedImagesResponse:
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
        return retrying(self._stub.EmbedImages, embed_pb2.EmbedImagesRequest(images=images),
                        metadata=self._metadata, timeout=EMBED_TIMEOUT_S)

    # Writes

    def _write(self, upload: Upload, outcome: Outcome, attempts: int) -> None:
        if outcome.kind == SKIPPED:
            log.info("photo %s skipped: %s", upload.photo_id, outcome.reason)
            return
        if outcome.kind == INDEXED:
            self._vectors.upsert(VectorObject(
                photo_id=upload.photo_id, owner=upload.owner, model=outcome.model, vector=outcome.vector,
                taken_at=upload.taken_at, camera_make=upload.camera_make,
                camera_model=upload.camera_model))
        else:
            log.warning("photo %s failed: %s", upload.photo_id, outcome.reason)
        self._producer.send(TOPIC_PHOTO_STATUS, upload.photo_id, {
            "photo_id": upload.photo_id, "owner": upload.owner,
            "status": STATUS_INDEXED if outcome.kind == INDEXED else STATUS_FAILED,
            "reason": outcome.reason, "embedding_model": outcome.model, "attempts": attempts})


def _invalid_image_reason(err: grpc.RpcError) -> str:
    """The decoder's own words when the service sent them, else the status message."""
    status = status_details(err)
    for detail in decode_details(status) if status else ():
        if cause := detail.get("metadata", {}).get("detail"):
            return f"cannot decode image: {cause}"
    return err.details() or err.code().name


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m embed_svc.worker", description=__doc__)
    parser.add_argument("--once", action="store_true", help="stop once the backlog is empty")
    parser.add_argument("--metrics-port", type=int, default=0,
                        help="serve Prometheus metrics on this port (0: off)")
    args = parser.parse_args(argv)
    setup_logging()
    settings = get_settings()
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=settings.host)
    api_key = service_api_key(settings, open_metadata(settings))
    events = open_events(settings)
    consumer = events.consumer(GROUP, [TOPIC_PHOTO_UPLOADED])
    producer = events.producer()
    channel = make_channel(settings.target("embed"))
    worker = EmbedWorker(settings, consumer=consumer, producer=producer, blobs=open_blobs(settings),
                         vectors=open_vectors(settings), stub=embed_pb2_grpc.EmbedServiceStub(channel),
                         api_key=api_key)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    try:
        totals = worker.run(until_idle=args.once)
        log.info("stopped: %d indexed, %d failed, %d skipped in total",
                 totals.indexed, totals.failed, totals.skipped)
    finally:
        channel.close()
        consumer.close()
        producer.close()


if __name__ == "__main__":
    main()
