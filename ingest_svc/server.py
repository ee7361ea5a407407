"""Runs the IngestService with its background work: the outbox relay and the status consumer."""
from __future__ import annotations

import datetime as dt
import logging
import threading

from ingest_svc import imaging
from ingest_svc.service import SERVICE_NAME, IngestServicer
from ingest_svc.watch import WatchHub
from photos.v1 import embed_pb2_grpc, ingest_pb2_grpc
from photostore.auth import Authenticator
from photostore.backends import open_blobs, open_events, open_metadata, open_vectors
from photostore.backends.base import TOPIC_PHOTO_STATUS, utcnow
from photostore.server import GrpcService, make_channel, setup_logging, start_server
from photostore.settings import Settings, get_settings

log = logging.getLogger(__name__)

STATUS_GROUP = "ingest-status"
# Each watcher holds a server thread, so the pool gets this many threads on top of the usual ones.
MAX_WATCHERS = 64
OUTBOX_INTERVAL_S = 30.0
# The periodic relay leaves rows this young alone: their upload is still sending the event.
OUTBOX_MIN_AGE_S = 10.0
PRUNE_INTERVAL_S = 3600.0
STATUS_POLL_S = 0.5
STATUS_RETRY_S = 2.0


def serve(settings: Settings, port: int, max_watchers: int = MAX_WATCHERS) -> GrpcService:
    """Opens the backends, starts the server and its background threads; stop() ends them all."""
    blobs, metadata = open_blobs(settings), open_metadata(settings)
    events, vectors = open_events(settings), open_vectors(settings)
    hub = WatchHub(max_watchers)
    embed_channel = make_channel(settings.target("embed"))  # ReindexPhotos asks for the current models
    servicer = IngestServicer(settings, blobs, metadata, events.producer(), vectors, hub,
                              embed_pb2_grpc.EmbedServiceStub(embed_channel))
    svc = start_server(
        settings=settings, port=port,
        servicers=[(ingest_pb2_grpc.add_IngestServiceServicer_to_server, servicer)],
        service_names=[SERVICE_NAME], authenticator=Authenticator(metadata),
        max_workers=settings.grpc_max_workers + max_watchers)

    stopping = threading.Event()
    threads = [
        threading.Thread(target=_relay_outbox, args=(servicer, stopping), name="outbox", daemon=True),
        threading.Thread(target=_consume_status, args=(servicer, events, stopping),
                         name="status-consumer", daemon=True),
        threading.Thread(target=_prune_events, args=(events, settings.event_retention_hours, stopping),
                         name="event-retention", daemon=True),
    ]
    for thread in threads:
        thread.start()

    def stop_background() -> None:
        stopping.set()
        hub.close()
        for thread in threads:
            thread.join()

    svc.on_stop(stop_background)
    svc.on_stop(embed_channel.close, after_drain=True)
    return svc


def _relay_outbox(servicer: IngestServicer, stopping: threading.Event) -> None:
    """Re-sends upload events of unpublished rows: all of them at start-up, then every interval."""
    min_age_s = 0.0
    while not stopping.is_set():
        try:
            if sent := servicer.relay_unpublished(min_age_s):
                log.info("outbox: sent %d upload events", sent)
        except Exception:  # noqa: BLE001 - keep relaying; the rows stay unpublished
            log.exception("outbox relay failed")
        min_age_s = OUTBOX_MIN_AGE_S
        stopping.wait(OUTBOX_INTERVAL_S)


def _prune_events(events, retention_hours: float, stopping: threading.Event) -> None:
    """Drops consumed events past their retention, at start-up and then hourly."""
    while not stopping.is_set():
        try:
            if dropped := events.prune(utcnow() - dt.timedelta(hours=retention_hours)):
                log.info("event log: dropped %d consumed events older than %.0f h",
                         dropped, retention_hours)
        except Exception:  # noqa: BLE001 - the log only grows a while longer
            log.exception("pruning the event log failed")
        stopping.wait(PRUNE_INTERVAL_S)


def _consume_status(servicer: IngestServicer, events, stopping: threading.Event) -> None:
    """Applies photos.status events, committing each batch only after its writes."""
    consumer = events.consumer(STATUS_GROUP, [TOPIC_PHOTO_STATUS])
    failed = False
    try:
        while not stopping.is_set():
            try:
                if failed:  # redeliver what was polled but not committed
                    consumer.rewind_to_committed()
                    failed = False
                batch = consumer.poll(max_records=100, timeout_s=STATUS_POLL_S)
                if batch:
                    servicer.apply_status_events(batch)
                    consumer.commit(batch)
            except Exception:  # noqa: BLE001 - retry after a pause
                log.exception("applying status events failed; retrying")
                failed = True
                stopping.wait(STATUS_RETRY_S)
    finally:
        consumer.close()


def main() -> None:
    setup_logging()
    settings = get_settings()
    imaging.configure_pillow(settings.max_image_pixels)
    serve(settings, settings.ingest_port).wait()
