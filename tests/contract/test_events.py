"""The EventLog contract, run against the embedded log and against Kafka: the same Kafka model
(partitions, consumer groups, at-least-once delivery, broadcast) means the same for both.

Every test uses its own topics and groups, so tests on the shared Kafka broker stay apart. A
"second instance" of the log stands for another process (the embedded log is shared through its
file, Kafka through the broker); a few tests use real child processes.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
import multiprocessing
import os
import signal
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Callable

import pytest

from photostore.backends.base import Event, EventConsumer, EventLog, Record, TopicPartition, utcnow
from photostore.backends.prefixed_events import PrefixedEventLog
from photostore.backends.sqlite_events import IncompatibleEventLogError, SqliteEventLog
from photostore.settings import EventsSettings

PARTITIONS = 4
DEADLINE_S = 60.0
POLL_S = 0.1
QUIET_S = 1.0  # how long "nothing more comes" is watched for


def open_log(spec: tuple) -> EventLog:
    """Opens the log a spec (kind, file, settings) names; specs pickle, so child processes open the
    same log."""
    kind, path, settings = spec
    if kind == "embedded":
        return SqliteEventLog(Path(path), EventsSettings(**settings))
    if kind == "prefixed":  # the same log under a deployment's topic prefix (PHOTOSTORE_EVENTS__TOPIC_PREFIX)
        return PrefixedEventLog(SqliteEventLog(Path(path), EventsSettings(**settings)), "tenant-a.")
    from photostore.backends.kafka_events import KafkaEventLog
    return KafkaEventLog(EventsSettings(**settings))


@dataclasses.dataclass
class Twin:
    kind: str
    spec: tuple
    _closers: list[Callable[[], None]] = dataclasses.field(default_factory=list)

    @property
    def session_timeout_s(self) -> float:
        return self.spec[2]["session_timeout_ms"] / 1000

    @property
    def prunes(self) -> bool:
        """Whether prune() drops records (Kafka leaves that to its own retention)."""
        return self.kind in ("embedded", "prefixed")

    def open(self, **settings) -> EventLog:
        """Another instance of the log (as in another process), with these settings changed."""
        kind, path, base = self.spec
        log = open_log((kind, path, {**base, **settings}))
        self._closers.append(log.close)
        return log

    def consumer(self, log: EventLog, group: str, topics: list[str], **callbacks) -> EventConsumer:
        consumer = log.consumer(group, topics, **callbacks)
        self._closers.append(consumer.close)
        return consumer

    def broadcast(self, log: EventLog, topics: list[str]) -> EventConsumer:
        consumer = log.broadcast(topics)
        self._closers.append(consumer.close)
        return consumer

    def close_all(self) -> None:
        for close in reversed(self._closers):
            try:
                close()
            except Exception:  # noqa: BLE001 - teardown of what a test may have closed already
                pass


@pytest.fixture(params=["embedded", "prefixed", "kafka"])
def twin(request, tmp_path):
    if request.param in ("embedded", "prefixed"):
        settings = EventsSettings(partitions=PARTITIONS, session_timeout_ms=3000)
        spec = (request.param, str(tmp_path / "events.sqlite3"), settings.model_dump())
    else:
        settings = request.getfixturevalue("kafka_settings")
        assert settings.partitions == PARTITIONS
        spec = ("kafka", None, settings.model_dump())
    made = Twin(request.param, spec)
    yield made
    made.close_all()


def new_topic() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def new_group() -> str:
    return f"g-{uuid.uuid4().hex[:12]}"


def partitions_of(topic: str) -> set[TopicPartition]:
    return {TopicPartition(topic, p) for p in range(PARTITIONS)}


def values(events: list[Event]) -> list[int]:
    return [int(e.value) for e in events]


def numbered(topic: str, numbers, keys: int = 8) -> list[Record]:
    """Records valued by their number, keyed over `keys` keys (so spread over the partitions)."""
    return [Record(topic, f"key-{n % keys}", str(n).encode()) for n in numbers]


def drain(consumer: EventConsumer, n: int, *, max_records: int = 100, commit: bool = False) -> list[Event]:
    """Polls until exactly n records came (never asks for more than the rest)."""
    got: list[Event] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < n:
        assert time.monotonic() < deadline, f"only {len(got)} of {n} records came"
        batch = consumer.poll(max_records=min(max_records, n - len(got)), timeout_s=POLL_S)
        if commit and batch:
            consumer.commit(batch)
        got += batch
    return got


def nothing_more(*consumers: EventConsumer) -> bool:
    end = time.monotonic() + QUIET_S
    while time.monotonic() < end:
        if any(c.poll(timeout_s=POLL_S) for c in consumers):
            return False
    return True


def poll_until(consumers: list[EventConsumer], done: Callable[[], bool], *, commit: bool = True,
               what: str = "condition") -> dict[int, list[Event]]:
    """Polls every consumer in turn (committing what each gets, unless told not to) until done();
    returns what each got, by its index."""
    got: dict[int, list[Event]] = collections.defaultdict(list)
    deadline = time.monotonic() + DEADLINE_S
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}: " + "; ".join(
            f"member {i} holds {sorted(c.assignment())}" for i, c in enumerate(consumers))
        for i, consumer in enumerate(consumers):
            batch = consumer.poll(timeout_s=POLL_S)
            if batch and commit:
                consumer.commit(batch)
            got[i] += batch
    return got


def split_between(consumers: list[EventConsumer], topic: str) -> Callable[[], bool]:
    """Every member holds some partitions, none twice, all of them covered."""
    def done() -> bool:
        held = [c.assignment() for c in consumers]
        return (all(held) and sum(len(h) for h in held) == PARTITIONS
                and set().union(*held) == partitions_of(topic))
    return done


class Calls:
    """What the rebalance callbacks of one member were called with."""

    def __init__(self):
        self.assigned: list[set[TopicPartition]] = []
        self.revoked: list[set[TopicPartition]] = []

    def all_assigned(self) -> set[TopicPartition]:
        return set().union(*self.assigned)

    def all_revoked(self) -> set[TopicPartition]:
        return set().union(*self.revoked)


# Delivery


def test_at_least_once_until_committed(twin):
    topic, other = new_topic(), new_topic()
    log = twin.open()
    log.producer().send_many([Record(topic, "one-key", str(i).encode()) for i in range(5)])
    log.producer().send(other, "x", b"7")
    group = new_group()
    consumer = twin.consumer(log, group, [topic])
    first = drain(consumer, 3, max_records=3)
    assert values(first) == [0, 1, 2]
    consumer.commit(first[:2])
    assert sum(log.lag(group, [topic]).values()) == 3
    consumer.close()
    # A crash before committing the third: the next member of the group gets it again.
    again = twin.consumer(twin.open(), group, [topic])
    assert values(drain(again, 3)) == [2, 3, 4]
    assert nothing_more(again)
    # Groups are independent.
    assert values(drain(twin.consumer(log, new_group(), [topic]), 5)) == [0, 1, 2, 3, 4]


def test_same_key_same_partition_in_order_with_contiguous_offsets(twin):
    topic = new_topic()
    records = numbered(topic, range(60), keys=6)
    twin.open().producer().send_many(records[:30])
    twin.open().producer().send_many(records[30:])  # another writer maps keys the same way
    got = drain(twin.consumer(twin.open(), new_group(), [topic]), 60)
    by_key: dict[str, list[Event]] = collections.defaultdict(list)
    by_partition: dict[TopicPartition, list[Event]] = collections.defaultdict(list)
    for e in got:
        by_key[e.key].append(e)
        by_partition[e.topic_partition].append(e)
    for key, events in by_key.items():
        assert len({e.partition for e in events}) == 1, key
        assert values(events) == sorted(values(events)), key  # sent order kept
    for tp, events in by_partition.items():
        assert [e.offset for e in events] == list(range(len(events))), tp
    assert all(0 <= e.partition < PARTITIONS and e.topic == topic for e in got)
    assert len(by_partition) >= 2  # six keys do not all land in one partition


def test_send_many_of_a_thousand_is_fast_and_all_delivered(twin):
    topic = new_topic()
    log = twin.open()
    records = [Record(topic, f"photo-{n}", b"\x00\xff" + str(n).encode()) for n in range(1000)]
    started = time.monotonic()
    log.producer().send_many(records)
    assert time.monotonic() - started < 10.0
    got = drain(twin.consumer(log, new_group(), [topic]), 1000, max_records=500)
    assert sorted(e.value for e in got) == sorted(r.value for r in records)  # bytes kept exactly
    assert len({(e.topic_partition, e.offset) for e in got}) == 1000
    assert {e.topic_partition for e in got} == partitions_of(topic)
    assert all(e.timestamp.tzinfo is not None and abs(e.timestamp - utcnow()) < dt.timedelta(minutes=5)
               for e in got)


def test_poll_wakes_on_records_from_another_process(twin):
    topic = new_topic()
    consumer = twin.consumer(twin.open(), new_group(), [topic])
    consumer.poll(timeout_s=POLL_S)  # joined and waiting
    proc = multiprocessing.get_context("spawn").Process(target=_produce, args=(twin.spec, topic, 20))
    proc.start()
    try:
        got = drain(consumer, 20)
    finally:
        proc.join(DEADLINE_S)
    assert proc.exitcode == 0
    assert sorted(values(got)) == list(range(20))
    partition_of = {e.key: e.partition for e in got}
    for partition in set(partition_of.values()):
        in_partition = [n for n in values(got) if partition_of[f"key-{n % 8}"] == partition]
        assert in_partition == sorted(in_partition)  # one writer: its order kept per partition
    # This process maps every key to the partition the other one did.
    twin.open().producer().send_many(numbered(topic, range(20, 28)))
    assert {e.key: e.partition for e in drain(consumer, 8)} == partition_of


def _produce(spec: tuple, topic: str, n: int) -> None:
    log = open_log(spec)
    producer = log.producer()
    for record in numbered(topic, range(n)):
        producer.send(record.topic, record.key, record.value)
    producer.close()
    log.close()


# Positions


def test_commits_are_per_partition_and_never_move_back(twin):
    topic = new_topic()
    log = twin.open()
    log.producer().send_many(numbered(topic, range(40)))
    group = new_group()
    consumer = twin.consumer(log, group, [topic])
    got = drain(consumer, 40)
    by_partition: dict[TopicPartition, list[Event]] = collections.defaultdict(list)
    for e in got:
        by_partition[e.topic_partition].append(e)
    expected = {tp: len(by_partition[tp]) for tp in partitions_of(topic)}
    assert log.lag(group, [topic]) == expected
    tp, events = max(by_partition.items(), key=lambda item: len(item[1]))
    assert len(events) >= 3
    consumer.commit([events[2], events[0]])  # the position after the highest offset
    expected[tp] -= 3
    assert log.lag(group, [topic]) == expected
    consumer.commit([events[1]])  # an older offset does not move the position back
    assert log.lag(group, [topic]) == expected
    consumer.commit(got)
    assert log.lag(group, [topic]) == {tp: 0 for tp in partitions_of(topic)}
    assert log.lag(new_group(), [topic]) == {tp: len(by_partition[tp]) for tp in partitions_of(topic)}


def test_seek_to_committed_redelivers_uncommitted(twin):
    topic = new_topic()
    log = twin.open()
    log.producer().send_many(numbered(topic, range(40)))
    consumer = twin.consumer(log, new_group(), [topic])
    got = drain(consumer, 40)
    by_partition: dict[TopicPartition, list[Event]] = collections.defaultdict(list)
    for e in got:
        by_partition[e.topic_partition].append(e)
    uncommitted: dict[TopicPartition, list[Event]] = {}
    for tp, events in by_partition.items():
        half = len(events) // 2
        if half:
            consumer.commit(events[:half])
        uncommitted[tp] = events[half:]
    consumer.seek_to_committed()
    again = drain(consumer, sum(len(v) for v in uncommitted.values()))
    assert sorted(values(again)) == sorted(n for v in uncommitted.values() for n in values(v))
    assert nothing_more(consumer)
    tp = max(uncommitted, key=lambda t: len(uncommitted[t]))
    consumer.seek_to_committed([tp])  # only this partition
    assert values(drain(consumer, len(uncommitted[tp]))) == values(uncommitted[tp])
    assert nothing_more(consumer)


# Groups


def test_two_members_share_the_partitions_and_each_record_goes_to_one(twin):
    topic, group = new_topic(), new_group()
    first = twin.consumer(twin.open(), group, [topic])
    second = twin.consumer(twin.open(), group, [topic])
    members = [first, second]
    early = poll_until(members, split_between(members, topic), what="a split")
    assert not any(early.values())
    twin.open().producer().send_many(numbered(topic, range(200), keys=50))
    got = _collect(members, 200)
    all_values = values(got[0]) + values(got[1])
    assert sorted(all_values) == list(range(200))  # each exactly once
    for i, member in enumerate(members):
        assert got[i] and {e.topic_partition for e in got[i]} <= member.assignment()
    assert nothing_more(*members)


def _collect(members: list[EventConsumer], n: int, commit: bool = True) -> dict[int, list[Event]]:
    """Polls every member (committing what each gets, unless told not to) until n records came in all."""
    got: dict[int, list[Event]] = collections.defaultdict(list)
    deadline = time.monotonic() + DEADLINE_S
    while sum(len(v) for v in got.values()) < n:
        assert time.monotonic() < deadline, f"only {sum(len(v) for v in got.values())} of {n} came"
        for i, member in enumerate(members):
            batch = member.poll(timeout_s=POLL_S)
            if batch and commit:
                member.commit(batch)
            got[i] += batch
    return got


def test_a_closing_member_hands_its_partitions_over(twin):
    topic, group = new_topic(), new_group()
    calls = [Calls(), Calls()]
    pending: list[list[Event]] = [[], []]  # polled, not yet committed, per member
    members: list[EventConsumer] = []
    delivered: list[int] = []

    def on_revoked(i):
        def revoked(partitions: set[TopicPartition]) -> None:
            calls[i].revoked.append(partitions)
            # As a worker does: finish (commit) what it holds of the partitions it gives up.
            done = [e for e in pending[i] if e.topic_partition in partitions]
            if done:
                members[i].commit(done)
            pending[i] = [e for e in pending[i] if e.topic_partition not in partitions]
        return revoked

    def member(i: int) -> EventConsumer:
        return twin.consumer(twin.open(), group, [topic], on_assigned=calls[i].assigned.append,
                             on_revoked=on_revoked(i))

    members.append(member(0))
    poll_until(members, lambda: members[0].assignment() == partitions_of(topic), what="one member")
    assert calls[0].all_assigned() == partitions_of(topic)
    twin.open().producer().send_many(numbered(topic, range(40)))
    pending[0] = drain(members[0], 40)  # held, uncommitted, when the second member joins
    delivered += values(pending[0])

    members.append(member(1))
    during = poll_until(members, split_between(members, topic), commit=False, what="a split")
    for i in (0, 1):
        pending[i] += during[i]
        delivered += values(during[i])
    taken = members[1].assignment()
    assert calls[0].all_revoked() >= taken
    assert calls[1].all_assigned() >= taken
    for i in (0, 1):
        if pending[i]:
            members[i].commit(pending[i])
            pending[i] = []

    twin.open().producer().send_many(numbered(topic, range(40, 80)))
    got = _collect(members, 40)
    delivered += values(got[0]) + values(got[1])
    kept = members[0].assignment()

    revoked_before = len(calls[0].revoked)
    members[0].close()
    assert calls[0].all_revoked() >= kept and len(calls[0].revoked) > revoked_before
    closed_at = time.monotonic()
    poll_until(members[1:], lambda: members[1].assignment() == partitions_of(topic), what="the handover")
    assert time.monotonic() - closed_at < twin.session_timeout_s  # it left: no session timeout to wait out
    assert calls[1].all_assigned() == partitions_of(topic)
    twin.open().producer().send_many(numbered(topic, range(80, 100)))
    delivered += values(drain(members[1], 20, commit=True))
    assert nothing_more(members[1])
    assert sorted(delivered) == list(range(100))  # nothing lost, nothing twice


def test_a_commit_for_a_partition_no_longer_held_is_ignored(twin):
    topic, group = new_topic(), new_group()
    log = twin.open()
    first = twin.consumer(log, group, [topic])
    poll_until([first], lambda: first.assignment() == partitions_of(topic), what="one member")
    log.producer().send_many(numbered(topic, range(40)))
    polled = drain(first, 40)  # not committed before the rebalance
    second = twin.consumer(twin.open(), group, [topic])
    members = [first, second]
    during = poll_until(members, split_between(members, topic), commit=False, what="a split")
    taken = second.assignment()
    first.commit(polled)  # only the partitions it still holds count
    lag = log.lag(group, [topic])
    lost = collections.Counter(e.topic_partition for e in polled if e.topic_partition in taken)
    assert {tp: n for tp, n in lag.items() if n} == {tp: n for tp, n in lost.items() if n}
    # The second member gets those records (again), from the group's committed position.
    redelivered = during[1] + drain(second, sum(lost.values()) - len(during[1]), commit=True)
    assert sorted(values(redelivered)) == sorted(values([e for e in polled if e.topic_partition in taken]))


def test_a_member_that_stops_polling_loses_its_partitions(twin):
    topic, group = new_topic(), new_group()
    stalled_calls, calls = Calls(), Calls()
    max_poll_interval_ms = int(twin.session_timeout_s * 1000)  # the least Kafka takes
    stalled = twin.consumer(twin.open(max_poll_interval_ms=max_poll_interval_ms), group, [topic],
                            on_assigned=stalled_calls.assigned.append, on_revoked=stalled_calls.revoked.append)
    survivor = twin.consumer(twin.open(max_poll_interval_ms=max_poll_interval_ms), group, [topic],
                             on_assigned=calls.assigned.append, on_revoked=calls.revoked.append)
    members = [stalled, survivor]
    poll_until(members, split_between(members, topic), what="a split")
    first_held = stalled.assignment()
    twin.open().producer().send_many(numbered(topic, range(40)))
    # The stalled member polls its records but never commits them, then stops polling.
    seen = _collect(members, 40, commit=False)
    stalled_values = set(values(seen[0]))
    survivor.commit(seen[1])
    assert stalled_values  # it held partitions that had records
    # Only the survivor polls now: after max_poll_interval_ms it takes everything over.
    started = time.monotonic()
    again = poll_until([survivor], lambda: survivor.assignment() == partitions_of(topic),
                       what="the takeover")[0]
    assert time.monotonic() - started >= 0.5  # not handed over at once: it had to time out
    assert calls.all_assigned() == partitions_of(topic)
    # What the stalled member polled but never committed comes again.
    again += drain(survivor, len(stalled_values) - len(again), commit=True)
    assert set(values(again)) == stalled_values
    # Back to polling, it learns it lost them, then rejoins and gets a share again.
    poll_until(members, split_between(members, topic), what="the stalled member to rejoin")
    assert stalled_calls.all_revoked() >= first_held
    stalled.commit(seen[0])  # late, for partitions taken from it meanwhile: ignored
    assert sum(twin.open().lag(group, [topic]).values()) == 0


def test_a_live_member_busy_longer_than_the_session_timeout_keeps_its_partitions(twin):
    topic, group = new_topic(), new_group()
    busy = twin.consumer(twin.open(max_poll_interval_ms=120_000), group, [topic])
    other = twin.consumer(twin.open(max_poll_interval_ms=120_000), group, [topic])
    members = [busy, other]
    poll_until(members, split_between(members, topic), what="a split")
    held = busy.assignment()
    twin.open().producer().send_many(numbered(topic, range(40)))
    seen = _collect(members, 40, commit=False)
    other.commit(seen[1])
    assert seen[0]
    # A slow batch: the busy member does not poll for twice the session timeout.
    until = time.monotonic() + 2 * twin.session_timeout_s
    while time.monotonic() < until:
        assert not other.poll(timeout_s=POLL_S)
        assert other.assignment() == partitions_of(topic) - held
    busy.commit(seen[0])  # still its partitions: the commit counts
    assert sum(twin.open().lag(group, [topic]).values()) == 0
    assert busy.assignment() == held and nothing_more(*members)


def test_a_killed_member_process_loses_its_partitions(twin, tmp_path):
    topic, group = new_topic(), new_group()
    status = tmp_path / "member.json"
    proc = multiprocessing.get_context("spawn").Process(
        target=_member_until_killed, args=(twin.spec, group, topic, str(status)), daemon=True)
    proc.start()
    try:
        survivor = twin.consumer(twin.open(), group, [topic])

        def split() -> bool:
            theirs = _read_assignment(status)
            mine = {tp.partition for tp in survivor.assignment()}
            return bool(theirs) and bool(mine) and theirs.isdisjoint(mine) and len(theirs | mine) == PARTITIONS

        poll_until([survivor], split, what="a split with the child process")
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(DEADLINE_S)
        poll_until([survivor], lambda: survivor.assignment() == partitions_of(topic),
                   what="the takeover from the killed member")
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(DEADLINE_S)


def _read_assignment(path: Path) -> set[int]:
    try:
        return set(json.loads(path.read_text()))
    except (FileNotFoundError, ValueError):
        return set()


def _member_until_killed(spec: tuple, group: str, topic: str, status_path: str) -> None:
    """A group member in another process: polls and reports its partitions until killed."""
    consumer = open_log(spec).consumer(group, [topic])
    deadline = time.monotonic() + 2 * DEADLINE_S
    while time.monotonic() < deadline:
        consumer.poll(timeout_s=POLL_S)
        tmp = status_path + ".tmp"
        Path(tmp).write_text(json.dumps(sorted(tp.partition for tp in consumer.assignment())))
        os.replace(tmp, status_path)


# Broadcast and lag


def test_broadcast_hears_every_partition_from_its_creation_on(twin):
    topic = new_topic()
    log = twin.open()
    log.producer().send_many(numbered(topic, range(10)))  # before: never heard
    listeners = [twin.broadcast(log, [topic]), twin.broadcast(twin.open(), [topic])]
    twin.open().producer().send_many(numbered(topic, range(10, 50)))  # right away, before any poll
    for listener in listeners:
        got = drain(listener, 40)
        assert sorted(values(got)) == list(range(10, 50))
        assert listener.assignment() == partitions_of(topic)
        assert len({e.partition for e in got}) >= 2
        listener.commit(got)  # a no-op
        assert nothing_more(listener)
    # Broadcasts are no group: a group still starts at the beginning.
    assert len(drain(twin.consumer(log, new_group(), [topic]), 50)) == 50


def test_lag_per_partition(twin):
    topic, other = new_topic(), new_topic()
    log = twin.open()
    group = new_group()
    log.producer().send_many(numbered(topic, range(30)) + numbered(other, range(5)))
    consumer = twin.consumer(log, group, [topic, other])
    got = drain(consumer, 35)
    counts = collections.Counter(e.topic_partition for e in got)
    expected = {tp: counts[tp] for tp in partitions_of(topic) | partitions_of(other)}
    assert log.lag(group, [topic, other]) == expected
    assert log.lag(group, [other]) == {tp: counts[tp] for tp in partitions_of(other)}
    consumer.commit([e for e in got if e.topic == other])
    assert log.lag(group, [topic, other]) == {**expected, **{tp: 0 for tp in partitions_of(other)}}
    log.producer().send(other, "key-0", b"99")
    assert sum(log.lag(group, [other]).values()) == 1


# Retention and description


def test_prune_drops_only_old_records_every_group_committed(twin):
    topic, unread = new_topic(), new_topic()
    log = twin.open()
    log.producer().send_many([Record(topic, "one-key", str(i).encode()) for i in range(4)])
    log.producer().send(unread, "x", b"0")  # no group has committed on this topic
    fast, slow = new_group(), new_group()
    fast_member, slow_member = twin.consumer(log, fast, [topic]), twin.consumer(log, slow, [topic])
    fast_member.commit(drain(fast_member, 4))
    slow_member.commit(drain(slow_member, 2, max_records=2))
    slow_member.close()
    dropped = log.prune(utcnow() - dt.timedelta(hours=1))
    assert isinstance(dropped, int)
    if twin.prunes:
        assert dropped == 0  # nothing old enough
        assert log.prune(utcnow() + dt.timedelta(seconds=1)) == 2  # what both groups committed
    else:
        assert log.prune(utcnow() + dt.timedelta(seconds=1)) >= 0
    # What some group still needs stays readable.
    assert values(drain(twin.consumer(twin.open(), slow, [topic]), 2)) == [2, 3]
    assert values(drain(twin.consumer(log, new_group(), [unread]), 1)) == [0]
    if twin.prunes:
        assert sum(log.lag(new_group(), [topic]).values()) == 2  # a new group starts at what is left


def test_describe(twin):
    text = twin.open().describe()
    assert text
    if twin.kind == "embedded":
        assert "embedded" in text and "events.sqlite3" in text and f"{PARTITIONS} partitions" in text


def test_an_old_unpartitioned_file_fails_clearly(tmp_path):
    path = tmp_path / "events.sqlite3"
    with sqlite3.connect(path) as conn:  # the schema before partitions
        conn.executescript(
            'CREATE TABLE events ("offset" INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,'
            ' key TEXT NOT NULL, value TEXT NOT NULL, ts REAL NOT NULL);'
            'CREATE TABLE committed (grp TEXT NOT NULL, topic TEXT NOT NULL, "offset" INTEGER NOT NULL,'
            ' PRIMARY KEY (grp, topic));')
    conn.close()
    with pytest.raises(IncompatibleEventLogError, match="older photostore"):
        SqliteEventLog(path, EventsSettings())
