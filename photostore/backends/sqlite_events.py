"""A durable local event log in SQLite: append-only records, committed positions per consumer group.

Delivery is at least once, as with Kafka: a consumer reads after its group's committed position,
and whatever it polled but did not commit is delivered again after a restart or a rewind.
One consumer per group is expected (there are no partitions to share out).
"""
from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any, Sequence

from photostore.backends.base import Event, EventConsumer, EventLog, EventProducer
from photostore.backends.sqlite_util import SqliteDatabase

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
  "offset" INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, key TEXT NOT NULL,
  value TEXT NOT NULL, ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS events_by_topic ON events (topic, "offset");
CREATE TABLE IF NOT EXISTS committed (
  grp TEXT NOT NULL, topic TEXT NOT NULL, "offset" INTEGER NOT NULL, PRIMARY KEY (grp, topic));
"""
POLL_INTERVAL_S = 0.05


class SqliteEventProducer(EventProducer):
    def __init__(self, db: SqliteDatabase):
        self._db = db

    def send(self, topic: str, key: str, value: dict[str, Any]) -> int:
        with self._db.transaction() as conn:
            cur = conn.execute('INSERT INTO events (topic, key, value, ts) VALUES (?, ?, ?, ?)',
                               (topic, key, json.dumps(value), time.time()))
            return cur.lastrowid


class SqliteEventConsumer(EventConsumer):
    def __init__(self, db: SqliteDatabase, group: str, topics: Sequence[str]):
        self._db = db
        self._group = group
        self._topics = list(topics)
        self._position: dict[str, int] = {}
        self.rewind_to_committed()

    def _committed(self) -> dict[str, int]:
        rows = self._db.query('SELECT topic, "offset" FROM committed WHERE grp = ?', (self._group,))
        found = {r["topic"]: r["offset"] for r in rows}
        return {t: found.get(t, 0) for t in self._topics}

    def rewind_to_committed(self) -> None:
        self._position = self._committed()

    def poll(self, max_records: int = 100, timeout_s: float = 1.0) -> list[Event]:
        deadline = time.monotonic() + timeout_s
        clauses = " OR ".join('(topic = ? AND "offset" > ?)' for _ in self._topics)
        while True:
            params = [p for t in self._topics for p in (t, self._position[t])]
            rows = self._db.query(f'SELECT * FROM events WHERE {clauses} ORDER BY "offset" LIMIT ?',
                                  (*params, max_records))
            if rows or time.monotonic() >= deadline:
                break
            time.sleep(POLL_INTERVAL_S)
        events = [Event(topic=r["topic"], offset=r["offset"], key=r["key"],
                        value=json.loads(r["value"]),
                        timestamp=dt.datetime.fromtimestamp(r["ts"], dt.timezone.utc)) for r in rows]
        for e in events:
            self._position[e.topic] = max(self._position[e.topic], e.offset)
        return events

    def commit(self, events: Sequence[Event]) -> None:
        highest: dict[str, int] = {}
        for e in events:
            highest[e.topic] = max(highest.get(e.topic, 0), e.offset)
        if not highest:
            return
        with self._db.transaction() as conn:
            for topic, offset in highest.items():
                conn.execute('INSERT INTO committed (grp, topic, "offset") VALUES (?, ?, ?)'
                             ' ON CONFLICT (grp, topic) DO UPDATE'
                             ' SET "offset" = max("offset", excluded."offset")',
                             (self._group, topic, offset))

    def lag(self) -> int:
        committed = self._committed()
        return sum(self._db.query('SELECT count(*) FROM events WHERE topic = ? AND "offset" > ?',
                                  (t, committed[t]))[0][0] for t in self._topics)


class SqliteEventLog(EventLog):
    def __init__(self, path: Path):
        self.db = SqliteDatabase(path, SCHEMA)

    def producer(self) -> EventProducer:
        return SqliteEventProducer(self.db)

    def consumer(self, group: str, topics: Sequence[str]) -> EventConsumer:
        return SqliteEventConsumer(self.db, group, topics)

    def prune(self, older_than: dt.datetime) -> int:
        with self.db.transaction() as conn:
            return conn.execute(
                'DELETE FROM events WHERE ts < ? AND "offset" <= coalesce('
                ' (SELECT min(c."offset") FROM committed c WHERE c.topic = events.topic), 0)',
                (older_than.timestamp(),)).rowcount
