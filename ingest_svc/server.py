"""Runs the IngestService with its background work: the outbox relay and the status consumer."""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Callable

from prometheus_client import Gauge

from ingest_svc import imaging
from ingest_svc.albums import SERVICE_NAME as ALBUM_SERVICE_NAME, AlbumServicer
from ingest_svc.service import SERVICE_NAME, IngestServicer, change_message
from ingest_svc.watch import WatchHub
from photos.v1 import album_pb2_grpc, auth_pb2, auth_pb2_grpc, embed_pb2_grpc, ingest_pb2_grpc
from photostore import events as photo_events
from photostore.auth import Authenticator, AuthServicer, register_service_key
from photostore.backends import open_blobs, open_events, open_metadata, open_users, open_vectors
from photostore.backends.base import TOPIC_PHOTO_CHANGES, TOPIC_PHOTO_STATUS, TOPIC_PHOTO_UPLOADED, utcnow
from photostore.convert import NAME_PREFIX, USER_PREFIX
from photostore.pagination import PageTokens, token_secret
from photostore.metrics import serve_metrics
from photostore.server import GrpcService, lower_thread_priority, make_channel, setup_process, start_server
from photostore.settings import Settings, get_settings

log = logging.getLogger(__name__)

AUTH_SERVICE_NAME = auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name
STATUS_GROUP = "ingest-status"
# The periodic relay leaves rows this young alone: their upload may still be sending the event
# (a send waits up to events.send_timeout_s).
OUTBOX_MIN_AGE_MARGIN_S = 5.0
PRUNE_INTERVAL_S = 3600.0
POLL_S = 0.5
RETRY_S = 2.0
BACKLOG_INTERVAL_S = 15.0
STATUS_BACKLOG = Gauge("status_backlog", "photos.status events the ingest replicas have not applied yet")
PREVIEW_GROUP = "ingest-previews"
PREVIEW_BATCH = 10
PREVIEW_NICENESS = 10
PREVIEW_BACKLOG = Gauge("preview_backlog", "photos.uploaded events whose preview the ingest replicas "
                        "have not made yet")


def serve(settings: Settings, port: int, max_watchers: int | None = None) -> GrpcService:
    """Opens the backends, starts the server and its background threads; stop() ends them all."""
    blobs, metadata, users = open_blobs(settings), open_metadata(settings), open_users(settings)
    events, vectors = open_events(settings), open_vectors(settings)
    register_service_key(settings, users)
    hub = WatchHub()
    # Every replica hears every change (broadcast), from before it serves its first watcher.
    changes = events.broadcast([TOPIC_PHOTO_CHANGES])
    producer = events.producer()
    embed_channel = make_channel(settings.target("embed"), settings)  # ReindexPhotos asks for the current models
    page_tokens = PageTokens(token_secret(settings))
    servicer = IngestServicer(settings, blobs, metadata, producer, vectors, hub,
                              embed_pb2_grpc.EmbedServiceStub(embed_channel), page_tokens, max_watchers)
    svc = start_server(
        settings=settings, port=port,
        servicers=[(ingest_pb2_grpc.add_IngestServiceServicer_to_server, servicer),
                   (auth_pb2_grpc.add_AuthServiceServicer_to_server, AuthServicer(users)),
                   (album_pb2_grpc.add_AlbumServiceServicer_to_server, AlbumServicer(metadata, page_tokens))],
        service_names=[SERVICE_NAME, AUTH_SERVICE_NAME, ALBUM_SERVICE_NAME],
        authenticator=Authenticator.local(users, settings.auth_cache_seconds),
        # Upload and watch streams each hold a thread: they get theirs on top of the usual ones.
        max_workers=settings.grpc_max_workers + servicer.max_streams)

    stopping = threading.Event()
    threads = [
        threading.Thread(target=_relay_outbox, args=(servicer, settings, stopping), name="outbox",
                         daemon=True),
        threading.Thread(target=_consume_status, args=(servicer, events, stopping),
                         name="status-consumer", daemon=True),
        threading.Thread(target=_make_previews, args=(servicer, events, stopping),
                         name="previews", daemon=True),
        threading.Thread(target=_feed_watchers, args=(changes, hub, stopping),
                         name="watch-feed", daemon=True),
        threading.Thread(target=_purge_trash, args=(servicer, settings, stopping), name="trash-purge",
                         daemon=True),
        threading.Thread(target=_prune_events, args=(events, settings.event_retention_hours, stopping),
                         name="event-retention", daemon=True),
        # Hashes, for near-duplicates, the photos of each owner seen with some stored unhashed.
        threading.Thread(target=servicer.duplicates.run_backfill, args=(stopping,),
                         name="phash-backfill", daemon=True),
    ]
    for thread in threads:
        thread.start()

    def stop_background() -> None:
        stopping.set()
        hub.close()
        for thread in threads:
            thread.join()

    def release() -> None:
        servicer.close()
        embed_channel.close()
        producer.close()
        for backend in (events, vectors, metadata, users, blobs):
            backend.close()

    svc.on_stop(stop_background)
    svc.on_stop(release, after_drain=True)
    return svc


