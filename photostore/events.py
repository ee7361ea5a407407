"""The one place that encodes and decodes event records (photos.v1.PhotoEvent, events.proto).

Producers build records with the `*_record` helpers; consumers call `decode`. Records are keyed by
photo id, so one photo's events keep their order in its partition.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Iterable, Iterator

from google.protobuf import message as protobuf_message

from photos.v1 import events_pb2, photo_pb2
from photostore.backends.base import (
    TOPIC_PHOTO_CHANGES,
    TOPIC_PHOTO_STATUS,
    TOPIC_PHOTO_TEXT,
    TOPIC_PHOTO_TEXT_DLQ,
    TOPIC_PHOTO_UPLOADED,
    TOPIC_PHOTO_UPLOADED_DLQ,
    Event,
    PhotoRecord,
    Record,
    utcnow,
)
from photostore.convert import photo_to_proto, to_timestamp

log = logging.getLogger(__name__)

# The queue of each kind of work request (events the workers consume), and where it is given up.
REQUEST_TOPICS = {"uploaded": TOPIC_PHOTO_UPLOADED, "reindex_requested": TOPIC_PHOTO_UPLOADED,
                  "text_requested": TOPIC_PHOTO_TEXT}
DEAD_LETTER_TOPICS = {TOPIC_PHOTO_UPLOADED: TOPIC_PHOTO_UPLOADED_DLQ, TOPIC_PHOTO_TEXT: TOPIC_PHOTO_TEXT_DLQ}

CREATED = photo_pb2.PHOTO_CHANGE_TYPE_CREATED
UPDATED = photo_pb2.PHOTO_CHANGE_TYPE_UPDATED
DELETED = photo_pb2.PHOTO_CHANGE_TYPE_DELETED


class MalformedEventError(ValueError):
    """The record's bytes are not a PhotoEvent (or not the kind its topic carries)."""


def decode(event: Event) -> events_pb2.PhotoEvent:
    message = events_pb2.PhotoEvent()
    try:
        message.ParseFromString(event.value)
    except protobuf_message.DecodeError as e:
        raise MalformedEventError(f"{event.topic}[{event.partition}]@{event.offset}: {e}") from e
    if message.WhichOneof("event") is None and not message.HasField("dead_letter"):
        raise MalformedEventError(f"{event.topic}[{event.partition}]@{event.offset}: no event set")
    return message


def of_kind(events: Iterable[Event], kind: str, *, others_expected: bool = False
            ) -> Iterator[tuple[Event, events_pb2.PhotoEvent]]:
    """The events of one kind (the PhotoEvent oneof), decoded; malformed ones are logged and
    passed over, and so are other kinds (logged unless the topic carries them as well)."""
    for event in events:
        try:
            message = decode(event)
        except MalformedEventError as e:
            log.warning("skipping malformed event: %s", e)
            continue
        if message.WhichOneof("event") == kind:
            yield event, message
        elif not others_expected:
            log.warning("skipping %s event on %s", message.WhichOneof("event"), event.topic)


def _record(topic: str, key: str, **fields) -> Record:
    message = events_pb2.PhotoEvent(event_time=to_timestamp(utcnow()), **fields)
    return Record(topic, key, message.SerializeToString())


def indexing_subject(r: PhotoRecord) -> events_pb2.IndexingSubject:
    return events_pb2.IndexingSubject(
        photo_id=r.id, owner=r.owner, blob_key=r.blob_key, sha256=r.sha256,
        content_type=r.content_type, take_time=to_timestamp(r.taken_at),
        camera_make=r.camera_make, camera_model=r.camera_model, filename=r.filename,
        model_copy_key=r.model_copy_key)


def uploaded_record(r: PhotoRecord) -> Record:
    """Queues a new photo for indexing."""
    return _record(TOPIC_PHOTO_UPLOADED, r.id,
                   uploaded=events_pb2.PhotoUploadedEvent(subject=indexing_subject(r)))


def reindex_record(r: PhotoRecord) -> Record:
    """Queues a stored photo again for the current models."""
    return _record(TOPIC_PHOTO_UPLOADED, r.id,
                   reindex_requested=events_pb2.PhotoReindexRequestedEvent(subject=indexing_subject(r)))


def text_request_record(subject: events_pb2.IndexingSubject) -> Record:
    """Queues a searchable photo for the later stage that reads its text."""
    return _record(TOPIC_PHOTO_TEXT, subject.photo_id,
                   text_requested=events_pb2.PhotoTextRequestedEvent(subject=subject))


def retry_record(message: events_pb2.PhotoEvent, attempts: int) -> Record:
    """The same indexing request again, with its failed attempts counted in the event itself (so
    the count survives restarts and rebalances)."""
    again = events_pb2.PhotoEvent()
    again.CopyFrom(message)
    again.event_time.CopyFrom(to_timestamp(utcnow()))
    again.ClearField("dead_letter")
    kind = again.WhichOneof("event")
    getattr(again, kind).attempts = attempts
    return Record(REQUEST_TOPICS[kind], indexing_request(again).subject.photo_id, again.SerializeToString())


def dead_letter_record(message: events_pb2.PhotoEvent | None, source: Event, reason: str) -> Record:
    """The work request, given up, on its queue's dead-letter topic with why and where it came from.
    A record that is no PhotoEvent at all (message None) keeps its bytes in dead_letter.original."""
    dead = events_pb2.PhotoEvent()
    if message is not None:
        dead.CopyFrom(message)
    dead.dead_letter.CopyFrom(events_pb2.DeadLetter(
        reason=reason, source_topic=source.topic, source_partition=source.partition,
        source_offset=source.offset, original=source.value if message is None else b""))
    return Record(DEAD_LETTER_TOPICS[source.topic], source.key, dead.SerializeToString())


def indexing_request(message: events_pb2.PhotoEvent, topic: str | None = None) -> (
        events_pb2.PhotoUploadedEvent | events_pb2.PhotoReindexRequestedEvent | events_pb2.PhotoTextRequestedEvent):
    """The work request a worker consumes (its subject and attempts); with `topic`, only a kind
    that belongs on that topic."""
    kind = message.WhichOneof("event")
    if kind not in REQUEST_TOPICS or topic not in (None, REQUEST_TOPICS[kind]):
        raise MalformedEventError(f"expected a work request for {topic or 'a worker'}, got {kind}")
    return getattr(message, kind)


def status_record(status: events_pb2.PhotoStatusChangedEvent) -> Record:
    return _record(TOPIC_PHOTO_STATUS, status.photo_id, status_changed=status)


def changed_record(r: PhotoRecord, change_type: int, trash_retention: dt.timedelta | None = None) -> Record:
    """Tells every ingest replica's watchers that the photo's row changed (with its purge_time
    when the trash retention is given)."""
    return _record(TOPIC_PHOTO_CHANGES, r.id, changed=events_pb2.PhotoChangedEvent(
        photo=photo_to_proto(r, trash_retention), change_type=change_type))


def status_name(status: int) -> str:
    return photo_pb2.PhotoStatus.Name(status)
