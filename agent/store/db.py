"""The store's database: embedded SQLite (WAL) or a shared PostgreSQL, one code path.

The repositories write portable SQL with sqlite3 ``?`` / ``:name`` parameters
and ``RETURNING``; :class:`Database` hides the few differences:

- **SQLite** (one agent): stdlib ``sqlite3`` in WAL mode, so ``kanshi status``
  reads while the agent writes. Writes take the lock up front
  (``BEGIN IMMEDIATE``) so two writers queue on ``busy_timeout`` instead of
  failing half-way through a transaction.
- **PostgreSQL** (several agents): psycopg 3, imported only when configured.
  Statements are translated once per text (parameters to ``%s`` /
  ``%(name)s``, DDL types), rows read by name and by index like
  ``sqlite3.Row``. Isolation is READ COMMITTED; what agents race for is made
  safe by the statements themselves (``FOR UPDATE SKIP LOCKED`` claims,
  ``ON CONFLICT``, conditional updates, the lease fence), not by a global lock.

SQLAlchemy Core would do the translation too, but costs ~12 MB RSS on every
agent (41 MB today) even on SQLite; this adapter costs nothing until PostgreSQL
is configured (and psycopg's own ~10 MB then).
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from agent.store.schema import MIGRATIONS

logger = logging.getLogger(__name__)

_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

Params = Sequence[Any] | Mapping[str, Any]


def ts(moment: datetime) -> str:
    """A fixed-width UTC timestamp that sorts as text (microseconds always present)."""
    return moment.astimezone(UTC).strftime(_TS_FORMAT)


def parse_ts(text: str) -> datetime:
    """The inverse of :func:`ts`."""
    return datetime.strptime(text, _TS_FORMAT).replace(tzinfo=UTC)


class StoreError(Exception):
    """The store cannot be opened or used (names the file and what to do)."""


class Cursor(Protocol):
    """What the repositories use of a cursor (sqlite3's and :class:`_PgCursor`)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Conn(Protocol):
    """What the repositories use of a connection inside ``tx()`` / ``read()``."""

    def execute(self, sql: str, parameters: Params = ..., /) -> Cursor: ...

    def executemany(self, sql: str, seq_of_parameters: Sequence[Params], /) -> Any: ...


class Database:
    """A thread-safe connection with transaction helpers, SQLite or PostgreSQL.

    ``dialect`` is ``"sqlite"`` or ``"postgresql"``; ``shared`` says whether other
    agents may use the same store at once (PostgreSQL).
    """

    dialect = "sqlite"
    shared = False
    #: Appended to a claim's inner SELECT: rows another agent is claiming are skipped.
    skip_locked = ""
    #: Appended to a SELECT that must hold a row against concurrent takeover.
    for_share = ""

    def __init__(self, path: Path, *, busy_timeout: float = 10.0,
                 readonly: bool = False) -> None:
        self.path: Path | str = path
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

    # -- transactions --------------------------------------------------------------

    @contextmanager
    def tx(self) -> Iterator[Conn]:
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
    def read(self) -> Iterator[Conn]:
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

    # -- schema ----------------------------------------------------------------------

    def version(self) -> int | None:
        """The schema version, or None if this is not a kanshi store."""
        try:
            with self.read() as conn:
                row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        except self._errors():
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
        except self._errors() as exc:
            raise StoreError(f"cannot prepare the store {self.path}: {exc} (is it a kanshi "
                             "store? check agent.state_dir / store.url)") from exc

    def _migrate(self) -> int:
        with self.tx() as conn:
            self._serialize_migrations(conn)
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
                    conn.execute(self.ddl(statement))
                conn.execute("INSERT INTO schema_migrations VALUES (?, ?)",
                             (version, ts(datetime.now(UTC))))
                logger.info("store %s migrated to schema version %d", self.path, version)
            return newest

    def _serialize_migrations(self, conn: Conn) -> None:
        """SQLite's BEGIN IMMEDIATE already admits one migrating process at a time."""

    def ddl(self, statement: str) -> str:
        """A migration statement in this dialect (SQLite's is the reference)."""
        return statement

    def _errors(self) -> tuple[type[Exception], ...]:
        return (sqlite3.DatabaseError,)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


# -- PostgreSQL -------------------------------------------------------------------------

_PARAM = re.compile(r"--[^\n]*|'(?:[^']|'')*'|\?|(?<!:):([A-Za-z_]\w*)|%")


@lru_cache(maxsize=1024)
def pg_sql(sql: str) -> str:
    """sqlite3 parameters (``?``, ``:name``) as psycopg's (``%s``, ``%(name)s``)."""
    def swap(match: re.Match[str]) -> str:
        text = match.group(0)
        if text.startswith(("'", "--")):  # literals and comments stay as written
            return text.replace("%", "%%")
        if text == "?":
            return "%s"
        if text == "%":
            return "%%"
        return f"%({match.group(1)})s"
    return _PARAM.sub(swap, sql)


def pg_ddl(statement: str) -> str:
    """A SQLite migration statement for PostgreSQL: 64-bit identity keys and integers,
    double precision for REAL. Everything else in the migrations is common SQL."""
    out = re.sub(r"\bid\s+INTEGER PRIMARY KEY\b",
                 "id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", statement)
    out = re.sub(r"\bINTEGER\b", "BIGINT", out)
    return re.sub(r"\bREAL\b", "DOUBLE PRECISION", out)


class PgRow(tuple[Any, ...]):
    """A row readable by index and by column name, like ``sqlite3.Row``."""

    _index: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


def _pg_row_factory(cursor: Any) -> Any:
    names = [c.name for c in cursor.description or ()]
    row_class = type("Row", (PgRow,), {"_index": {n: i for i, n in enumerate(names)}})
    return row_class


class _PgCursor:
    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self._cursor.fetchall())

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cursor)


