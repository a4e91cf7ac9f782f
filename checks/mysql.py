"""The ``mysql`` check: MySQL / MariaDB liveness, size, replica lag (PyMySQL).

What is judged and reported is in :mod:`checks.database`; this module connects
and speaks SQL. The session is read-only (``SET SESSION TRANSACTION READ
ONLY``; each measurement in ``START TRANSACTION READ ONLY`` … ``ROLLBACK``)
with a server-side statement limit: MariaDB ``max_statement_time`` (any
statement) or MySQL ``max_execution_time`` (SELECTs only; MySQL stops a
``SLEEP()`` silently instead of failing it), lowered to what is left of the run
near its end. PyMySQL is handed a socket connected here, each address of
``host`` getting only what is left of the run (its own connect gives each the
whole timeout), and the run's watchdog cuts that socket at the deadline, so a
hung server cannot hold a run longer than the check's timeout.

Size is ``data_length + index_length`` from ``information_schema.tables``:
InnoDB keeps these as statistics, refreshed by ``ANALYZE TABLE`` and by the
server as tables change, so the figure can trail the files on disk a little.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import struct
from collections.abc import Sequence
from types import ModuleType
from typing import Any, ClassVar

from pydantic import model_validator
from pydantic_core import PydanticCustomError

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
from checks.dialogue import Resolver, Watchdog, open_connection, resolve_tcp

logger = logging.getLogger(__name__)


class MysqlConfig(DatabaseConfig):
    """``mysql`` options; ``socket`` is the server's socket file."""

    port: Port = 3306

    @model_validator(mode="after")
    def _database_for_size(self) -> MysqlConfig:
        if self.capacity is not None and self.size_of == "database" and not self.database:
            raise PydanticCustomError(
                "kanshi", "expected `database` to measure against `capacity`, or "
                "size_of: server for the size of all databases", {})
        return self


_SIZE_SQL = {
    "database": "SELECT COALESCE(SUM(data_length + index_length), 0) "
                "FROM information_schema.tables WHERE table_schema = DATABASE()",
    "server": "SELECT COALESCE(SUM(data_length + index_length), 0) "
              "FROM information_schema.tables "
              "WHERE table_schema NOT IN ('information_schema', 'performance_schema')",
}

# Server error numbers: MariaDB/MySQL "Error Codes" reference. 2xxx are the client's.
_CODES = {
    1044: Problem.AUTH, 1045: Problem.AUTH, 1698: Problem.AUTH, 1251: Problem.AUTH,
    2059: Problem.AUTH,
    1049: Problem.NO_DATABASE,
    1040: Problem.TOO_MANY, 1203: Problem.TOO_MANY, 1226: Problem.TOO_MANY,
    1969: Problem.STATEMENT_TIMEOUT, 3024: Problem.STATEMENT_TIMEOUT,
    1227: Problem.PERMISSION, 1142: Problem.PERMISSION, 1143: Problem.PERMISSION,
    1370: Problem.PERMISSION,
    1792: Problem.READ_ONLY, 1290: Problem.READ_ONLY,
    1064: Problem.BAD_QUERY, 1146: Problem.BAD_QUERY, 1054: Problem.BAD_QUERY,
    1305: Problem.BAD_QUERY, 1046: Problem.BAD_QUERY, 1109: Problem.BAD_QUERY,
    2026: Problem.TLS,
}
_UNKNOWN_VARIABLE_TEXT = "Unknown system variable"  # error 1193


class MysqlCheck(DatabaseCheck):
    """MySQL or MariaDB: connect, ``SELECT 1``; size, replica lag, queries if configured."""

    type_name: ClassVar[str] = "mysql"
    Config: ClassVar[type[CheckConfig]] = MysqlConfig
    product: ClassVar[str] = "MySQL"
    auth_hint: ClassVar[str] = "and that the user exists for the host kanshi connects from"
    grant_hint: ClassVar[str] = ("grant the monitoring user the right to read it (replica "
                                 "status: REPLICATION CLIENT on MySQL, SLAVE MONITOR on "
                                 "MariaDB 10.5+; SELECT on the tables a query reads)")

    def __init__(self, name: str, config: CheckConfig, *, timeout: float,
                 context: CheckContext, resolve: Resolver = resolve_tcp) -> None:
        super().__init__(name, config, timeout=timeout, context=context)
        self.resolve = resolve

    def open(self, budget: Budget, watchdog: Watchdog) -> MysqlSession:
        pymysql = _driver()
        errors = (pymysql.err.Error, struct.error, IndexError, ValueError)
        try:
            conn = pymysql.connect(**connect_args(self.config, self.timeout),
                                   defer_connect=True)
        except errors as exc:
            raise translate(exc, connecting=True) from None
        # PyMySQL counts the unix socket connections it opens as secure (a password
        # may go in clear text there); one handed in must count the same.
        conn._secure = self.config.socket is not None
        sock = self._socket(budget)
        watchdog.watch(sock)  # the handshake and every statement, until the deadline
        try:
            conn.connect(sock)  # closes the socket if it fails
        except errors as exc:
            raise translate(exc, connecting=True) from None
        try:
            return MysqlSession(conn, budget)
        except DatabaseError:
            conn.close()
            raise

    def _socket(self, budget: Budget) -> socket.socket:
        """The connected socket PyMySQL is given: its own connect would give every
        address of ``host`` the whole timeout."""
        config = self.config
        try:
            if config.socket is not None:
                return _unix_socket(str(config.socket), budget.left())
            sock = open_connection(config.host, config.port, budget.deadline,
                                   resolve=self.resolve)
        except OSError as exc:
            raise _connect_error(exc) from None
        # What PyMySQL sets on the sockets it opens itself.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return sock


