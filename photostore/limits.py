"""Limits that keep one caller from starving the others: concurrent streams per user and in all,
client streams that go quiet, and the pixels decoded at once."""
from __future__ import annotations

import collections
import contextlib
import functools
import logging
import threading
import time
from typing import Iterator, TypeVar

import grpc

from photostore.errors import ServiceError
from photostore.image_scale import LARGE_IMAGE_PIXELS
from photostore.memory import release_memory

log = logging.getLogger(__name__)

T = TypeVar("T")


def quota_exceeded(message: str, subject: str, reason: str, limit: int) -> ServiceError:
    """RESOURCE_EXHAUSTED with a QuotaFailure naming who is over which limit."""
    return ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, message, field=subject, reason=reason,
                        metadata={"limit": str(limit)})


class StreamSlots:
    """At most `per_user` streams of one kind per user and `total` in all; beyond either the
    call fails at once with RESOURCE_EXHAUSTED instead of holding a server thread."""

    def __init__(self, kind: str, *, per_user: int, total: int, reason: str):
        self.kind = kind
        self.reason = reason
        self.per_user = per_user
        self.total = total
        self._held: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, user_id: str) -> Iterator[None]:
        with self._lock:
            if sum(self._held.values()) >= self.total:
                raise quota_exceeded(
                    f"the server is serving its limit of {self.total} {self.kind} streams; "
                    "try again shortly", subject="server", reason=self.reason,
                    limit=self.total)
            if self._held[user_id] >= self.per_user:
                raise quota_exceeded(
                    f"at most {self.per_user} {self.kind} streams at once per user; "
                    "wait for one to finish", subject=f"users/{user_id}",
                    reason=f"{self.reason}_PER_USER", limit=self.per_user)
            self._held[user_id] += 1
        try:
            yield
        finally:
            with self._lock:
                self._held[user_id] -= 1
                if not self._held[user_id]:
                    del self._held[user_id]

    def held(self, user_id: str | None = None) -> int:
        with self._lock:
            return self._held[user_id] if user_id is not None else sum(self._held.values())


class _Watched:
    __slots__ = ("context", "last", "what")

    def __init__(self, context: grpc.ServicerContext, what: str):
        self.context = context
        self.what = what
        self.last = time.monotonic()


class IdleStreams:
    """Cancels client streams that send nothing for `idle_s` (one thread watches them all), so a
    stalled or hostile client does not hold a server thread. The client sees CANCELLED: a server
    cannot send a status to a call its handler is still reading."""

    def __init__(self, idle_s: float):
        self.idle_s = idle_s
        self._streams: set[_Watched] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idle-streams", daemon=True)
        self._thread.start()

    def guard(self, requests: Iterator[T], context: grpc.ServicerContext, what: str) -> Iterator[T]:
        """`requests`, with the stream cancelled once no message came for idle_s."""
        watched = _Watched(context, what)
        with self._lock:
            self._streams.add(watched)
        try:
            for request in requests:
                watched.last = time.monotonic()
                yield request
        finally:
            with self._lock:
                self._streams.discard(watched)

    def _run(self) -> None:
        while not self._stopped.wait(min(1.0, self.idle_s / 4)):
            now = time.monotonic()
            with self._lock:
                expired = [w for w in self._streams if now - w.last > self.idle_s]
                self._streams.difference_update(expired)
            for watched in expired:
                log.warning("%s from %s sent nothing for %.0f s; cancelled", watched.what,
                            watched.context.peer(), self.idle_s)
                watched.context.cancel()

    def close(self) -> None:
        self._stopped.set()
        self._thread.join()


class PixelBudget:
    """Bounds the pixels decoded at once in a process: a decode waits until its pixels fit (an
    image larger than the whole budget waits to decode alone). After a large decode the freed
    heap goes back to the system, so the process does not idle at its peak."""

    def __init__(self, pixels: int, release_above: int = LARGE_IMAGE_PIXELS):
        self.pixels = pixels
        self._release_above = release_above
        self._in_use = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def decoding(self, width: int, height: int) -> Iterator[None]:
        need = min(width * height, self.pixels)
        with self._cond:
            self._cond.wait_for(lambda: self._in_use + need <= self.pixels)
            self._in_use += need
        try:
            yield
        finally:
            with self._cond:
                self._in_use -= need
                self._cond.notify_all()
            if need >= self._release_above:
                release_memory()


@functools.cache
def decode_budget() -> PixelBudget:
    """This process's budget (PHOTOSTORE_DECODE_BUDGET_PIXELS)."""
    from photostore.settings import get_settings
    return PixelBudget(get_settings().decode_budget_pixels)
