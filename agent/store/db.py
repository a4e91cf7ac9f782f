"""The embedded store: one SQLite file in WAL mode, versioned migrations.

WAL lets ``kanshi status`` and ``kanshi incidents`` read while the agent writes.
Writes take the lock up front (``BEGIN IMMEDIATE``) so two writers queue on
``busy_timeout`` instead of failing half-way through a transaction.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from agent.store.schema import MIGRATIONS

logger = logging.getLogger(__name__)

_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def ts(moment: datetime) -> str:
    """A fixed-width UTC timestamp that sorts as text (microseconds always present)."""
    return moment.astimezone(UTC).strftime(_TS_FORMAT)


def parse_ts(text: str) -> datetime:
    """The inverse of :func:`ts`."""
    return datetime.strptime(text, _TS_FORMAT).replace(tzinfo=UTC)


class StoreError(Exception):
    """The store cannot be opened or used (names the file and what to do)."""


class Database:
    """A thread-safe SQLite connection with transaction helpers."""

    def __init__(self, path: Path, *, busy_timeout: float = 10.0,
                 readonly: bool = False) -> None:
        self.path = path
        try:
            if readonly:  # never creates, migrates or writes: safe beside a running agent
                self._conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                             timeout=busy_timeout, isolation_level=None,
                                             check_same_thread=False)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None,
                                             check_same_thread=False)
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")  # durable across crashes
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA foreign_keys=ON")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the store {path}: {exc} "
                             "(check agent.state_dir and its permissions)") from exc
        self._lock = threading.RLock()
        self._depth = 0

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; nested use joins the outer one."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._conn
                finally:
                    self._depth -= 1
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")
            finally:
                self._depth = 0

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent read (one snapshot across several queries)."""
        with self._lock:
            if self._depth:
                yield self._conn
                return
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    def version(self) -> int | None:
        """The schema version, or None if this is not a kanshi store."""
        try:
            with self.read() as conn:
                row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        except sqlite3.DatabaseError:
            return None
        return int(row[0]) if row and row[0] is not None else None

    def check_version(self) -> None:
        """Refuse a store of another schema version than this kanshi's (no migration)."""
        version, newest = self.version(), len(MIGRATIONS)
        if version is None:
            raise StoreError(f"{self.path} is not a kanshi store (no schema version)")
        if version < newest:
            raise StoreError(f"{self.path} has schema version {version}, this kanshi expects "
                             f"{newest}: start the agent (kanshi run) once to migrate it")
        if version > newest:
            raise StoreError(f"{self.path} was written by a newer kanshi (schema {version}, "
                             f"this one knows {newest}); upgrade kanshi")

    def migrate(self) -> int:
        """Apply pending migrations; return the schema version."""
        try:
            return self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot prepare the store {self.path}: {exc} (is it a kanshi "
                             "store? check agent.state_dir)") from exc

    def _migrate(self) -> int:
        with self.tx() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                         "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
            current = conn.execute(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]
            newest = len(MIGRATIONS)
            if current > newest:
                raise StoreError(f"{self.path} has schema version {current}, newer than this "
                                 f"kanshi knows ({newest}); upgrade kanshi")
            for version in range(current + 1, newest + 1):
                for statement in MIGRATIONS[version - 1]:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations VALUES (?, ?)",
                             (version, ts(datetime.now(UTC))))
                logger.info("store %s migrated to schema version %d", self.path, version)
            return newest

    def close(self) -> None:
        with self._lock:
            self._conn.close()
