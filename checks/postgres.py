"""The ``postgres`` check: PostgreSQL liveness, size, standby lag (psycopg 3).

What is judged and reported is in :mod:`checks.database`; this module connects
and speaks SQL. Each measurement runs in its own ``BEGIN READ ONLY``
transaction, rolled back afterwards, under ``statement_timeout`` or what is
left of the run (:mod:`checks.database`); libpq itself waits for an answer as
long as it takes, so the run's watchdog holds the connection's socket.
Configured queries are sent as prepared statements, so a ``;`` cannot smuggle
in a second statement.

libpq reports connection failures as text without an SQLSTATE, so they are
classified by the server's (English) words; a server with translated
``lc_messages`` still yields a CRITICAL, with its own text as the reason.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from types import ModuleType
from typing import Any, ClassVar

from checks.base import CheckConfig, CheckContext
from checks.database import (
    Budget,
    DatabaseCheck,
    DatabaseConfig,
    DatabaseError,
    DriverMissing,
    Port,
    Problem,
    Replica,
    first_line,
)
from checks.dialogue import Resolver, Watchdog, resolve_tcp

logger = logging.getLogger(__name__)


class PostgresConfig(DatabaseConfig):
    """``postgres`` options; ``socket`` is the directory holding ``.s.PGSQL.<port>``."""

    port: Port = 5432
    database: str | None = "postgres"


_SIZE_SQL = {
    "database": "SELECT pg_database_size(current_database())",
    "server": "SELECT sum(pg_database_size(oid))::bigint FROM pg_database",
}

# On an idle primary the last replayed transaction grows old although the standby
# has everything: when all WAL received is replayed, the lag is 0 (the usual
# fix, e.g. in the PostgreSQL wiki's streaming replication monitoring queries).
# The receiver's status is NULL without pg_read_all_stats ("hidden"); no row at
# all means no WAL receiver runs.
_REPLICATION_SQL = """
SELECT pg_is_in_recovery(),
       (SELECT coalesce(status, 'hidden') FROM pg_stat_wal_receiver),
       pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(),
       EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8
