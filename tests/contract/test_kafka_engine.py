"""What only Kafka has, beside the shared EventLog contract (test_events.py): a broker that stops
and starts again, topics the backend creates itself, Java-compatible key partitioning, and the
engine script's own promises. Broker restarts use an engine of their own, not the session one."""
from __future__ import annotations

import collections
import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient

from photostore.backends.base import Event, EventConsumer, EventLogUnavailableError, Record, TopicPartition
from photostore.backends.kafka_events import KafkaEventLog
from photostore.settings import EventsSettings
from tests import engines

DEADLINE_S = 60.0
SEND_TIMEOUT_S = 3.0
POLL_S = 0.2


@pytest.fixture(scope="module")
def own_engine(tmp_path_factory):
    """A broker this module may stop and start."""
    engine = engines.kafka(tmp_path_factory.mktemp("kafka-restarts")).start()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture
def own_settings(own_engine) -> EventsSettings:
    if not own_engine.running():  # a test that failed halfway may have left it stopped
        own_engine.start()
    return EventsSettings(backend="kafka", partitions=4, session_timeout_ms=6000,
                          send_timeout_s=SEND_TIMEOUT_S,
                          kafka_bootstrap_servers=f"127.0.0.1:{own_engine.env['KAFKA_PORT']}")


@pytest.fixture
def logs():
    """Opens KafkaEventLogs and closes them all at the end."""
    opened: list[KafkaEventLog] = []

    def open_log(settings: EventsSettings) -> KafkaEventLog:
        opened.append(KafkaEventLog(settings))
        return opened[-1]

    yield open_log
    for log in opened:
        log.close()


def new_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def drain(consumer: EventConsumer, n: int, *, commit: bool = False) -> list[Event]:
    got: list[Event] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < n:
        assert time.monotonic() < deadline, f"only {len(got)} of {n} records came"
        batch = consumer.poll(max_records=n - len(got), timeout_s=POLL_S)
        if batch and commit:
            consumer.commit(batch)
        got += batch
    return got


def send_when_back(log: KafkaEventLog, record: Record) -> float:
    """Sends once the broker takes records again; returns how long that took."""
    producer = log.producer()
    started = time.monotonic()
    while True:
        try:
            producer.send_many([record])
            return time.monotonic() - started
        except EventLogUnavailableError:
            assert time.monotonic() - started < DEADLINE_S, "the broker did not come back"


# Broker down and back


def test_a_send_while_the_broker_is_down_fails_within_the_timeout(own_engine, own_settings, logs):
    topic, group = new_name("t"), new_name("g")
    log = logs(own_settings)
    producer = log.producer()
    producer.send(topic, "k", b"before")
    consumer = log.consumer(group, [topic])
    assert [e.value for e in drain(consumer, 1, commit=True)] == [b"before"]

    own_engine.stop()
    started = time.monotonic()
    with pytest.raises(EventLogUnavailableError):
        producer.send(topic, "k", b"lost")
    # Fails within the send timeout (plus slack for a loaded machine); it does not hang.
    assert time.monotonic() - started < SEND_TIMEOUT_S + 5.0
    # A fresh log that has never seen the broker (topics unknown) fails as fast.
    started = time.monotonic()
    with pytest.raises(EventLogUnavailableError):
        logs(own_settings).producer().send(new_name("t"), "k", b"lost")
    assert time.monotonic() - started < SEND_TIMEOUT_S + 5.0
    # Consumers keep retrying inside: a poll while the broker is down is empty, not an error.
    assert consumer.poll(timeout_s=POLL_S) == []

    own_engine.start()
    send_when_back(log, Record(topic, "k", b"after"))
    # The same consumer goes on: the failed record may or may not have been written, nothing
    # committed comes again, and the record sent after the restart arrives.
    seen: list[bytes] = []
    while b"after" not in seen:
        seen += [e.value for e in drain(consumer, 1, commit=True)]
    assert set(seen) <= {b"lost", b"after"}