def _unix_socket(path: str, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(max(timeout, 0.001))
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def _connect_error(exc: OSError) -> DatabaseError:
    """A socket that did not connect, as PyMySQL's error 2003 would have said it."""
    if isinstance(exc, ConnectionRefusedError | FileNotFoundError):
        return DatabaseError(Problem.REFUSED, exc.strerror or str(exc))
    if isinstance(exc, TimeoutError):
        return DatabaseError(Problem.TIMEOUT, "timed out")
    return DatabaseError(Problem.OTHER, exc.strerror or str(exc))


def _driver() -> ModuleType:
    try:
        import pymysql
    except ImportError:
        raise DriverMissing("PyMySQL", "mysql") from None
    module: ModuleType = pymysql
    return module


def connect_args(config: DatabaseConfig, timeout: float) -> dict[str, Any]:
    """Keyword arguments for ``pymysql.connect``; every socket wait is ``timeout``."""
    password = config.password.get_secret_value() if config.password is not None else ""
    return {
        "host": config.host, "port": config.port,
        "unix_socket": str(config.socket) if config.socket is not None else None,
        "user": config.user, "password": password, "database": config.database,
        "connect_timeout": timeout, "read_timeout": timeout, "write_timeout": timeout,
        "autocommit": True, "charset": "utf8mb4", "program_name": "kanshi",
        **_tls_args(config),
    }


def _tls_args(config: DatabaseConfig) -> dict[str, Any]:
    """libpq's sslmode meanings, in PyMySQL's terms; TLS is for TCP only."""
    if config.socket is not None or config.tls == "disable":
        return {"ssl_disabled": True}
    if config.tls == "prefer":
        return {}  # PyMySQL's default: TLS when the server offers it, not verified
    import ssl

    context = ssl.create_default_context(
        cafile=str(config.tls_ca) if config.tls_ca is not None else None)
    context.check_hostname = config.tls == "verify-full"
    if config.tls == "require":
        context.verify_mode = ssl.CERT_NONE
    # An SSLContext makes PyMySQL refuse a server that does not offer TLS.
    return {"ssl": context}


class MysqlSession:
    """One connection, every statement in a read-only transaction."""

    def __init__(self, conn: Any, budget: Budget) -> None:
        self.conn = conn
        self.budget = budget
        info = str(conn.get_server_info())
        self.mariadb = "mariadb" in info.lower()
        self.version = _version(info)
        #: The session's statement limit now; None: the server has none to set.
        self._limit: float | None = budget.statement_timeout
        self._set_limit(budget.statement_timeout)
        self._execute("SET SESSION TRANSACTION READ ONLY")

    def ping(self) -> None:
        self._fetch("SELECT 1")

    def rows(self, sql: str) -> Sequence[tuple[Any, ...]]:
        return self._fetch(sql)

    def size_bytes(self, scope: str) -> int:
        [(size,)] = self._fetch(_SIZE_SQL[scope])
        return int(size or 0)

    def replication(self) -> Replica:
        rows = self._replica_status()
        if not rows:
            return Replica(None, "the server is not a replica (SHOW REPLICA STATUS returned "
                                 "nothing): remove `replication` if this server is a primary")
        row = rows[0]
        io = _field(row, "Replica_IO_Running", "Slave_IO_Running")
        sql = _field(row, "Replica_SQL_Running", "Slave_SQL_Running")
        lag = _field(row, "Seconds_Behind_Source", "Seconds_Behind_Master")
        threads = f"IO thread {io}, SQL thread {sql}"
        if io != "Yes" or sql != "Yes":
            return Replica(None, f"replication is not running: {threads}{_last_errors(row)}; "
                                 "fix the cause, then START REPLICA (START SLAVE)")
        return Replica(None if lag is None else float(lag), detail=threads)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()

    def _replica_status(self) -> list[dict[str, Any]]:
        """``SHOW REPLICA STATUS`` (MySQL 8.0.22+, MariaDB 10.5.1+), else the old name."""
        try:
            return self._fetch("SHOW REPLICA STATUS", dicts=True)
        except DatabaseError as exc:
            if exc.problem is not Problem.BAD_QUERY:
                raise
        return self._fetch("SHOW SLAVE STATUS", dicts=True)

    def _fetch(self, sql: str, dicts: bool = False) -> list[Any]:
        """At most two rows (one-row answers are expected) in a read-only transaction."""
        import pymysql

        limit = self.budget.statement_limit()
        if self._limit is not None and limit < self._limit:  # less of the run is left
            self._set_limit(limit)
        cursor = self.conn.cursor(pymysql.cursors.DictCursor if dicts else None)
        try:
            cursor.execute("START TRANSACTION READ ONLY")
            cursor.execute(sql)
            return list(cursor.fetchmany(2))
        except pymysql.err.Error as exc:
            raise translate(exc) from None
        finally:
            with contextlib.suppress(pymysql.err.Error):
                cursor.execute("ROLLBACK")
            cursor.close()

    def _execute(self, sql: str, *params: Any) -> None:
        import pymysql

        try:
            with self.conn.cursor() as cursor:
                cursor.execute(sql, params or None)
        except pymysql.err.Error as exc:
            raise translate(exc) from None

    def _set_limit(self, seconds: float) -> None:
        """The server-side limit of the session's next statements."""
        try:
            if self.mariadb:
                self._execute("SET SESSION max_statement_time = %s", seconds)
            else:
                self._execute("SET SESSION max_execution_time = %s", max(1, round(seconds * 1000)))
        except DatabaseError as exc:
            # Servers older than MySQL 5.7.8 / MariaDB 10.1 lack the variable: run
            # without the server-side limit; the check's watchdog still holds.
            if _UNKNOWN_VARIABLE_TEXT not in exc.detail:
                raise
            logger.info("no server-side statement limit on this server: %s", exc.detail)
            self._limit = None
            return
        self._limit = seconds


def _field(row: dict[str, Any], new: str, old: str) -> Any:
    """MySQL 8.0.22 renamed Slave/Master columns to Replica/Source; MariaDB did not."""
    return row[new] if new in row else row.get(old)


def _last_errors(row: dict[str, Any]) -> str:
    texts = [f"; last {kind} error: {row[key]}" for kind, key in
             (("IO", "Last_IO_Error"), ("SQL", "Last_SQL_Error")) if row.get(key)]
    return "".join(texts)


def _version(info: str) -> str:
    """``5.5.5-10.11.18-MariaDB-0+deb12u1-log`` → ``MariaDB 10.11.18``."""
    info = info.removeprefix("5.5.5-")  # MariaDB's prefix for old clients
    match = re.match(r"\d+(?:\.\d+)*", info)
    number = match.group(0) if match else info
    return f"{'MariaDB' if 'mariadb' in info.lower() else 'MySQL'} {number}"


def translate(exc: Exception, *, connecting: bool = False) -> DatabaseError:
    """A PyMySQL (or handshake) error as a :class:`DatabaseError`."""
    import pymysql

    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    text = first_line(str(exc.args[1]) if code is not None and len(exc.args) > 1 else str(exc))
    if code is None or not isinstance(exc, pymysql.err.Error):
        # No error number: the peer's bytes were not the MySQL protocol.
        problem = Problem.PROTOCOL if connecting else Problem.LOST
        return DatabaseError(problem, text or type(exc).__name__)
    if code in (2003, 2006, 2013):
        return DatabaseError(_socket_problem(text, code), _socket_reason(text))
    return DatabaseError(_CODES.get(code, Problem.OTHER), text)


def _socket_reason(text: str) -> str:
    """``Can't connect to MySQL server on 'h' ([Errno 111] Connection refused)`` → the
    reason in brackets, without the errno."""
    match = re.match(r"Can't connect to (?:MySQL|MariaDB) server on .*? \((.*)\)$", text)
    reason = match.group(1) if match else text
    return re.sub(r"^\[Errno -?\d+\] ", "", reason)


def _socket_problem(text: str, code: int) -> Problem:
    lowered = text.lower()
    if "timed out" in lowered:
        return Problem.TIMEOUT
    if "ssl" in lowered or "certificate" in lowered:
        return Problem.TLS
    if "refused" in lowered or "no such file" in lowered:
        return Problem.REFUSED
    return Problem.OTHER if code == 2003 else Problem.LOST