class _PgConn:
    """A psycopg connection speaking the repositories' sqlite3 dialect of parameters."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, parameters: Params = (), /) -> _PgCursor:
        cursor = self._conn.cursor(row_factory=_pg_row_factory)
        cursor.execute(pg_sql(sql), parameters or None)
        return _PgCursor(cursor)

    def executemany(self, sql: str, seq_of_parameters: Sequence[Params], /) -> None:
        if seq_of_parameters:
            with self._conn.cursor() as cursor:
                cursor.executemany(pg_sql(sql), seq_of_parameters)


class PostgresDatabase(Database):
    """The shared store: one psycopg connection per process, transactions as on SQLite."""

    dialect = "postgresql"
    shared = True
    skip_locked = " FOR UPDATE SKIP LOCKED"
    for_share = " FOR SHARE"

    def __init__(self, url: str, *, readonly: bool = False,
                 connect_timeout: float = 10.0) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise StoreError("store.url names PostgreSQL but psycopg is not installed "
                             "(pip install 'kanshi[postgres]')") from exc
        self.path = _redacted(url)
        try:
            raw = psycopg.connect(url, autocommit=True, connect_timeout=int(connect_timeout),
                                  application_name="kanshi")
            if readonly:
                raw.execute("SET default_transaction_read_only = on")
            raw.execute("SET lock_timeout = '30s'")
        except psycopg.Error as exc:
            raise StoreError(f"cannot open the store {self.path}: {exc} "
                             "(check store.url, the server and the password)") from exc
        self._raw = raw
        self._conn = _PgConn(raw)  # type: ignore[assignment]
        self._lock = threading.RLock()
        self._depth = 0

    @contextmanager
    def tx(self) -> Iterator[Conn]:
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._conn
                finally:
                    self._depth -= 1
                return
            self._depth = 1
            try:
                with self._raw.transaction():
                    yield self._conn
            finally:
                self._depth = 0

    read = tx

    def _serialize_migrations(self, conn: Conn) -> None:
        # Agents starting together must not both create the tables: a transaction-scoped
        # advisory lock admits one migrator; the others then find the work done.
        conn.execute("SELECT pg_advisory_xact_lock(?)", (0x6B616E736869,))

    def ddl(self, statement: str) -> str:
        return pg_ddl(statement)

    def _errors(self) -> tuple[type[Exception], ...]:
        import psycopg

        return (psycopg.Error,)

    def close(self) -> None:
        with self._lock:
            self._raw.close()


def _redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", re.sub(r"password=\S+", "password=***",
                                                          url))


def connect(state_file: Path, url: str | None, *, readonly: bool = False) -> Database:
    """The configured database: PostgreSQL at ``url``, else SQLite at ``state_file``."""
    if url:
        return PostgresDatabase(url, readonly=readonly)
    return Database(state_file, readonly=readonly)