"""

# Connection-time texts from libpq and the server, checked in this order (a
# "localhost" login tries ::1 and 127.0.0.1 and reports both; the most telling wins).
_CONNECT_TEXTS = (
    (Problem.AUTH, ("authentication failed", "no pg_hba.conf entry", "no password supplied",
                    "password is required", "role \"")),
    (Problem.NO_DATABASE, ("does not exist",)),
    (Problem.TOO_MANY, ("too many clients", "connection slots are reserved",
                        "too many connections")),
    (Problem.PROTOCOL, ("expected authentication request", "invalid response to ssl",
                        "unexpected message", "invalid message", "received invalid")),
    (Problem.TLS, ("ssl", "certificate", "tls")),
    (Problem.TIMEOUT, ("timeout expired", "timed out")),
    (Problem.REFUSED, ("connection refused", "no such file or directory")),
    (Problem.LOST, ("server closed the connection", "could not receive data",
                    "connection reset", "terminating connection")),
)


class PostgresCheck(DatabaseCheck):
    """PostgreSQL: connect, ``SELECT 1``; size, standby lag and queries if configured."""

    type_name: ClassVar[str] = "postgres"
    Config: ClassVar[type[CheckConfig]] = PostgresConfig
    product: ClassVar[str] = "PostgreSQL"
    auth_hint: ClassVar[str] = "and the server's pg_hba.conf for this user and address"
    grant_hint: ClassVar[str] = ("grant the monitoring user the pg_monitor role "
                                 "(GRANT pg_monitor TO <user>) or the right to read it")

    def __init__(self, name: str, config: CheckConfig, *, timeout: float,
                 context: CheckContext, resolve: Resolver = resolve_tcp) -> None:
        super().__init__(name, config, timeout=timeout, context=context)
        self.resolve = resolve

    def open(self, budget: Budget, watchdog: Watchdog) -> PostgresSession:
        psycopg = _driver()
        conn = self._connect(psycopg, budget)
        try:
            # Once logged in, libpq waits for an answer as long as it takes.
            watchdog.watch_fd(conn.pgconn.socket)
            return PostgresSession(conn, budget)
        except DatabaseError:
            conn.close()
            raise


    def _connect(self, psycopg: ModuleType, budget: Budget) -> Any:
        """A connection to the first address of ``host`` that answers in time.

        psycopg gives every address of a name its own ``connect_timeout``, so a
        name with an IPv6 and an IPv4 address that are both down took twice the
        check's timeout: here each attempt gets only what is left.
        """
        args = connect_args(self.config, self.timeout)
        if self.config.socket is not None:
            return _attempt(psycopg, args)
        try:
            addresses = self.resolve(self.config.host, self.config.port)
        except OSError as exc:
            raise DatabaseError(Problem.OTHER, f"failed to resolve host "
                                f"'{self.config.host}': {exc.strerror or exc}") from None
        errors: list[DatabaseError] = []
        for *_, address in addresses:
            left = budget.left()
            if errors and left < _SHORTEST_CONNECT:  # no time for another address
                errors.append(DatabaseError(Problem.TIMEOUT, "connection timeout expired"))
                break
            seconds = max(_SHORTEST_CONNECT, math.floor(left + 0.1))  # libpq: whole seconds
            try:
                return _attempt(psycopg, {**args, "hostaddr": address[0],
                                          "connect_timeout": seconds})
            except DatabaseError as exc:
                errors.append(exc)
        raise _most_telling(errors)


#: libpq's shortest ``connect_timeout`` (less is taken as 2 s).
_SHORTEST_CONNECT = 2


def _attempt(psycopg: ModuleType, args: dict[str, Any]) -> Any:
    try:
        return psycopg.connect(**args)
    except psycopg.Error as exc:
        raise translate(exc) from None


def _most_telling(errors: list[DatabaseError]) -> DatabaseError:
    """Of failed attempts on several addresses, the error that says most (a rejected
    login beats a refused connection: the server is there)."""
    order = [problem for problem, _ in _CONNECT_TEXTS]
    return min(errors, key=lambda e: order.index(e.problem) if e.problem in order
               else len(order))


def _driver() -> ModuleType:
    try:
        import psycopg
    except ImportError:
        raise DriverMissing("psycopg", "postgres") from None
    return psycopg


def connect_args(config: DatabaseConfig, timeout: float) -> dict[str, Any]:
    """Keyword arguments for ``psycopg.connect`` (psycopg quotes them into a conninfo)."""
    args: dict[str, Any] = {
        "host": str(config.socket) if config.socket is not None else config.host,
        "port": config.port,
        "user": config.user,
        "dbname": config.database,
        # libpq takes whole seconds and treats less than 2 as 2.
        "connect_timeout": max(2, math.ceil(timeout)),
        "sslmode": config.tls,
        "application_name": "kanshi",
        "autocommit": True,
    }
    if config.password is not None:
        args["password"] = config.password.get_secret_value()
    if config.tls_ca is not None:
        args["sslrootcert"] = str(config.tls_ca)
    return args


class PostgresSession:
    """One connection, every statement in a read-only transaction."""

    def __init__(self, conn: Any, budget: Budget) -> None:
        self.conn = conn
        self.budget = budget
        self.version = _version(conn.info.server_version)
        # Set with autocommit on, so it holds for the session; then every
        # statement gets its own BEGIN READ ONLY … ROLLBACK.
        self._execute("SELECT set_config('statement_timeout', %s, false)",
                      (_milliseconds(budget.statement_timeout),))
        conn.autocommit = False
        conn.read_only = True

    def ping(self) -> None:
        self._fetch("SELECT 1")

    def rows(self, sql: str) -> Sequence[tuple[Any, ...]]:
        return self._fetch(sql, prepare=True)

    def size_bytes(self, scope: str) -> int:
        [(size,)] = self._fetch(_SIZE_SQL[scope])
        return int(size or 0)

    def replication(self) -> Replica:
        [(standby, receiver, caught_up, age)] = self._fetch(_REPLICATION_SQL)
        if not standby:
            return Replica(None, "the server is not a standby (pg_is_in_recovery() is false):"
                                 " it may have been promoted to primary; remove "
                                 "`replication` if this server is meant to be a primary")
        last = "never" if age is None else f"{age:.0f} s ago"
        if receiver not in ("streaming", "hidden"):
            state = "no WAL receiver" if receiver is None else f"WAL receiver {receiver}"
            return Replica(None, f"the standby is not streaming from its primary ({state} in "
                                 "pg_stat_wal_receiver): check primary_conninfo and the "
                                 f"primary; last transaction replayed {last}")
        if caught_up:
            return Replica(0.0, detail="all WAL received is replayed")
        return Replica(None if age is None else max(0.0, float(age)),
                       detail=f"last transaction replayed {last}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()

    def _fetch(self, sql: str, prepare: bool | None = None) -> list[tuple[Any, ...]]:
        """At most two rows: enough to tell "one row" from "more than one"."""
        import psycopg

        limit = self.budget.statement_limit()
        try:
            with self.conn.cursor() as cursor:
                if limit < self.budget.statement_timeout:
                    # Less of the run is left: this transaction only (rolled back below).
                    cursor.execute("SELECT set_config('statement_timeout', %s, true)",
                                   (_milliseconds(limit),))
                cursor.execute(sql, prepare=prepare)
                if cursor.description is None:
                    return []
                return list(cursor.fetchmany(2))
        except psycopg.Error as exc:
            raise translate(exc) from None
        finally:
            with contextlib.suppress(psycopg.Error):
                self.conn.rollback()

    def _execute(self, sql: str, params: tuple[Any, ...]) -> None:
        import psycopg

        try:
            self.conn.execute(sql, params)
        except psycopg.Error as exc:
            raise translate(exc) from None


def _milliseconds(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def _version(number: int) -> str:
    """``150018`` → ``PostgreSQL 15.18`` (the scheme since version 10)."""
    if number >= 100000:
        return f"PostgreSQL {number // 10000}.{number % 10000}"
    return f"PostgreSQL {number // 10000}.{number // 100 % 100}.{number % 100}"


def translate(exc: Exception) -> DatabaseError:
    """A psycopg error as a :class:`DatabaseError`."""
    import psycopg

    state = getattr(exc, "sqlstate", None) or ""
    text = str(exc)
    if isinstance(exc, psycopg.errors.ConnectionTimeout):
        return DatabaseError(Problem.TIMEOUT, "connection timeout expired")
    if state:
        return DatabaseError(_by_sqlstate(state), first_line(text))
    return _by_text(text)


def _by_sqlstate(state: str) -> Problem:
    """SQLSTATE classes: PostgreSQL manual, appendix A "Error Codes"."""
    exact = {"57014": Problem.STATEMENT_TIMEOUT, "42501": Problem.PERMISSION,
             "25006": Problem.READ_ONLY, "3D000": Problem.NO_DATABASE,
             "53300": Problem.TOO_MANY, "57P01": Problem.LOST, "57P02": Problem.LOST,
             "57P03": Problem.OTHER}
    if state in exact:
        return exact[state]
    if state.startswith("28"):
        return Problem.AUTH
    if state.startswith("08"):
        return Problem.LOST
    if state.startswith(("42", "22", "0A", "21")):
        return Problem.BAD_QUERY
    return Problem.OTHER


def _by_text(text: str) -> DatabaseError:
    """Classify a libpq message: each attempt is one "… failed: reason" line."""
    reasons = [_reason(line) for line in text.splitlines()
               if line.strip() and not line.startswith("\t")]
    for problem, needles in _CONNECT_TEXTS:
        for reason in reasons:
            if any(needle in reason.lower() for needle in needles):
                return DatabaseError(problem, reason)
    return DatabaseError(Problem.OTHER, reasons[0] if reasons else text.strip())


def _reason(line: str) -> str:
    """``connection to server at "h", port 5 failed: FATAL:  x`` → ``x``."""
    reason = line.rsplit(" failed: ", 1)[-1].strip()
    for prefix in ("FATAL:", "ERROR:", "connection failed:"):
        reason = reason.removeprefix(prefix).strip()
    return reason
