"""In-process fan-out of photo changes to WatchPhotos streams."""
from __future__ import annotations

import queue
import threading
from typing import Collection

from photos.v1 import ingest_pb2
from photostore.errors import ServiceError, too_large, unavailable

# Changes a watcher may have pending before it counts as too slow and is dropped.
QUEUE_LIMIT = 1000


class Subscription:
    """One watcher's queue. Iterate with `next_change`; `close` ends it from any thread."""

    def __init__(self, hub: WatchHub, owner: str, photo_ids: frozenset[str]):
        self.owner = owner
        self.photo_ids = photo_ids  # empty: all of the owner's photos
        self.ended = False
        # Why the hub ended the stream, when it was not the client's doing.
        self.end_reason: ServiceError | None = None
        self._hub = hub
        self._changes: queue.Queue[ingest_pb2.WatchPhotosResponse | None] = queue.Queue()

    def wants(self, owner: str, photo_id: str) -> bool:
        return owner == self.owner and (not self.photo_ids or photo_id in self.photo_ids)

    def offer(self, change: ingest_pb2.WatchPhotosResponse) -> None:
        if self._changes.qsize() >= QUEUE_LIMIT:
            self.close(too_large("watcher fell behind; watch again with send_initial",
                                 reason="WATCHER_TOO_SLOW"))
        else:
            self._changes.put(change)

    def next_change(self, timeout_s: float) -> ingest_pb2.WatchPhotosResponse | None:
        """The next change; None after timeout_s or once closed."""
        try:
            return self._changes.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def close(self, reason: ServiceError | None = None) -> None:
        if self._hub.remove(self):
            self.end_reason = reason
            self.ended = True
            self._changes.put(None)  # wakes a waiting next_change

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class WatchHub:
    def __init__(self):
        self._subs: set[Subscription] = set()
        self._lock = threading.Lock()
        self._closed = False

    def subscribe(self, owner: str, photo_ids: Collection[str] = ()) -> Subscription:
        sub = Subscription(self, owner, frozenset(photo_ids))
        with self._lock:
            if self._closed:
                raise unavailable("the server is shutting down")
            self._subs.add(sub)
        return sub

    def subscriptions(self) -> set[Subscription]:
        with self._lock:
            return set(self._subs)

    def remove(self, sub: Subscription) -> bool:
        with self._lock:
            if sub not in self._subs:
                return False
            self._subs.remove(sub)
            return True

    def publish(self, owner: str, photo_id: str, change: ingest_pb2.WatchPhotosResponse) -> None:
        for sub in self.subscriptions():
            if sub.wants(owner, photo_id):
                sub.offer(change)

    def close(self) -> None:
        """Ends every stream and refuses new ones (server shutdown)."""
        with self._lock:
            self._closed = True
        for sub in self.subscriptions():
            sub.close(unavailable("the server is shutting down"))
