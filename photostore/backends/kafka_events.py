"""The event log on Apache Kafka, through confluent-kafka (librdkafka).

librdkafka brings what the port needs ready-made: an idempotent producer (acks=all, no duplicates
on retry), batching, and cooperative rebalance callbacks that run inside poll.

- Topics: created on first use (first send, subscribe, broadcast, lag) with settings.partitions
  partitions; broker auto-creation is off (deploy/local/kafka.sh). Replication: broker default.
- Keys pick partitions with murmur2 as Java clients do, so mixed Java/Python producers agree.
- Groups rebalance cooperatively (cooperative-sticky): on_revoked gets only the partitions that
  go, the others keep flowing. A member whose process stops heartbeating is dropped after
  session_timeout_ms; a live one that has not polled for max_poll_interval_ms (a stuck batch) too.
- Consumers commit by hand (synchronously, after processing); a member only commits partitions
  it holds, so a late commit after a rebalance never moves another member's position back.
- Retention is Kafka's (retention.ms): prune does nothing.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from typing import Iterable, Sequence

from confluent_kafka import (OFFSET_BEGINNING, TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError,
                             KafkaException, Message, Producer)
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from photostore.backends.base import (Event, EventConsumer, EventLog, EventLogUnavailableError,
                                      EventProducer, RebalanceCallback, Record, TopicPartition)
from photostore.settings import EventsSettings

log = logging.getLogger(__name__)

# How often a consumer retries creating its topics after the broker could not be reached.
TOPIC_RETRY_S = 5.0
# A commit failing with one of these lost its partitions to a rebalance: logged, not raised.
REBALANCE_ERRORS = {
    KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID, KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.FENCED_INSTANCE_ID, KafkaError.STALE_MEMBER_EPOCH, KafkaError._ASSIGNMENT_LOST,
}
# What a partition answers in the moment after its topic was created.
NEW_PARTITION_ERRORS = {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.LEADER_NOT_AVAILABLE,
                        KafkaError.NOT_LEADER_FOR_PARTITION}
# Same client-side error logged at most this often (a stopped broker repeats them all the time).
ERROR_LOG_EVERY_S = 30.0


def _client_config(settings: EventsSettings) -> dict:
    security = {"security.protocol": settings.kafka_security_protocol}
    if settings.kafka_sasl_mechanism:
        security.update({"sasl.mechanism": settings.kafka_sasl_mechanism,
                         "sasl.username": settings.kafka_sasl_username,
                         "sasl.password": settings.kafka_sasl_password.get_secret_value()})
    return {
        **security,
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        # A restarted broker is found again within a second or two (default backoff up to 10 s).
        "reconnect.backoff.max.ms": 2000,
        "log.connection.close": False,
        "logger": _LibrdkafkaLog(),
        "error_cb": _ErrorLogger(),
    }


class _LibrdkafkaLog:
    """librdkafka's own log lines, at DEBUG: they repeat what error_cb reports (each connection
    refused while a broker is down, ...)."""

    def log(self, _level: int, msg: str, *args) -> None:
        log.debug("librdkafka: " + msg, *args)


class _ErrorLogger:
    """error_cb: client errors (broker down, ...) are retried by librdkafka; log each kind now and
    then, and raise nothing."""

    def __init__(self):
        self._last: dict[int, float] = {}

    def __call__(self, err: KafkaError) -> None:
        now = time.monotonic()
        if err.fatal() or now - self._last.get(err.code(), -ERROR_LOG_EVERY_S) >= ERROR_LOG_EVERY_S:
            self._last[err.code()] = now
            log.warning("kafka: %s", err.str())


def _unavailable(what: str, err: object) -> EventLogUnavailableError:
    return EventLogUnavailableError(f"kafka {what}: {err}")


def _kafka_error(exc: KafkaException) -> KafkaError | None:
    arg = exc.args[0] if exc.args else None
    return arg if isinstance(arg, KafkaError) else None


def _port_partitions(partitions: Iterable[KafkaTopicPartition]) -> set[TopicPartition]:
    return {TopicPartition(p.topic, p.partition) for p in partitions}


class _Topics:
    """Creates the topics the backend is asked for, once each (idempotent across processes)."""

    def __init__(self, settings: EventsSettings):
        self._settings = settings
        self._admin: AdminClient | None = None
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def _client(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(_client_config(self._settings))
        return self._admin

    def ensure(self, topics: Iterable[str], timeout_s: float | None = None) -> None:
        """Raises EventLogUnavailableError when the cluster cannot be asked within timeout_s
        (default: settings.send_timeout_s)."""
        timeout_s = self._settings.send_timeout_s if timeout_s is None else timeout_s
        wanted = set(topics)
        with self._lock:
            missing = wanted - self._known
            if not missing:
                return
            deadline = time.monotonic() + max(timeout_s, 0.1)
            admin = self._client()
            try:
                existing = set(admin.list_topics(timeout=max(deadline - time.monotonic(), 0.1)).topics)
            except KafkaException as exc:
                raise _unavailable("listing topics", exc) from exc
            to_create = sorted(missing - existing)
            if to_create:
                remaining = max(deadline - time.monotonic(), 0.1)
                futures = admin.create_topics(
                    [NewTopic(t, num_partitions=self._settings.partitions, replication_factor=-1)
                     for t in to_create],
                    operation_timeout=remaining, request_timeout=remaining)
                for topic, future in futures.items():
                    try:
                        future.result(timeout=remaining + 1.0)
                        log.info("kafka: created topic %s with %d partitions", topic,
                                 self._settings.partitions)
                    except KafkaException as exc:
                        err = _kafka_error(exc)
                        if err is None or err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                            raise _unavailable(f"creating topic {topic}", exc) from exc
                    except Exception as exc:  # the future itself timed out
                        raise _unavailable(f"creating topic {topic}", exc) from exc
            self._known |= missing

    def partitions(self, topic: str) -> list[int]:
        """The topic's partitions, once every one has a leader (a topic just created may take a
        moment to show in the metadata)."""
        deadline = time.monotonic() + self._settings.send_timeout_s
        while True:
            try:
                meta = self._client().list_topics(topic, timeout=max(deadline - time.monotonic(), 0.1))
            except KafkaException as exc:
                raise _unavailable(f"metadata of {topic}", exc) from exc
            found = meta.topics.get(topic)
            problem = (found.error if found is not None else "no such topic") if (
                found is None or found.error is not None) else None
            if problem is None and found.partitions and all(
                    p.leader >= 0 and p.error is None for p in found.partitions.values()):
                return sorted(found.partitions)
            if time.monotonic() >= deadline:
                raise _unavailable(f"metadata of {topic}", problem or "partitions without a leader")
            time.sleep(0.05)

    def watermarks(self, consumer: Consumer, tp: KafkaTopicPartition) -> tuple[int, int]:
        """(low, high) offsets of a partition, retried while a new partition gets its leader."""
        deadline = time.monotonic() + self._settings.send_timeout_s
        while True:
            try:
                return consumer.get_watermark_offsets(
                    tp, timeout=max(deadline - time.monotonic(), 0.1))
            except KafkaException as exc:
                err = _kafka_error(exc)
                passing = err is not None and (err.retriable() or err.code() in NEW_PARTITION_ERRORS)
                if not passing or time.monotonic() >= deadline:
                    raise _unavailable(f"offsets of {tp.topic}[{tp.partition}]", exc) from exc
            time.sleep(0.05)


class KafkaEventProducer(EventProducer):
    def __init__(self, settings: EventsSettings, topics: _Topics):
        self._settings = settings
        self._topics = topics
        self._lock = threading.Lock()
        self._producer = self._new_producer()

    def _new_producer(self) -> Producer:
        timeout_ms = max(int(self._settings.send_timeout_s * 1000), 100)
        return Producer({
            **_client_config(self._settings),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            # Java's default partitioner (murmur2 of the key), so keys land alike from any client.
            "partitioner": "murmur2_random",
            # A record not acknowledged within send_timeout_s fails (the default waits 5 min).
            "message.timeout.ms": timeout_ms,
            "request.timeout.ms": min(30_000, timeout_ms),
        })

    def send_many(self, records: Sequence[Record]) -> None:
        if not records:
            return
        deadline = time.monotonic() + self._settings.send_timeout_s
        self._topics.ensure({r.topic for r in records}, self._settings.send_timeout_s)
        errors: list[KafkaError | None] = []
        producer = self._producer

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            errors.append(err)

        for record in records:
            while True:
                try:
                    producer.produce(record.topic, key=record.key.encode("utf-8"),
                                     value=record.value, on_delivery=delivered)
                    break
                except BufferError:  # local queue full: let deliveries drain
                    if time.monotonic() >= deadline:
                        raise _unavailable("send", "local queue full") from None
                    producer.poll(0.05)
                except KafkaException as exc:
                    raise _unavailable("send", exc) from exc
        producer.flush(max(deadline - time.monotonic(), 0.0))
        failed = [e for e in errors if e is not None]
        if any(e.fatal() for e in failed):
            self._replace_producer(producer)
        if failed:
            raise _unavailable("send", f"{len(failed)} of {len(records)} records failed: {failed[0].str()}")
        if len(errors) < len(records):
            raise _unavailable(
                "send", f"{len(records) - len(errors)} of {len(records)} records not acknowledged "
                        f"within {self._settings.send_timeout_s:g}s")

    def _replace_producer(self, broken: Producer) -> None:
        """An idempotent producer with a fatal error takes no more records: start a new one."""
        with self._lock:
            if self._producer is broken:
                log.warning("kafka: producer hit a fatal error; starting a new one")
                self._producer = self._new_producer()

    def close(self) -> None:
        self._producer.flush(self._settings.send_timeout_s)


class KafkaEventConsumer(EventConsumer):
    """A group member (subscribe, cooperative rebalancing) or, with group=None, a broadcast
    listener that reads every partition from its end without joining any group."""

    def __init__(self, settings: EventsSettings, topics: _Topics, group: str | None,
                 topic_names: Sequence[str], *, on_assigned: RebalanceCallback | None = None,
                 on_revoked: RebalanceCallback | None = None):
        self._settings = settings
        self._topics = topics
        self._topic_names = list(topic_names)
        self._broadcast = group is None
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        self._assigned: set[TopicPartition] = set()
        # Highest position this member committed (or found committed) per partition it holds.
        self._committed: dict[TopicPartition, int] = {}
        self._topics_ready = False
        self._next_topic_try = 0.0
        session_ms = settings.session_timeout_ms
        config = {
            **_client_config(settings),
            "group.id": group or f"broadcast-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": max(100, min(1000, session_ms // 3)),
            # librdkafka heartbeats in the background: a slow batch keeps the membership; one
            # stuck past this counts as gone.
            "max.poll.interval.ms": max(settings.max_poll_interval_ms, session_ms),
            "partition.assignment.strategy": "cooperative-sticky",
            # Subscribed topics created after the subscription are found soon.
            "topic.metadata.refresh.interval.ms": 10_000,
        }
        self._consumer = Consumer(config)
        if self._broadcast:
            self._assign_at_end()
        else:
            self._try_topics(min(settings.send_timeout_s, 5.0))
            self._consumer.subscribe(self._topic_names, on_assign=self._assign_cb,
                                     on_revoke=self._revoke_cb, on_lost=self._lost_cb)

    # Topics and assignment

    def _try_topics(self, timeout_s: float) -> None:
        """Creates the subscribed topics; while the broker cannot be reached, retries from poll."""
        if self._topics_ready or time.monotonic() < self._next_topic_try:
            return
        try:
            self._topics.ensure(self._topic_names, timeout_s)
            self._topics_ready = True
        except EventLogUnavailableError as exc:
            self._next_topic_try = time.monotonic() + TOPIC_RETRY_S
            log.warning("kafka: topics %s not created yet (%s); retrying", self._topic_names, exc)

    def _assign_at_end(self) -> None:
        """Every partition at its current end, looked up now: a record sent after broadcast()
        returns is always heard (OFFSET_END would be resolved later, missing such records)."""
        self._topics.ensure(self._topic_names)
        start: list[KafkaTopicPartition] = []
        for topic in self._topic_names:
            for partition in self._topics.partitions(topic):
                _low, high = self._topics.watermarks(self._consumer, KafkaTopicPartition(topic, partition))
                start.append(KafkaTopicPartition(topic, partition, high))
        self._consumer.assign(start)
        self._assigned = _port_partitions(start)

    def _assign_cb(self, _consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        added = _port_partitions(partitions)
        self._assigned |= added
        for tp in added:
            self._committed.pop(tp, None)
        if added and self._on_assigned:
            self._on_assigned(added)

    def _revoke_cb(self, _consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        # Still held while the callback runs: it may commit what it processed for them.
        going = _port_partitions(partitions)
        try:
            if going and self._on_revoked:
                self._on_revoked(going)
        finally:
            self._forget(going)

    def _lost_cb(self, _consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        # Already another member's: commits for them are dropped, the callback drops its state.
        lost = _port_partitions(partitions)
        log.warning("kafka: lost partitions %s (session timed out?)", sorted(lost))
        self._forget(lost)
        if lost and self._on_revoked:
            self._on_revoked(lost)

    def _forget(self, partitions: set[TopicPartition]) -> None:
        self._assigned -= partitions
        for tp in partitions:
            self._committed.pop(tp, None)

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    # Records

    def poll(self, max_records: int = 100, timeout_s: float = 1.0) -> list[Event]:
        deadline = time.monotonic() + max(timeout_s, 0.0)
        if not self._broadcast:
            self._try_topics(min(max(timeout_s, 0.1), 5.0))
        # consume(n, timeout) waits for a full batch or the timeout: wait for the first record
        # with poll(), then take what else is ready at once.
        try:
            first = self._consumer.poll(max(deadline - time.monotonic(), 0.0))
            messages = [] if first is None else [first]
            if first is not None and max_records > 1:
                messages += self._consumer.consume(max_records - 1, 0)
        except KafkaException as exc:
            raise _unavailable("poll", exc) from exc
        events = []
        for msg in messages:  # every record is kept, also those that came with an assignment
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise _unavailable("poll", err.str())
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("kafka: consumer: %s", err.str())
                continue
            kind, millis = msg.timestamp()
            when = (dt.datetime.now(dt.timezone.utc) if kind == TIMESTAMP_NOT_AVAILABLE
                    else dt.datetime.fromtimestamp(millis / 1000, dt.timezone.utc))
            key = msg.key()
            events.append(Event(topic=msg.topic(), partition=msg.partition(), offset=msg.offset(),
                                key=key.decode("utf-8", errors="replace") if key else "",
                                value=msg.value() or b"", timestamp=when))
        return events

    def commit(self, events: Sequence[Event]) -> None:
        if self._broadcast or not events:
            return
        positions: dict[TopicPartition, int] = {}
        for e in events:
            positions[e.topic_partition] = max(positions.get(e.topic_partition, -1), e.offset + 1)
        not_held = sorted(tp for tp in positions if tp not in self._assigned)
        if not_held:
            log.info("kafka: not committing %s: revoked by a rebalance", not_held)
        held = {tp: pos for tp, pos in positions.items() if tp in self._assigned}
        unknown = [tp for tp in held if tp not in self._committed]
        if unknown:
            for tp, pos in self._fetch_committed(unknown).items():
                self._committed[tp] = pos
        moves = {tp: pos for tp, pos in held.items() if pos > self._committed.get(tp, -1)}
        if not moves:
            return
        offsets = [KafkaTopicPartition(tp.topic, tp.partition, pos) for tp, pos in moves.items()]
        try:
            results = self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            err = _kafka_error(exc)
            if err is not None and err.code() in REBALANCE_ERRORS:
                log.info("kafka: commit of %s dropped: %s (rebalance)", sorted(moves), err.str())
                return
            raise _unavailable("commit", exc) from exc
        for result in results or []:
            tp = TopicPartition(result.topic, result.partition)
            if result.error is None:
                self._committed[tp] = max(self._committed.get(tp, -1), result.offset)
            elif result.error.code() in REBALANCE_ERRORS:
                log.info("kafka: commit of %s dropped: %s (rebalance)", tp, result.error.str())
            else:
                raise _unavailable(f"commit of {tp}", result.error.str())

    def _fetch_committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Committed position per partition; OFFSET_INVALID (a negative number) where none is."""
        try:
            found = self._consumer.committed(
                [KafkaTopicPartition(tp.topic, tp.partition) for tp in partitions],
                timeout=self._settings.send_timeout_s)
        except KafkaException as exc:
            raise _unavailable("reading committed offsets", exc) from exc
        return {TopicPartition(p.topic, p.partition): p.offset for p in found}

    def seek_to_committed(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        if self._broadcast:
            return  # nothing is committed: it goes on from where it is
        wanted = self.assignment() if partitions is None else set(partitions) & self._assigned
        if not wanted:
            return
        for tp, pos in self._fetch_committed(sorted(wanted)).items():
            start = pos if pos >= 0 else OFFSET_BEGINNING
            try:
                self._consumer.seek(KafkaTopicPartition(tp.topic, tp.partition, start))
            except KafkaException as exc:
                raise _unavailable(f"seek in {tp}", exc) from exc
            if pos >= 0:
                self._committed[tp] = pos

    def close(self) -> None:
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError) as exc:  # already closed, or the broker is gone
            log.info("kafka: consumer close: %s", exc)


