"""Users and their API key hashes in SQLite: the embedded twin of MongoUserStore."""
from __future__ import annotations

import datetime as dt
import sqlite3
import uuid
from pathlib import Path

from photostore.backends.base import User, UserStore, utcnow
from photostore.backends.sqlite_util import SqliteDatabase

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
  key_hash TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id));
"""


def _user(row: sqlite3.Row | None) -> User | None:
    if row is None:
        return None
    return User(id=row["id"], name=row["name"],
                created_at=dt.datetime.fromtimestamp(row["created_at"], dt.timezone.utc))


class SqliteUserStore(UserStore):
    def __init__(self, path: Path, legacy_metadata_path: Path | None = None):
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

    def user_by_key_hash(self, key_hash: str) -> User | None:
        return _user(self.db.connection().execute(
            "SELECT users.* FROM api_keys JOIN users ON users.id = api_keys.user_id"
            " WHERE key_hash = ?", (key_hash,)).fetchone())

    def user_by_name(self, name: str) -> User | None:
        return _user(self.db.connection().execute(
            "SELECT * FROM users WHERE name = ?", (name,)).fetchone())