def test_committed_offsets_survive_a_broker_restart(own_engine, own_settings, logs):
    topic, group = new_name("t"), new_name("g")
    log = logs(own_settings)
    log.producer().send_many([Record(topic, f"key-{i % 8}", str(i).encode()) for i in range(40)])
    consumer = log.consumer(group, [topic])
    got = drain(consumer, 40)
    consumer.commit(got[:25])
    before = log.lag(group, [topic])
    assert sum(before.values()) == 15
    consumer.close()

    own_engine.stop()
    own_engine.start()
    send_when_back(log, Record(topic, "key-0", b"40"))
    after = log.lag(group, [topic])
    expected = collections.Counter(before)
    expected[TopicPartition(topic, _partition_of(got, "key-0"))] += 1
    assert after == dict(expected)
    # A new member of the group goes on from the committed positions.
    again = drain(logs(own_settings).consumer(group, [topic]), 16)
    assert sorted(int(e.value) for e in again) == sorted([int(e.value) for e in got[25:]] + [40])


def _partition_of(events: list[Event], key: str) -> int:
    return next(e.partition for e in events if e.key == key)


# Topics and keys


@pytest.mark.parametrize("partitions", [1, 3])
def test_topics_get_the_configured_partitions(kafka_settings, logs, partitions):
    settings = kafka_settings.model_copy(update={"partitions": partitions})
    log = logs(settings)
    sent, subscribed, broadcast, measured = (new_name("t") for _ in range(4))
    log.producer().send(sent, "k", b"v")
    log.consumer(new_name("g"), [subscribed])
    log.broadcast([broadcast])
    assert log.lag(new_name("g"), [measured]) == {TopicPartition(measured, p): 0 for p in range(partitions)}
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    topics = admin.list_topics(timeout=DEADLINE_S).topics
    for topic in (sent, subscribed, broadcast, measured):
        assert len(topics[topic].partitions) == partitions, topic
    assert f"({partitions} partitions)" in log.describe()
    assert settings.kafka_bootstrap_servers in log.describe()


def test_the_broker_does_not_create_topics_on_its_own(kafka_settings):
    """auto.create.topics.enable=false: only the backend creates topics, with its partition count."""
    from confluent_kafka import Producer
    producer = Producer({"bootstrap.servers": kafka_settings.kafka_bootstrap_servers,
                         "message.timeout.ms": 3000})
    errors = []
    producer.produce(new_name("t"), b"v", on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(DEADLINE_S)
    assert errors and errors[0] is not None


def java_murmur2(data: bytes) -> int:
    """The hash Kafka's Java client partitions keys with (32-bit murmur2, seed 0x9747b28c)."""
    mask, m = 0xFFFFFFFF, 0x5BD1E995
    h = (0x9747B28C ^ len(data)) & mask
    whole = len(data) - len(data) % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    tail = data[whole:]
    if tail:
        for i in reversed(range(len(tail))):
            h ^= tail[i] << (8 * i)
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h


def test_keys_land_where_a_java_client_puts_them(kafka_settings, logs):
    topic = new_name("t")
    log = logs(kafka_settings)
    keys = [f"photo-{i}" for i in range(50)] + ["", "ä-ünïcode", "x" * 33]
    log.producer().send_many([Record(topic, key, b"v") for key in keys])
    got = drain(log.consumer(new_name("g"), [topic]), len(keys))
    n = kafka_settings.partitions
    assert {e.key: e.partition for e in got} == {
        key: (java_murmur2(key.encode()) & 0x7FFFFFFF) % n for key in keys}


# The engine script


def test_start_again_is_a_no_op_and_a_taken_port_is_refused(own_engine, tmp_path):
    if not own_engine.running():
        own_engine.start()
    pid = (own_engine.data_dir / "kafka.pid").read_text().strip()
    own_engine.start()  # already running on this data dir: same process
    assert (own_engine.data_dir / "kafka.pid").read_text().strip() == pid
    assert own_engine.running()
    intruder = engines.Engine("kafka", tmp_path / "other", dict(own_engine.env))
    with pytest.raises(RuntimeError, match="is taken"):
        intruder.start()
    assert not intruder.running()
