"""One SQLite connection per thread, WAL mode, waiting on locks held by other processes."""
from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Callable

from photostore.backends.base import StorageFullError


class SqliteDatabase:
    def __init__(self, path: Path, schema: str, functions: dict[str, Callable] | None = None):
        """functions: SQL functions of one argument (deterministic) on every connection."""
        self.path = Path(path)
        self._functions = dict(functions or {})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self.connection().executescript(schema)

    def connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.row_factory = sqlite3.Row
            for name, function in self._functions.items():
                conn.create_function(name, 1, function, deterministic=True)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def transaction(self):
        """BEGIN IMMEDIATE ... COMMIT: a write transaction, rolled back on error."""
        conn = self.connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode == sqlite3.SQLITE_FULL:
                raise StorageFullError(f"the disk of {self.path.parent} is full ({e})") from e
            raise

    def query(self, sql: str, params=()) -> list[sqlite3.Row]:
        return self.connection().execute(sql, params).fetchall()
