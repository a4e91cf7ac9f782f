"""What the ``postgres`` and ``mysql`` checks share: config, judging, messages.

SPEC §1 (SkyArch): PostgreSQL / MySQL liveness is an option checked every 10
minutes, a failure starting the port-failure levels; Gold adds "database size
≥ 90 % → contact the customer". One run opens one connection and reports:

- ``connection``: the server accepted the login and answered ``SELECT 1`` —
  metrics ``connect_seconds``, ``query_seconds``.
- ``size`` (with ``capacity``): bytes used against the capacity, judged in %.
- ``replication`` (with ``replication`` thresholds): lag behind the primary.
- one target per configured query, named by its ``name``.

Every configured target is reported on every run: when the server cannot be
reached (or fails ``SELECT 1``) ``connection`` is CRITICAL and the others are
UNKNOWN "not measured", so their incidents are neither closed as vanished nor
left as they were without a word. Target ``""`` (the check as a whole) is left
to the agent, for a run that failed as a whole (here: no driver installed).

A run ends within the check's timeout, whatever the server does:

- each statement runs in a read-only transaction under a server-side limit of
  ``statement_timeout`` or what is left of the run (less a small reserve for
  the answer to come back), whichever is less; a target the run had no time
  left for is UNKNOWN "not measured";
- a :class:`~checks.dialogue.Watchdog` shuts the connection down at the
  deadline, so a server that stops answering mid-statement (drivers set no
  client-side limit once logged in) is CRITICAL "stopped answering".

Driver modules (:mod:`checks.postgres`, :mod:`checks.mysql`) turn their
exceptions into :class:`DatabaseError` with a :class:`Problem` kind, so the
messages here read the same for both servers.
"""

from __future__ import annotations

import enum
import logging
import math
import re
import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Protocol

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from checks.base import Check, CheckConfig, Result, Status
from checks.dialogue import Watchdog
from checks.types import (
    Duration,
    DurationThresholds,
    PercentThresholds,
    Thresholds,
    expected_error,
)

logger = logging.getLogger(__name__)

