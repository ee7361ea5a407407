"""Users, their API key hashes and session token hashes in SQLite: the embedded twin of MongoUserStore."""
from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import uuid
from pathlib import Path

from photostore.backends.base import (SESSION_IDLE_SECONDS, SESSION_MAX_AGE_SECONDS, SESSION_TOUCH_SECONDS,
                                      SessionRecord, User, UserStore, utcnow)
from photostore.backends.sqlite_util import SqliteDatabase

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
  key_hash TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id));
CREATE TABLE IF NOT EXISTS sessions (
  token_hash TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id),
  created_at REAL NOT NULL, last_seen REAL NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_last_seen ON sessions (last_seen);
CREATE INDEX IF NOT EXISTS sessions_created_at ON sessions (created_at);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_id);
"""


def _time(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


def _user(row: sqlite3.Row | None) -> User | None:
    if row is None:
        return None
    return User(id=row["id"], name=row["name"], created_at=_time(row["created_at"]))


class SqliteUserStore(UserStore):
    def __init__(self, path: Path, legacy_metadata_path: Path | None = None, *,
                 session_idle_s: float = SESSION_IDLE_SECONDS,
                 session_max_age_s: float = SESSION_MAX_AGE_SECONDS):
        self.session_idle_s, self.session_max_age_s = session_idle_s, session_max_age_s
        self.db = SqliteDatabase(path, SCHEMA)
        if legacy_metadata_path is not None:
            self._adopt_legacy_users(Path(legacy_metadata_path))

    def _adopt_legacy_users(self, legacy: Path) -> None:
        """Users and keys of a data dir from before they had their own store (they lived in
        metadata.sqlite3) move here once, so existing keys keep working."""
        if not legacy.exists() or self.db.query("SELECT 1 FROM users LIMIT 1"):
            return
        source = sqlite3.connect(legacy)
        try:
            tables = {r[0] for r in source.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not {"users", "api_keys"} <= tables:
                return
            users = source.execute("SELECT id, name, created_at FROM users").fetchall()
            keys = source.execute("SELECT key_hash, user_id FROM api_keys").fetchall()
        finally:
            source.close()
        with self.db.transaction() as conn:
            conn.executemany("INSERT OR IGNORE INTO users VALUES (?, ?, ?)", users)
            conn.executemany("INSERT OR IGNORE INTO api_keys VALUES (?, ?)", keys)

    def describe(self) -> str:
        return f"sqlite at {self.db.path}"

    def create_user(self, name: str, key_hash: str) -> User:
        """The user and its first key in one transaction: both or neither."""
        user = User(id=uuid.uuid4().hex, name=name, created_at=utcnow())
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise ValueError(f"user {name!r} already exists")
            if conn.execute("SELECT 1 FROM api_keys WHERE key_hash = ?", (key_hash,)).fetchone():
                raise ValueError("this API key belongs to another user")
            conn.execute("INSERT INTO users VALUES (?, ?, ?)",
                         (user.id, user.name, user.created_at.timestamp()))
            conn.execute("INSERT INTO api_keys VALUES (?, ?)", (key_hash, user.id))
        return user

    def add_api_key(self, user_id: str, key_hash: str) -> None:
        """Idempotent; a hash that already belongs to a user stays with that user."""
        with self.db.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO api_keys VALUES (?, ?)", (key_hash, user_id))

    def replace_api_keys(self, user_id: str, key_hash: str) -> int:
        """One transaction: the new key, the old keys and the sessions go together or not at all."""
        with self.db.transaction() as conn:
            if not conn.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone():
                raise ValueError(f"no user {user_id!r}")
            owner = conn.execute("SELECT user_id FROM api_keys WHERE key_hash = ?", (key_hash,)).fetchone()
            if owner is not None and owner["user_id"] != user_id:
                raise ValueError("this API key belongs to another user")
            conn.execute("DELETE FROM api_keys WHERE user_id = ?", (user_id,))
            conn.execute("INSERT INTO api_keys VALUES (?, ?)", (key_hash, user_id))
            return conn.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,)).rowcount

    def user_by_key_hash(self, key_hash: str) -> User | None:
        return _user(self.db.connection().execute(
            "SELECT users.* FROM api_keys JOIN users ON users.id = api_keys.user_id"
            " WHERE key_hash = ?", (key_hash,)).fetchone())

    def user_by_name(self, name: str) -> User | None:
        return _user(self.db.connection().execute(
            "SELECT * FROM users WHERE name = ?", (name,)).fetchone())

    def create_session(self, user_id: str, token_hash: str, *,
                       now: dt.datetime | None = None) -> SessionRecord:
        now = now or utcnow()
        t = now.timestamp()
        with self.db.transaction() as conn:
            user = _user(conn.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone())
            if user is None:
                raise ValueError(f"no user {user_id!r}")
            # Expired sessions go whenever a new one comes (and each on its own lookup).
            conn.execute("DELETE FROM sessions WHERE last_seen <= ? OR created_at <= ?",
                         (t - self.session_idle_s, t - self.session_max_age_s))
            conn.execute("INSERT INTO sessions VALUES (?, ?, ?, ?)", (token_hash, user_id, t, t))
        created = _time(t)
        return SessionRecord(user=user, created_at=created, last_seen=created,
                             expire_time=self.session_expiry(created, created))

    def session_by_token_hash(self, token_hash: str, *,
                              now: dt.datetime | None = None) -> SessionRecord | None:
        conn = self.db.connection()
        row = conn.execute(
            "SELECT users.*, sessions.created_at AS session_created, sessions.last_seen"
            " FROM sessions JOIN users ON users.id = sessions.user_id WHERE token_hash = ?",
            (token_hash,)).fetchone()
        if row is None:
            return None
        now = now or utcnow()
        created, last_seen = _time(row["session_created"]), _time(row["last_seen"])
        if now >= self.session_expiry(created, last_seen):
            conn.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))
            return None
        if (now - last_seen).total_seconds() >= SESSION_TOUCH_SECONDS:
            try:
                conn.execute("UPDATE sessions SET last_seen = ? WHERE token_hash = ? AND last_seen < ?",
                             (now.timestamp(), token_hash, now.timestamp()))
                last_seen = now
            except sqlite3.OperationalError as e:  # a full disk or a long lock: the session stays valid
                log.warning("could not record the use of a session: %s", e)
        return SessionRecord(user=_user(row), created_at=created, last_seen=last_seen,
                             expire_time=self.session_expiry(created, last_seen))

    def delete_session(self, token_hash: str) -> bool:
        return self.db.connection().execute(
            "DELETE FROM sessions WHERE token_hash = ?", (token_hash,)).rowcount > 0