def _relay_outbox(servicer: IngestServicer, settings: Settings, stopping: threading.Event) -> None:
    """Re-sends upload events of unpublished rows: all of them at start-up, then every interval."""
    min_age_s = 0.0
    while not stopping.is_set():
        try:
            if sent := servicer.relay_unpublished(min_age_s):
                log.info("outbox: sent %d upload events", sent)
        except Exception as e:  # noqa: BLE001 - keep relaying; the rows stay unpublished
            log.warning("outbox relay failed, trying again in %.0f s: %s",
                        settings.outbox_interval_seconds, e)
        min_age_s = settings.events.send_timeout_s + OUTBOX_MIN_AGE_MARGIN_S
        stopping.wait(settings.outbox_interval_seconds)


def _purge_trash(servicer: IngestServicer, settings: Settings, stopping: threading.Event) -> None:
    """Purges photos whose time in the trash is over, at start-up and then every interval (any
    replica may: a photo purged twice is purged once)."""
    while not stopping.is_set():
        try:
            if purged := servicer.purge_expired():
                log.info("trash: purged %d photos older than %g days", purged, settings.trash_retention_days)
        except Exception:  # noqa: BLE001 - they stay in the trash until the next round
            log.exception("purging the trash failed")
        stopping.wait(settings.trash_purge_interval_seconds)


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
    """Applies photos.status events (once across the replicas: one group)."""
    _consume(events, STATUS_GROUP, TOPIC_PHOTO_STATUS, servicer.apply_status_events, STATUS_BACKLOG, stopping)


def _make_previews(servicer: IngestServicer, events, stopping: threading.Event) -> None:
    """Makes the previews of new uploads (once across the replicas: one group), at a lower CPU
    priority than uploads and indexing, which a preview must never hold back."""
    lower_thread_priority(PREVIEW_NICENESS)
    _consume(events, PREVIEW_GROUP, TOPIC_PHOTO_UPLOADED, servicer.make_previews, PREVIEW_BACKLOG,
             stopping, max_records=PREVIEW_BATCH)


def _consume(events, group: str, topic: str, apply: Callable[[list], object], backlog: Gauge,
             stopping: threading.Event, max_records: int = 100) -> None:
    """Applies `topic`'s events as `group`, committing each batch only after `apply` has written
    it; a failed batch is polled again after a pause. `backlog` tracks the group's lag."""
    consumer = events.consumer(group, [topic])
    failed = False
    measured = 0.0
    try:
        while not stopping.is_set():
            try:
                if time.monotonic() - measured > BACKLOG_INTERVAL_S:
                    backlog.set(sum(events.lag(group, [topic]).values()))
                    measured = time.monotonic()
                if failed:  # redeliver what was polled but not committed
                    consumer.seek_to_committed()
                    failed = False
                batch = consumer.poll(max_records=max_records, timeout_s=POLL_S)
                if batch:
                    apply(batch)
                    consumer.commit(batch)
            except Exception:  # noqa: BLE001 - retry after a pause
                log.exception("%s: applying %s events failed; retrying", group, topic)
                failed = True
                stopping.wait(RETRY_S)
    finally:
        consumer.close()


def _feed_watchers(changes, hub: WatchHub, stopping: threading.Event) -> None:
    """Passes every photos.changes record (from any replica) to this replica's watchers."""
    try:
        while not stopping.is_set():
            try:
                for event in changes.poll(max_records=500, timeout_s=POLL_S):
                    try:
                        message = photo_events.decode(event)
                    except photo_events.MalformedEventError as e:
                        log.warning("skipping malformed change event: %s", e)
                        continue
                    if message.WhichOneof("event") == "changed":
                        photo = message.changed.photo
                        hub.publish(photo.owner.removeprefix(USER_PREFIX), photo.name.removeprefix(NAME_PREFIX),
                                    change_message(message))
            except Exception:  # noqa: BLE001 - watchers miss nothing once the log answers again
                log.exception("reading photo changes failed; retrying")
                stopping.wait(RETRY_S)
    finally:
        changes.close()


def main() -> None:
    setup_process("ingest")
    settings = get_settings()
    serve_metrics(settings.ingest_metrics_port, settings.host)
    imaging.configure_pillow(settings.max_image_pixels)
    serve(settings, settings.ingest_port).wait()