# -- config value types --------------------------------------------------------------

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
# SI units are powers of 1000 and IEC units powers of 1024 (as AWS, df -H / df -h
# spell them). A bare "G" is refused: MySQL reads it as GiB, disk vendors as GB.
_SIZE_UNITS = {"": 1, "b": 1,
               "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4, "pb": 1000**5,
               "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4, "pib": 1024**5}
_SIZE_EXPECTED = "a size such as 50GiB, 500MB or 2TiB (bytes when a bare number)"


def parse_byte_size(value: Any) -> int:
    """Bytes from ``1048576``, ``"50GiB"``, ``"500 MB"``, ``"1.5TiB"`` (more than 0)."""
    if isinstance(value, bool):
        raise expected_error(_SIZE_EXPECTED, value)
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and (match := _SIZE.match(value)) \
            and match.group(2).lower() in _SIZE_UNITS:
        number = float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    else:
        raise expected_error(_SIZE_EXPECTED, value)
    if not math.isfinite(number) or number < 1:
        raise expected_error("a size of at least 1 byte", value)
    return int(number)


#: A size in bytes, written with a unit (``50GiB``) or as a bare number of bytes.
ByteSize = Annotated[int, BeforeValidator(parse_byte_size)]


def _port(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise expected_error("a TCP port from 1 to 65535", value)
    return value


Port = Annotated[int, BeforeValidator(_port)]
TlsMode = Literal["disable", "prefer", "require", "verify-ca", "verify-full"]
_TLS_MODES = ("disable", "prefer", "require", "verify-ca", "verify-full")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
#: The target of the login and ``SELECT 1``.
CONNECTION = "connection"
#: Targets the check itself reports; a query may not take their names.
RESERVED_TARGETS = (CONNECTION, "size", "replication")


class QueryConfig(CheckConfig):
    """A query whose single numeric answer is judged (higher is worse)."""

    name: str
    sql: str = Field(min_length=1)
    threshold: Thresholds = Thresholds()

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> Any:
        if not isinstance(value, str) or not _NAME.match(value):
            raise expected_error("a lower-case name such as stuck_jobs (letters, digits, _)",
                                 value)
        if value in RESERVED_TARGETS:
            raise expected_error(f"a name other than {', '.join(RESERVED_TARGETS[:-1])} or "
                                 f"{RESERVED_TARGETS[-1]}", value)
        return value


class DatabaseConfig(CheckConfig):
    """Options both database checks share (each family sets its port and database)."""

    host: str = "localhost"
    port: Port
    socket: Path | None = None
    user: str = Field(min_length=1)
    password: SecretStr | None = None
    database: str | None = None
    tls: TlsMode = "prefer"
    tls_ca: Path | None = None
    statement_timeout: Duration = 5.0
    capacity: ByteSize | None = None
    size: PercentThresholds = PercentThresholds(warning=80.0, critical=90.0)
    size_of: Literal["database", "server"] = "database"
    replication: DurationThresholds | None = None
    queries: tuple[QueryConfig, ...] = ()

    @field_validator("tls", mode="before")
    @classmethod
    def _tls(cls, value: Any) -> Any:
        if value not in _TLS_MODES:
            raise expected_error(f"one of {', '.join(_TLS_MODES)}", value)
        return value

    @field_validator("size_of", mode="before")
    @classmethod
    def _size_of(cls, value: Any) -> Any:
        if value not in ("database", "server"):
            raise expected_error("database or server", value)
        return value

    @field_validator("queries")
    @classmethod
    def _unique_names(cls, queries: tuple[QueryConfig, ...]) -> tuple[QueryConfig, ...]:
        names = [q.name for q in queries]
        for name in names:
            if names.count(name) > 1:
                raise PydanticCustomError("kanshi", "expected each query name once, got "
                                          "{got} twice", {"got": f'"{name}"'})
        return queries

    @model_validator(mode="after")
    def _ca_for_verify(self) -> DatabaseConfig:
        if self.tls.startswith("verify") and self.tls_ca is None:
            raise PydanticCustomError(
                "kanshi", "expected tls_ca (the CA bundle that signed the server's "
                "certificate) with tls: {mode}", {"mode": self.tls})
        return self


# -- what a driver module provides ---------------------------------------------------


class Problem(enum.Enum):
    """What went wrong, independent of the driver."""

    REFUSED = "refused"
    TIMEOUT = "timeout"
    AUTH = "auth"
    NO_DATABASE = "no_database"
    PROTOCOL = "protocol"
    TLS = "tls"
    TOO_MANY = "too_many"
    LOST = "lost"
    STATEMENT_TIMEOUT = "statement_timeout"
    PERMISSION = "permission"
    READ_ONLY = "read_only"
    BAD_QUERY = "bad_query"
    OTHER = "other"


class DatabaseError(Exception):
    """A driver error translated: its :class:`Problem` and the server's own words."""

    def __init__(self, problem: Problem, detail: str) -> None:
        super().__init__(f"{problem.value}: {detail}")
        self.problem = problem
        self.detail = detail


class DriverMissing(Exception):
    """The Python driver of a family is not installed."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(module)
        self.module = module
        self.extra = extra


@dataclass(frozen=True)
class Replica:
    """Replication as a server reports it: ``broken`` says why it is not working."""

    lag: float | None
    broken: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class Budget:
    """The time one run may spend, on ``time.monotonic()``."""

    deadline: float
    statement_timeout: float
    #: Kept back from the last statement, for its answer (or error) to come back.
    reserve: float

    @classmethod
    def of(cls, timeout: float, statement_timeout: float) -> Budget:
        return cls(time.monotonic() + timeout, statement_timeout, min(0.5, 0.05 * timeout))

    def left(self) -> float:
        """Seconds until the deadline."""
        return self.deadline - time.monotonic()

    def statement_limit(self) -> float:
        """The server-side limit for the next statement (at least 1 ms)."""
        return max(0.001, min(self.statement_timeout, self.left() - self.reserve))

    def exhausted(self) -> bool:
        """Too little time left to start another statement: less than the reserve."""
        return self.left() - self.reserve < self.reserve


class Session(Protocol):
    """An open, read-only connection; every method raises :class:`DatabaseError`.

    Each statement gets :meth:`Budget.statement_limit` of the budget it was opened
    with as its server-side limit.
    """

    version: str  # e.g. "PostgreSQL 15.18", "MariaDB 10.11.18"

    def ping(self) -> None: ...
    def rows(self, sql: str) -> Sequence[tuple[Any, ...]]: ...
    def size_bytes(self, scope: str) -> int: ...
    def replication(self) -> Replica: ...
    def close(self) -> None: ...


# -- the check ---------------------------------------------------------------------


class DatabaseCheck(Check):
    """Connect, ``SELECT 1``, then size, replication and queries as configured."""

    config: DatabaseConfig
    default_interval: ClassVar[float] = 600.0  # SPEC §1: PostgreSQL/MySQL every 10 min
    default_timeout: ClassVar[float] = 10.0    # check_pgsql / check_mysql default
    #: "PostgreSQL" / "MySQL", as messages name the server.
    product: ClassVar[str]
    #: Where to look when a login is refused.
    auth_hint: ClassVar[str]
    #: What to grant when the monitoring user may not read something.
    grant_hint: ClassVar[str]

    @classmethod
    def minimum_timeout(cls, config: CheckConfig) -> float:
        # A statement may use its whole statement_timeout; the check must outlast it.
        assert isinstance(config, DatabaseConfig)
        return config.statement_timeout

    @abstractmethod
    def open(self, budget: Budget, watchdog: Watchdog) -> Session:
        """Connect read-only within ``budget``, handing ``watchdog`` the connection's
        socket; raise :class:`DatabaseError` or :class:`DriverMissing`."""

    def run(self) -> list[Result]:
        budget = Budget.of(self.timeout, self.config.statement_timeout)
        with Watchdog(budget.deadline) as watchdog:
            return self._run(budget, watchdog)

    def _run(self, budget: Budget, watchdog: Watchdog) -> list[Result]:
        started = time.monotonic()
        try:
            session = self.open(budget, watchdog)
        except DriverMissing as exc:
            return [Result(Status.UNKNOWN, self._driver_missing(exc))]
        except DatabaseError as exc:
            if watchdog.fired:  # cut at the deadline: the server never finished the login
                exc = DatabaseError(Problem.TIMEOUT, exc.detail)
            down = Result(Status.CRITICAL, self.connect_failure(exc), CONNECTION)
            return [down, *self._not_measured(f"cannot connect to {self.where()}")]
        try:
            return self._measure(session, time.monotonic() - started, budget, watchdog)
        finally:
            session.close()

    def _measure(self, session: Session, connect_seconds: float, budget: Budget,
                 watchdog: Watchdog) -> list[Result]:
        live = self._liveness(session, connect_seconds, watchdog)
        if live.status is not Status.OK:  # the rest would only repeat it
            return [live, *self._not_measured(f"{self.where()} failed SELECT 1")]
        results = [live]
        for target, measure in self._aspects(session):
            if budget.exhausted():
                results.append(Result(Status.UNKNOWN, f"{target} not measured: the check's "
                                      f"timeout ({self.timeout:g} s) ran out before it; "
                                      "raise `timeout`", target))
            else:
                results.append(self._aspect(target, measure, budget, watchdog))
        return results

    def _aspects(self, session: Session) -> list[tuple[str, Callable[[], Result]]]:
        """What to measure after ``SELECT 1``: (target, measurement), as configured."""
        measures: dict[str, Callable[[], Result]] = {
            "size": partial(self._size, session),
            "replication": partial(self._replication, session),
            **{q.name: partial(self._query, session, q) for q in self.config.queries}}
        return [(target, measures[target]) for target in self._targets()]

    def _not_measured(self, why: str) -> list[Result]:
        """UNKNOWN for every configured target but ``connection``: their incidents stay
        open (a server that is down has not shrunk), and none is taken as gone."""
        return [Result(Status.UNKNOWN, f"{target} not measured: {why}", target)
                for target in self._targets()]

    def _targets(self) -> list[str]:
        """The configured targets besides ``connection``, in the order they are measured."""
        config = self.config
        return [*(["size"] if config.capacity is not None else []),
                *(["replication"] if config.replication is not None else []),
                *(q.name for q in config.queries)]

    # -- the parts of a run ----------------------------------------------------------

    def _liveness(self, session: Session, connect_seconds: float,
                  watchdog: Watchdog) -> Result:
        started = time.monotonic()
        try:
            session.ping()
        except DatabaseError as exc:
            what = "SELECT 1"
            why = _stopped(what, self) if watchdog.fired else _failed(what, exc, self)
            return Result(Status.CRITICAL, self.context.scrub(
                f"{self.where()} accepted the login but {why}"), CONNECTION)
        query_seconds = time.monotonic() - started
        text = (f"{session.version} at {self.location()} answers: database "
                f"{self._database_text()} as {self.config.user}, connect "
                f"{_ms(connect_seconds)}, SELECT 1 {_ms(query_seconds)}")
        return Result(Status.OK, text, CONNECTION,
                      {"connect_seconds": connect_seconds, "query_seconds": query_seconds})

    def _aspect(self, target: str, measure: Callable[[], Result], budget: Budget,
                watchdog: Watchdog) -> Result:
        """``measure()``, or the status its failure deserves."""
        what = "the size query" if target == "size" else \
            "the replication query" if target == "replication" else f"query {target}"
        limit = budget.statement_limit()
        try:
            return measure()
        except DatabaseError as exc:
            if watchdog.fired:
                return Result(Status.CRITICAL, self.context.scrub(_stopped(what, self)), target)
            if exc.problem is Problem.STATEMENT_TIMEOUT and limit < budget.statement_timeout:
                text = (f"{what} did not finish in the {limit:.3g} s left of the check's "
                        f"timeout ({self.timeout:g} s): the server is overloaded or blocked; "
                        "raise `timeout` if it is just slow")
                return Result(Status.CRITICAL, text, target)
            return Result(_aspect_status(exc.problem),
                          self.context.scrub(_failed(what, exc, self)), target)

    def _size(self, session: Session) -> Result:
        capacity = self.config.capacity
        assert capacity is not None
        used = session.size_bytes(self.config.size_of)
        percent = 100.0 * used / capacity
        status = self.config.size.judge(percent)
        what = "all databases use" if self.config.size_of == "server" else \
            f"database {self._database_text()} uses"
        text = (f"{what} {format_bytes(used)} of the {format_bytes(capacity)} capacity "
                f"({_tenths(percent)}%){_breach(status, self.config.size, _percent)}")
        if status.is_problem:
            text += "; free space or raise `capacity` if the disk was grown"
        return Result(status, text, "size", {"size_bytes": float(used),
                                             "capacity_bytes": float(capacity),
                                             "used_percent": percent})

    def _replication(self, session: Session) -> Result:
        replica = session.replication()
        thresholds = self.config.replication
        assert thresholds is not None
        detail = f" ({replica.detail})" if replica.detail else ""
        if replica.broken is not None:
            return Result(Status.CRITICAL, f"{replica.broken}{detail}", "replication")
        if replica.lag is None:
            return Result(Status.UNKNOWN, f"replication lag unknown: the server reports no "
                                          f"lag{detail}", "replication")
        status = thresholds.judge(replica.lag)
        text = (f"replica is {replica.lag:.1f} s behind its primary"
                f"{_breach(status, thresholds, _seconds)}{detail}")
        return Result(status, text, "replication", {"lag_seconds": replica.lag})

    def _query(self, session: Session, query: QueryConfig) -> Result:
        started = time.monotonic()
        rows = session.rows(query.sql)
        seconds = time.monotonic() - started
        value, problem = single_number(rows)
        if value is None:
            return Result(Status.UNKNOWN, f"query {query.name} {problem}; it must return "
                                          "one row with one number", query.name,
                          {"query_seconds": seconds})
        status = query.threshold.judge(value)
        text = (f"{query.name} = {value:g}{_breach(status, query.threshold, _number)} "
                f"(query took {_ms(seconds)})")
        return Result(status, text, query.name, {query.name: value, "query_seconds": seconds})

    # -- words ---------------------------------------------------------------------

    def where(self) -> str:
        """``PostgreSQL at 127.0.0.1:5432`` or ``PostgreSQL at socket /run/postgresql``."""
        return f"{self.product} at {self.location()}"

    def location(self) -> str:
        """``127.0.0.1:5432``, ``[::1]:5432`` or ``socket /run/postgresql``."""
        config = self.config
        if config.socket is not None:
            return f"socket {config.socket}"
        host = f"[{config.host}]" if ":" in config.host else config.host
        return f"{host}:{config.port}"

    def _database_text(self) -> str:
        return self.config.database or "(none)"

    def connect_failure(self, exc: DatabaseError) -> str:
        """The CRITICAL message for a connection that failed."""
        config, where, detail = self.config, self.where(), self.scrub_detail(exc.detail)
        texts = {
            Problem.REFUSED: f"{where} refused the connection ({detail}): the server is down "
                             "or not listening there; start the service or fix `host`/`port`",
            Problem.TIMEOUT: f"{where} did not answer within {self.timeout:g} s (the check's "
                             f"timeout): the server or the network is hung or overloaded",
            Problem.AUTH: f'{where} rejected user "{config.user}": {detail}; check `user` '
                          f"and `password` in the config ({self.auth_hint})",
            Problem.NO_DATABASE: f'database "{config.database}" does not exist on {where} '
                                 f"({detail}); create it or fix `database`",
            Problem.PROTOCOL: f"{where} does not speak the {self.product} protocol "
                              f"({detail}); is `port` the database's port?",
            Problem.TLS: f"TLS to {where} failed ({detail}); check `tls` and `tls_ca`",
            Problem.TOO_MANY: f"{where} accepts no more connections ({detail}); find the "
                              "client holding them or raise the server's connection limit",
        }
        text = texts.get(exc.problem, f"cannot connect to {where}: {detail}")
        return self.context.scrub(text)

    def _driver_missing(self, exc: DriverMissing) -> str:
        return (f"cannot check {self.product}: its Python driver ({exc.module}) is not "
                f'installed; install kanshi[{exc.extra}] (pip install "kanshi[{exc.extra}]")')

    def scrub_detail(self, text: str) -> str:
        """A server's or driver's text without the password (it never should hold it)."""
        password = self.config.password
        # Shorter ones would mangle words; the agent's Redactor skips them too.
        if password is not None and len(password.get_secret_value()) >= 3:
            text = text.replace(password.get_secret_value(), "********")
        return text


def _stopped(what: str, check: DatabaseCheck) -> str:
    """The server went silent: the watchdog cut the connection at the deadline."""
    return (f"the server stopped answering during {what}: no answer within the check's "
            f"timeout ({check.timeout:g} s), the connection was cut; the server is hung "
            "(frozen, swapping, stuck on storage) or the network dropped")


def _failed(what: str, exc: DatabaseError, check: DatabaseCheck) -> str:
    """"<what> …" for a statement that failed, saying what to change."""
    detail, timeout = check.scrub_detail(exc.detail), check.config.statement_timeout
    texts = {
        Problem.STATEMENT_TIMEOUT: f"{what} did not finish within statement_timeout "
                                   f"({timeout:g} s): the server is overloaded or blocked; "
                                   "raise `statement_timeout` if it is just slow",
        Problem.TIMEOUT: f"{what} got no answer within {check.timeout:g} s (the check's "
                         "timeout): the server or the network is hung",
        Problem.LOST: f"the connection was lost during {what} ({detail})",
        Problem.PERMISSION: f"{what} was refused: {detail}; {check.grant_hint}",
        Problem.READ_ONLY: f"{what} tried to write ({detail}); the check runs every "
                           "statement read-only: monitor with a SELECT",
        Problem.BAD_QUERY: f"{what} failed: {detail}; fix the SQL in the config",
    }
    return texts.get(exc.problem, f"{what} failed: {detail}")


def _aspect_status(problem: Problem) -> Status:
    # The server being slow or gone is the server's trouble (CRITICAL); a query
    # the config got wrong or may not run says nothing about the server.
    if problem in (Problem.STATEMENT_TIMEOUT, Problem.TIMEOUT, Problem.LOST):
        return Status.CRITICAL
    return Status.UNKNOWN


def single_number(rows: Sequence[tuple[Any, ...]]) -> tuple[float | None, str]:
    """The one number in ``rows``, or ``None`` and what was wrong (for a message)."""
    if not rows:
        return None, "returned no rows"
    if len(rows) > 1:
        return None, "returned more than one row"
    if len(rows[0]) != 1:
        return None, f"returned {len(rows[0])} columns"
    return _number_of(rows[0][0])


def _number_of(value: Any) -> tuple[float | None, str]:
    if value is None:
        return None, "returned NULL"
    if isinstance(value, bool):
        return None, f"returned a boolean ({str(value).lower()}), not a number"
    if isinstance(value, timedelta):  # an interval is judged in seconds
        return value.total_seconds(), ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    number: float | None = None
    if isinstance(value, int | float | Decimal):
        number = float(value)
    elif isinstance(value, str):  # MySQL status tables hold numbers as text
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        shown = f'"{value[:40]}"' if isinstance(value, str) else type(value).__name__
        return None, f"returned {shown}, not a number"
    return number, ""


def format_bytes(count: int) -> str:
    """``45.6 GiB`` — binary units, one decimal."""
    value, unit = float(count), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if value < 1024 or unit == "EiB":
            break
        value /= 1024
    return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"


def _tenths(percent: float) -> str:
    """One decimal rounded down: 89.96 % must not read as a 90 % threshold reached."""
    return f"{math.floor(percent * 10) / 10:.1f}"


def _breach(status: Status, thresholds: Thresholds, show: Callable[[float], str]) -> str:
    limit = {Status.CRITICAL: thresholds.critical, Status.WARNING: thresholds.warning}
    value = limit.get(status)
    return "" if value is None else f" ≥ {status.name.lower()} {show(value)}"


def _percent(value: float) -> str:
    return f"{value:g}%"


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _number(value: float) -> str:
    return f"{value:g}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def first_line(text: str) -> str:
    """A driver message on one line (libpq adds hints on tab-indented lines)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""
