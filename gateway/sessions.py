"""Browser sessions: the page holds an opaque session token in an HttpOnly cookie, never the API key.

POST /api/v1/session checks an API key and creates a session; the cookie carries a random token
(256 bits). The record lives in a small SQLite file under data_dir, so every gunicorn worker
process of the gateway sees it (WAL mode, one connection per thread and process). A record holds:

- the sha256 of the token (the row id): the file alone never yields a usable cookie;
- the API key, encrypted (Fernet) under a key derived from the token, so the file alone never
  yields the key either; the gateway sends that key on to the services as it would a header's;
- the caller's user id and name, and its times.

A session ends when it is signed out (the row is deleted: revoked at once in every process), when
it has not been used for IDLE_SECONDS, or MAX_AGE_SECONDS after sign-in, whichever comes first.
Signing in again rotates it: the old token is deleted and a new one issued. Revoking the API key
itself ends its sessions too, since the services check the key on every call.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable

from cryptography.fernet import Fernet, InvalidToken

COOKIE = "photostore_session"
FILENAME = "gateway-sessions.sqlite3"
# A session unused this long is over; one is never kept longer than MAX_AGE_SECONDS.
IDLE_SECONDS = 12 * 3600
MAX_AGE_SECONDS = 7 * 24 * 3600
# last_seen is written at most this often per session (not on every request).
TOUCH_EVERY_SECONDS = 60
BUSY_TIMEOUT_S = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    display_name TEXT NOT NULL,
    sealed_key BLOB NOT NULL,
    created REAL NOT NULL,
    last_seen REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_last_seen ON sessions (last_seen);
"""


@dataclasses.dataclass(frozen=True)
class Session:
    user_id: str
    display_name: str
    api_key: str
    created: float
    last_seen: float
    expires: float


def _row_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _sealer(token: str) -> Fernet:
    key = hmac.new(token.encode(), b"photostore session: api key", hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(key))


class SessionStore:
    """Sessions in one SQLite file, shared by the processes that open the same path."""

    def __init__(self, path: Path, *, idle_seconds: float = IDLE_SECONDS,
                 max_age_seconds: float = MAX_AGE_SECONDS, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.idle_seconds = idle_seconds
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self._local = threading.local()

    def _db(self) -> sqlite3.Connection:
        """This thread's connection, opened after any fork."""
        db = getattr(self._local, "db", None)
        if db is None or self._local.pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            os.chmod(self.path, 0o600)
            self._local.db, self._local.pid = db, os.getpid()
        return db

    def _expires(self, created: float, last_seen: float) -> float:
        return min(created + self.max_age_seconds, last_seen + self.idle_seconds)

    def create(self, api_key: str, user_id: str, display_name: str = "", *, replaces: str = "") -> str:
        """A new session for the key's user; returns its token. `replaces` (the token the browser
        held, if any) is deleted in the same transaction: sign-in rotates the session."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        db = self._db()
        with db:
            db.execute("BEGIN IMMEDIATE")
            if replaces:
                db.execute("DELETE FROM sessions WHERE id = ?", (_row_id(replaces),))
            # Expired sessions go whenever a new one comes.
            db.execute("DELETE FROM sessions WHERE last_seen < ? OR created < ?",
                       (now - self.idle_seconds, now - self.max_age_seconds))
            db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?)",
                       (_row_id(token), user_id, display_name,
                        _sealer(token).encrypt(api_key.encode()), now, now))
        return token

    def get(self, token: str) -> Session | None:
        """The live session of a token (its idle time starts again), or None."""
        if not token:
            return None
        db = self._db()
        row = db.execute("SELECT user_id, display_name, sealed_key, created, last_seen FROM sessions "
                         "WHERE id = ?", (_row_id(token),)).fetchone()
        if row is None:
            return None
        user_id, display_name, sealed, created, last_seen = row
        now = self._clock()
        if now >= self._expires(created, last_seen):
            db.execute("DELETE FROM sessions WHERE id = ?", (_row_id(token),))
            return None
        try:
            api_key = _sealer(token).decrypt(sealed).decode()
        except InvalidToken:
            return None
        if now - last_seen >= TOUCH_EVERY_SECONDS:
            last_seen = now
            db.execute("UPDATE sessions SET last_seen = ? WHERE id = ?", (now, _row_id(token)))
        return Session(user_id=user_id, display_name=display_name, api_key=api_key, created=created,
                       last_seen=last_seen, expires=self._expires(created, last_seen))

    def delete(self, token: str) -> bool:
        """Ends a session; False when there was none."""
        if not token:
            return False
        return self._db().execute("DELETE FROM sessions WHERE id = ?", (_row_id(token),)).rowcount > 0

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None and self._local.pid == os.getpid():
            db.close()
        self._local.db = None
