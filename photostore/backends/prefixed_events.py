"""An EventLog whose topics and consumer groups carry a prefix (PHOTOSTORE_EVENTS__TOPIC_PREFIX), so
several deployments share one Kafka cluster without seeing each other's records. Callers keep using
the plain names; events and partitions come back under them."""
from __future__ import annotations

import datetime as dt
import dataclasses
from typing import Iterable, Sequence

from photostore.backends.base import (Event, EventConsumer, EventLog, EventProducer, RebalanceCallback,
                                      Record, TopicPartition)


class _Names:
    def __init__(self, prefix: str):
        self.prefix = prefix

    def outer(self, name: str) -> str:
        return self.prefix + name

    def inner(self, name: str) -> str:
        return name.removeprefix(self.prefix)

    def outer_tp(self, tp: TopicPartition) -> TopicPartition:
        return TopicPartition(self.outer(tp.topic), tp.partition)

    def inner_tps(self, tps: Iterable[TopicPartition]) -> set[TopicPartition]:
        return {TopicPartition(self.inner(tp.topic), tp.partition) for tp in tps}

    def callback(self, callback: RebalanceCallback | None) -> RebalanceCallback | None:
        if callback is None:
            return None
        return lambda partitions: callback(self.inner_tps(partitions))


class _Producer(EventProducer):
    def __init__(self, inner: EventProducer, names: _Names):
        self._inner, self._names = inner, names

    def send_many(self, records: Sequence[Record]) -> None:
        self._inner.send_many([dataclasses.replace(r, topic=self._names.outer(r.topic)) for r in records])

    def close(self) -> None:
        self._inner.close()


class _Consumer(EventConsumer):
    def __init__(self, inner: EventConsumer, names: _Names):
        self._inner, self._names = inner, names

    def poll(self, max_records: int = 100, timeout_s: float = 1.0) -> list[Event]:
        return [dataclasses.replace(e, topic=self._names.inner(e.topic))
                for e in self._inner.poll(max_records, timeout_s)]

    def commit(self, events: Sequence[Event]) -> None:
        self._inner.commit([dataclasses.replace(e, topic=self._names.outer(e.topic)) for e in events])

    def seek_to_committed(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        self._inner.seek_to_committed(
            None if partitions is None else [self._names.outer_tp(tp) for tp in partitions])

    def assignment(self) -> set[TopicPartition]:
        return self._names.inner_tps(self._inner.assignment())

    def close(self) -> None:
        self._inner.close()


class PrefixedEventLog(EventLog):
    def __init__(self, inner: EventLog, prefix: str):
        self._inner = inner
        self._names = _Names(prefix)

    def producer(self) -> EventProducer:
        return _Producer(self._inner.producer(), self._names)

    def consumer(self, group: str, topics: Sequence[str], *,
                 on_assigned: RebalanceCallback | None = None,
                 on_revoked: RebalanceCallback | None = None) -> EventConsumer:
        return _Consumer(self._inner.consumer(
            self._names.outer(group), [self._names.outer(t) for t in topics],
            on_assigned=self._names.callback(on_assigned), on_revoked=self._names.callback(on_revoked)),
            self._names)

    def broadcast(self, topics: Sequence[str]) -> EventConsumer:
        return _Consumer(self._inner.broadcast([self._names.outer(t) for t in topics]), self._names)

    def lag(self, group: str, topics: Sequence[str]) -> dict[TopicPartition, int]:
        lag = self._inner.lag(self._names.outer(group), [self._names.outer(t) for t in topics])
        return {TopicPartition(self._names.inner(tp.topic), tp.partition): n for tp, n in lag.items()}

    def prune(self, older_than: dt.datetime) -> int:
        return self._inner.prune(older_than)

    def describe(self) -> str:
        return f"{self._inner.describe()}, topics and groups prefixed {self._names.prefix!r}"

    def close(self) -> None:
        self._inner.close()