class KafkaEventLog(EventLog):
    def __init__(self, settings: EventsSettings):
        self._settings = settings
        self._topics = _Topics(settings)
        self._open: list[KafkaEventProducer | KafkaEventConsumer] = []
        self._lock = threading.Lock()

    def _track(self, client):
        with self._lock:
            self._open.append(client)
        return client

    def producer(self) -> EventProducer:
        return self._track(KafkaEventProducer(self._settings, self._topics))

    def consumer(self, group: str, topics: Sequence[str], *,
                 on_assigned: RebalanceCallback | None = None,
                 on_revoked: RebalanceCallback | None = None) -> EventConsumer:
        return self._track(KafkaEventConsumer(self._settings, self._topics, group, topics,
                                              on_assigned=on_assigned, on_revoked=on_revoked))

    def broadcast(self, topics: Sequence[str]) -> EventConsumer:
        return self._track(KafkaEventConsumer(self._settings, self._topics, None, topics))

    def lag(self, group: str, topics: Sequence[str]) -> dict[TopicPartition, int]:
        self._topics.ensure(topics)
        reader = Consumer({**_client_config(self._settings), "group.id": group,
                           "enable.auto.commit": False})
        try:
            partitions = [KafkaTopicPartition(t, p) for t in topics for p in self._topics.partitions(t)]
            committed = reader.committed(partitions, timeout=self._settings.send_timeout_s)
            lag = {}
            for tp in committed:
                low, high = self._topics.watermarks(reader, KafkaTopicPartition(tp.topic, tp.partition))
                start = tp.offset if tp.offset >= 0 else low
                lag[TopicPartition(tp.topic, tp.partition)] = max(high - start, 0)
            return lag
        except KafkaException as exc:
            raise _unavailable("lag", exc) from exc
        finally:
            reader.close()

    def describe(self) -> str:
        return f"kafka at {self._settings.kafka_bootstrap_servers} ({self._settings.partitions} partitions)"

    def close(self) -> None:
        with self._lock:
            clients, self._open = self._open, []
        for client in clients:
            try:
                client.close()
            except Exception as exc:  # one client failing to close must not keep the others open
                log.warning("kafka: closing %s: %s", type(client).__name__, exc)
