"""A durable local event log in SQLite with Kafka's model: topics of partitions, per-partition
offsets, consumer groups whose live members share the partitions, broadcast readers.

Several processes may use one file. As in Kafka, a group member heartbeats from a background
thread, so one whose process is gone is dead after `session_timeout_ms`, and a live one that has
not polled for `max_poll_interval_ms` (a stuck batch) is dropped too. Every member computes the
same assignment from the live members (in join order) and takes a partition only once its
previous owner has released it (after its on_revoked ran) or was dropped, so two members never
read one partition at the same time, and only the owner's commits count.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import uuid
import weakref
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

from photostore.backends.base import (Event, EventConsumer, EventLog, EventProducer, Record,
                                      RebalanceCallback, TopicPartition)
from photostore.backends.sqlite_util import SqliteDatabase
from photostore.settings import EventsSettings

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
SCHEMA = """
CREATE TABLE IF NOT EXISTS event_topics (topic TEXT PRIMARY KEY, partitions INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS event_log_ends (
  topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
  PRIMARY KEY (topic, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS event_records (
  topic TEXT NOT NULL, partition INTEGER NOT NULL, "offset" INTEGER NOT NULL,
  key TEXT NOT NULL, value BLOB NOT NULL, ts REAL NOT NULL,
  PRIMARY KEY (topic, partition, "offset")) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_offsets (
  grp TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL, position INTEGER NOT NULL,
  PRIMARY KEY (grp, topic, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_members (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, grp TEXT NOT NULL, member_id TEXT NOT NULL UNIQUE,
  topics TEXT NOT NULL, heartbeat REAL NOT NULL, polled REAL NOT NULL);
CREATE INDEX IF NOT EXISTS group_members_by_group ON group_members (grp, seq);
CREATE TABLE IF NOT EXISTS group_owners (
  grp TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL, member_id TEXT NOT NULL,
  PRIMARY KEY (grp, topic, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_generations (grp TEXT PRIMARY KEY, generation INTEGER NOT NULL);
"""
# Tables of the unpartitioned log (schema 1).
LEGACY_TABLES = ("events", "committed")
POLL_INTERVAL_S = 0.05
MAX_HEARTBEAT_INTERVAL_S = 1.0


class IncompatibleEventLogError(RuntimeError):
    """The file was written by an older, unpartitioned event log."""


def partition_for(key: str, partitions: int) -> int:
    """Stable across processes and runs (unlike hash())."""
    return zlib.crc32(key.encode()) % partitions


def _open(path: Path) -> SqliteDatabase:
    db = SqliteDatabase(path, "")
    conn = db.connection()
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if tables & set(LEGACY_TABLES) or (version and version != SCHEMA_VERSION):
        raise IncompatibleEventLogError(
            f"{path} was written by an older photostore (event log schema {version or 1}, this one"
            f" needs {SCHEMA_VERSION}, with partitions and consumer groups); move the file aside and"
            " start again")
    conn.executescript(SCHEMA)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return db


class _Topics:
    """Partition counts, fixed when a topic is first used (as Kafka's auto-created topics)."""

    def __init__(self, db: SqliteDatabase, default_partitions: int):
        self._db = db
        self._default = default_partitions
        self._known: dict[str, int] = {}

    def partitions(self, topic: str, create: bool = True) -> int:
        if topic not in self._known:
            if create:
                with self._db.transaction() as conn:
                    conn.execute("INSERT OR IGNORE INTO event_topics (topic, partitions) VALUES (?, ?)",
                                 (topic, self._default))
            rows = self._db.query("SELECT partitions FROM event_topics WHERE topic = ?", (topic,))
            if not rows:
                return self._default
            self._known[topic] = rows[0][0]
        return self._known[topic]

    def topic_partitions(self, topics: Iterable[str], create: bool = True) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t in sorted(set(topics))
                for p in range(self.partitions(t, create))]


class SqliteEventProducer(EventProducer):
    def __init__(self, db: SqliteDatabase, topics: _Topics):
        self._db = db
        self._topics = topics

    def send_many(self, records: Sequence[Record]) -> None:
        if not records:
            return
        placed = [(r, partition_for(r.key, self._topics.partitions(r.topic))) for r in records]
        now = time.time()
        with self._db.transaction() as conn:  # one transaction, one fsync
            ends: dict[tuple[str, int], int] = {}
            rows = []
            for record, partition in placed:
                tp = (record.topic, partition)
                if tp not in ends:
                    found = conn.execute("SELECT next_offset FROM event_log_ends WHERE topic = ? AND"
                                         " partition = ?", tp).fetchone()
                    ends[tp] = found[0] if found else 0
                rows.append((record.topic, partition, ends[tp], record.key, bytes(record.value), now))
                ends[tp] += 1
            conn.executemany('INSERT INTO event_records (topic, partition, "offset", key, value, ts)'
                             ' VALUES (?, ?, ?, ?, ?, ?)', rows)
            conn.executemany("INSERT INTO event_log_ends (topic, partition, next_offset) VALUES (?, ?, ?)"
                             " ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
                             [(t, p, end) for (t, p), end in ends.items()])


def _event(row) -> Event:
    return Event(topic=row["topic"], partition=row["partition"], offset=row["offset"], key=row["key"],
                 value=bytes(row["value"]), timestamp=dt.datetime.fromtimestamp(row["ts"], dt.timezone.utc))


class _Reader(EventConsumer):
    """Reads assigned partitions from local positions, round robin across partitions."""

    def __init__(self, db: SqliteDatabase):
        self._db = db
        self._positions: dict[TopicPartition, int] = {}  # next offset to read
        self._next_first = 0  # rotates which partition is served first
        self._closed = False

    def assignment(self) -> set[TopicPartition]:
        return set(self._positions)

    def _before_fetch(self) -> None:
        pass

    def poll(self, max_records: int = 100, timeout_s: float = 1.0) -> list[Event]:
        if self._closed:
            raise RuntimeError("poll on a closed consumer")
        deadline = time.monotonic() + max(timeout_s, 0.0)
        while True:
            self._before_fetch()
            events = self._fetch(max_records)
            remaining = deadline - time.monotonic()
            if events or remaining <= 0:
                return events
            time.sleep(min(POLL_INTERVAL_S, remaining))

    def _fetch(self, max_records: int) -> list[Event]:
        if max_records <= 0 or not self._positions:
            return []
        order = sorted(self._positions)
        start = self._next_first % len(order)
        order = order[start:] + order[:start]
        self._next_first += 1
        conn = self._db.connection()
        per_partition = []
        conn.execute("BEGIN")  # one snapshot for all partitions
        try:
            for tp in order:
                rows = conn.execute('SELECT * FROM event_records WHERE topic = ? AND partition = ?'
                                    ' AND "offset" >= ? ORDER BY "offset" LIMIT ?',
                                    (tp.topic, tp.partition, self._positions[tp], max_records)).fetchall()
                if rows:
                    per_partition.append(rows)
        finally:
            conn.execute("COMMIT")
        events: list[Event] = []
        depth = 0
        while len(events) < max_records and any(depth < len(rows) for rows in per_partition):
            for rows in per_partition:
                if depth < len(rows) and len(events) < max_records:
                    events.append(_event(rows[depth]))
            depth += 1
        for e in events:
            self._positions[e.topic_partition] = e.offset + 1
        return events

    def close(self) -> None:
        self._closed = True


class SqliteBroadcastConsumer(_Reader):
    """Every partition from the end it had when created; no group, no commits."""

    def __init__(self, db: SqliteDatabase, topics: _Topics, subscribed: Sequence[str]):
        super().__init__(db)
        tps = topics.topic_partitions(subscribed)
        ends = {TopicPartition(r["topic"], r["partition"]): r["next_offset"]
                for r in db.query("SELECT * FROM event_log_ends")}
        self._positions = {tp: ends.get(tp, 0) for tp in tps}

    def commit(self, events: Sequence[Event]) -> None:
        pass

    def seek_to_committed(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        pass


class SqliteGroupConsumer(_Reader):
    """One member of a consumer group (see the module docstring for the protocol)."""

    def __init__(self, db: SqliteDatabase, topics: _Topics, settings: EventsSettings, group: str,
                 subscribed: Sequence[str], on_assigned: RebalanceCallback | None,
                 on_revoked: RebalanceCallback | None):
        super().__init__(db)
        self._topics = topics
        self._group = group
        self._subscribed = sorted(set(subscribed))
        for topic in self._subscribed:
            topics.partitions(topic)
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        self._member_id = uuid.uuid4().hex
        self._session_s = settings.session_timeout_ms / 1000
        self._max_poll_interval_s = max(settings.max_poll_interval_ms / 1000, self._session_s)
        self._heartbeat_interval_s = min(self._session_s / 4, MAX_HEARTBEAT_INTERVAL_S)
        self._next_heartbeat = 0.0  # monotonic; 0: rebalance on the first poll
        self._generation: int | None = None
        self._stop_heartbeats = threading.Event()
        weakref.finalize(self, self._stop_heartbeats.set)  # dropped without close()
        self._heartbeats: threading.Thread | None = None

    def _start_heartbeats(self) -> None:
        if self._heartbeats is None:
            self._heartbeats = threading.Thread(
                target=_heartbeat, name=f"event-log-heartbeat-{self._group}", daemon=True,
                args=(self._db.path, self._member_id, self._heartbeat_interval_s, self._stop_heartbeats))
            self._heartbeats.start()

    # Membership

    def _before_fetch(self) -> None:
        if time.monotonic() >= self._next_heartbeat or self._read_generation() != self._generation:
            self._rebalance()

    def _read_generation(self) -> int | None:
        rows = self._db.query("SELECT generation FROM group_generations WHERE grp = ?", (self._group,))
        return rows[0][0] if rows else None

    @staticmethod
    def _bump_generation(conn, group: str) -> None:
        conn.execute("INSERT INTO group_generations (grp, generation) VALUES (?, 1) ON CONFLICT (grp)"
                     " DO UPDATE SET generation = generation + 1", (group,))

    def _target(self, conn) -> set[TopicPartition]:
        """This member's share: the group's partitions dealt round robin to the live members (in
        join order) that subscribe to each topic."""
        members = conn.execute("SELECT member_id, topics FROM group_members WHERE grp = ? ORDER BY seq",
                               (self._group,)).fetchall()
        subscribers: dict[str, list[str]] = defaultdict(list)
        for row in members:
            for topic in json.loads(row["topics"]):
                subscribers[topic].append(row["member_id"])
        mine = set()
        dealt = 0
        for tp in self._topics.topic_partitions(subscribers, create=False):  # inside a transaction
            candidates = subscribers[tp.topic]
            if candidates[dealt % len(candidates)] == self._member_id:
                mine.add(tp)
            dealt += 1
        return mine

    def _rebalance(self) -> None:
        group, me = self._group, self._member_id
        with self._db.transaction() as conn:
            now = time.time()
            alive = conn.execute("UPDATE group_members SET heartbeat = ?, polled = ? WHERE member_id = ?",
                                 (now, now, me)).rowcount
            if not alive:  # first poll, or dropped by another member
                conn.execute("INSERT INTO group_members (grp, member_id, topics, heartbeat, polled)"
                             " VALUES (?, ?, ?, ?, ?)", (group, me, json.dumps(self._subscribed), now, now))
                self._bump_generation(conn, group)
            if conn.execute("DELETE FROM group_members WHERE grp = ? AND (heartbeat < ? OR polled < ?)",
                            (group, now - self._session_s, now - self._max_poll_interval_s)).rowcount:
                self._bump_generation(conn, group)
            conn.execute("DELETE FROM group_owners WHERE grp = ? AND member_id NOT IN"
                         " (SELECT member_id FROM group_members WHERE grp = ?)", (group, group))
            target = self._target(conn)
            owned = self._owned(conn)
            self._generation = self._read_generation()
        self._start_heartbeats()
        self._next_heartbeat = time.monotonic() + self._heartbeat_interval_s
        held = set(self._positions)
        lost = held - owned  # taken over while this member was dropped from the group
        if lost:
            log.warning("event log group %s: partitions %s were taken over (this member had not"
                        " polled for max_poll_interval_ms, or had missed its session timeout)",
                        group, _names(lost))
        to_release = owned - target
        if revoked := lost | (to_release & held):
            self._call(self._on_revoked, revoked)
        for tp in revoked:
            self._positions.pop(tp, None)
        if not (to_release or target - owned or owned - set(self._positions)):
            return  # a plain heartbeat
        with self._db.transaction() as conn:
            if to_release:
                conn.executemany("DELETE FROM group_owners WHERE grp = ? AND topic = ? AND partition = ?"
                                 " AND member_id = ?", [(group, tp.topic, tp.partition, me) for tp in to_release])
                self._bump_generation(conn, group)
            if wanted := target - owned:
                conn.executemany("INSERT OR IGNORE INTO group_owners (grp, topic, partition, member_id)"
                                 " VALUES (?, ?, ?, ?)", [(group, tp.topic, tp.partition, me) for tp in wanted])
            owned = self._owned(conn)
            committed = self._committed(conn)
            self._generation = self._read_generation()
        gained = owned - set(self._positions)
        for tp in gained:
            self._positions[tp] = committed.get(tp, 0)
        if gained:
            self._call(self._on_assigned, gained)

    def _owned(self, conn) -> set[TopicPartition]:
        return {TopicPartition(r["topic"], r["partition"]) for r in conn.execute(
            "SELECT topic, partition FROM group_owners WHERE grp = ? AND member_id = ?",
            (self._group, self._member_id))}

    def _committed(self, conn) -> dict[TopicPartition, int]:
        return {TopicPartition(r["topic"], r["partition"]): r["position"] for r in conn.execute(
            "SELECT topic, partition, position FROM group_offsets WHERE grp = ?", (self._group,))}

    @staticmethod
    def _call(callback: RebalanceCallback | None, partitions: set[TopicPartition]) -> None:
        if callback is not None:
            callback(set(partitions))

    # Positions

    def commit(self, events: Sequence[Event]) -> None:
        highest: dict[TopicPartition, int] = {}
        for e in events:
            highest[e.topic_partition] = max(highest.get(e.topic_partition, -1), e.offset)
        if not highest:
            return
        with self._db.transaction() as conn:
            owned = self._owned(conn)
            conn.executemany(
                "INSERT INTO group_offsets (grp, topic, partition, position) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (grp, topic, partition) DO UPDATE SET position = max(position, excluded.position)",
                [(self._group, tp.topic, tp.partition, offset + 1) for tp, offset in highest.items()
                 if tp in owned])
        if fenced := set(highest) - owned:
            log.warning("event log group %s: commit for %s ignored: no longer assigned to this member",
                        self._group, _names(fenced))

    def seek_to_committed(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        chosen = set(self._positions) if partitions is None else set(partitions) & set(self._positions)
        if not chosen:
            return
        committed = self._committed(self._db.connection())
        for tp in chosen:
            self._positions[tp] = committed.get(tp, 0)

    def close(self) -> None:
        """Leaves the group at once: the others take over at their next poll."""
        if self._closed:
            return
        self._closed = True
        self._stop_heartbeats.set()
        try:
            if self._positions:
                self._call(self._on_revoked, set(self._positions))
        finally:
            self._positions.clear()
            with self._db.transaction() as conn:
                conn.execute("DELETE FROM group_owners WHERE grp = ? AND member_id = ?",
                             (self._group, self._member_id))
                if conn.execute("DELETE FROM group_members WHERE member_id = ?", (self._member_id,)).rowcount:
                    self._bump_generation(conn, self._group)


def _heartbeat(path: Path, member_id: str, interval_s: float, stop: threading.Event) -> None:
    """Keeps a member alive while its process runs (its polls are tracked apart)."""
    db = SqliteDatabase(path, "")
    db.connection().execute("PRAGMA synchronous=NORMAL")  # a heartbeat lost in a crash does not matter
    while not stop.wait(interval_s):
        try:
            with db.transaction() as conn:
                conn.execute("UPDATE group_members SET heartbeat = ? WHERE member_id = ?", (time.time(), member_id))
        except Exception:  # noqa: BLE001 - the next beat tries again; polls heartbeat too
            log.exception("event log heartbeat failed")
    db.connection().close()


def _names(partitions: Iterable[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions))


class SqliteEventLog(EventLog):
    def __init__(self, path: Path, settings: EventsSettings | None = None):
        self.path = Path(path)
        self.settings = settings or EventsSettings()
        self.db = _open(self.path)
        self._topics = _Topics(self.db, self.settings.partitions)

    def producer(self) -> EventProducer:
        return SqliteEventProducer(self.db, self._topics)

    def consumer(self, group: str, topics: Sequence[str], *,
                 on_assigned: RebalanceCallback | None = None,
                 on_revoked: RebalanceCallback | None = None) -> EventConsumer:
        return SqliteGroupConsumer(self.db, self._topics, self.settings, group, topics,
                                   on_assigned, on_revoked)

    def broadcast(self, topics: Sequence[str]) -> EventConsumer:
        return SqliteBroadcastConsumer(self.db, self._topics, topics)

    def lag(self, group: str, topics: Sequence[str]) -> dict[TopicPartition, int]:
        tps = self._topics.topic_partitions(topics, create=False)
        conn = self.db.connection()
        lags = {}
        conn.execute("BEGIN")  # one snapshot
        try:
            for tp in tps:
                key = (tp.topic, tp.partition)
                end = conn.execute("SELECT next_offset FROM event_log_ends WHERE topic = ? AND partition = ?",
                                   key).fetchone()
                first = conn.execute('SELECT min("offset") FROM event_records WHERE topic = ? AND partition = ?',
                                     key).fetchone()[0]
                committed = conn.execute("SELECT position FROM group_offsets WHERE grp = ? AND topic = ?"
                                         " AND partition = ?", (group, *key)).fetchone()
                end = end[0] if end else 0
                start = max(end if first is None else first, committed[0] if committed else 0)
                lags[tp] = max(0, end - start)
        finally:
            conn.execute("COMMIT")
        return lags

    def prune(self, older_than: dt.datetime) -> int:
        """Per partition, drops records older than `older_than` before the lowest position of the
        groups that committed on the topic; topics no group has committed on keep everything."""
        dropped = 0
        with self.db.transaction() as conn:
            positions: dict[str, dict[str, dict[int, int]]] = defaultdict(lambda: defaultdict(dict))
            for r in conn.execute("SELECT grp, topic, partition, position FROM group_offsets"):
                positions[r["topic"]][r["grp"]][r["partition"]] = r["position"]
            for topic, by_group in positions.items():
                for partition in range(self._topics.partitions(topic, create=False)):
                    floor = min(committed.get(partition, 0) for committed in by_group.values())
                    if floor > 0:
                        dropped += conn.execute(
                            'DELETE FROM event_records WHERE topic = ? AND partition = ? AND "offset" < ?'
                            " AND ts < ?", (topic, partition, floor, older_than.timestamp())).rowcount
        return dropped

    def describe(self) -> str:
        return f"embedded event log at {self.path} ({self.settings.partitions} partitions)"
