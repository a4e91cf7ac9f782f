"""The ``postgres`` check (and the config/judging it shares with ``mysql``).

Real runs go against a throw-away PostgreSQL 15 cluster and a streaming standby
of it (tests/support/postgres.py), started once per session on 127.0.0.1.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import sys
import textwrap
import threading
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import checks
from agent.clock import SystemClock
from agent.config import ConfigError, load_config
from agent.runner import grace
from agent.secrets import Redactor
from agent.service import build_check
from checks.base import CheckContext, LocalResources, Result, Status
from checks.database import format_bytes, parse_byte_size, single_number
from checks.postgres import PostgresCheck, PostgresConfig
from tests.support.http_server import HOST, LoopbackTLS, RawTcpServer, SilentListener, free_port
from tests.support.postgres import PostgresServer, unique, wait_replayed
from tests.support.wait import wait_for

# The session fixtures (until tests/conftest.py lists tests.support.postgres as a plugin).

GiB = 1024**3


def config(**options: Any) -> PostgresConfig:
    return PostgresCheck.Config.model_validate({"user": "kanshi", **options})  # type: ignore[return-value]


def make(server: PostgresServer | None = None, timeout: float = 10.0,
         **options: Any) -> PostgresCheck:
    """A check of ``server`` as its superuser unless ``options`` say otherwise."""
    base: dict[str, Any] = {"user": "postgres"}
    if server is not None:
        base = {"host": server.host, "port": server.port, "user": server.superuser,
                "password": server.password}
    return PostgresCheck("db", config(**{**base, **options}), timeout=timeout,
                         context=CheckContext(clock=SystemClock()))


def run(check: PostgresCheck) -> dict[str, Result]:
    results = check.execute()
    by_target = {r.target: r for r in results}
    assert len(by_target) == len(results), "one result per target"
    return by_target


# -- config (shared with mysql) ------------------------------------------------------


def test_defaults_follow_spec_and_check_pgsql() -> None:
    cfg = config()
    assert (PostgresCheck.type_name, PostgresCheck.default_interval,
            PostgresCheck.default_timeout) == ("postgres", 600.0, 10.0)
    assert (cfg.host, cfg.port, cfg.database, cfg.tls) == ("localhost", 5432, "postgres",
                                                           "prefer")
    assert (cfg.statement_timeout, cfg.capacity, cfg.replication, cfg.queries) == \
        (5.0, None, None, ())
    assert (cfg.size.warning, cfg.size.critical, cfg.size_of) == (80.0, 90.0, "database")


@pytest.mark.parametrize(("given", "size"), [
    pytest.param(1048576, 1048576, id="bare-bytes"),
    pytest.param("50GiB", 50 * GiB, id="gibibytes"),
    pytest.param("50 GB", 50 * 10**9, id="si-gigabytes"),
    pytest.param("1.5tib", int(1.5 * 1024**4), id="case-and-decimals"),
    pytest.param("512KiB", 512 * 1024, id="kibibytes"),
    pytest.param("300B", 300, id="explicit-bytes"),
])
def test_capacity_reads_si_and_iec_units(given: Any, size: int) -> None:
    assert parse_byte_size(given) == size
    assert config(capacity=given).capacity == size


@pytest.mark.parametrize(("options", "where", "says"), [
    pytest.param({"capacity": "50G"}, "capacity", 'a size such as 50GiB, 500MB or 2TiB '
                 '(bytes when a bare number), got "50G"', id="ambiguous-unit"),
    pytest.param({"capacity": 0}, "capacity", "at least 1 byte, got 0", id="zero-capacity"),
    pytest.param({"capacity": True}, "capacity", "got true", id="boolean-capacity"),
    pytest.param({"port": 0}, "port", "a TCP port from 1 to 65535, got 0", id="port-zero"),
    pytest.param({"port": "5432"}, "port", 'got "5432"', id="port-as-text"),
    pytest.param({"tls": "on"}, "tls", 'one of disable, prefer, require, verify-ca, '
                 'verify-full, got "on"', id="unknown-tls-mode"),
    pytest.param({"tls": "verify-full"}, "", "expected tls_ca", id="verify-without-ca"),
    pytest.param({"size_of": "cluster"}, "size_of", 'database or server, got "cluster"',
                 id="unknown-size-scope"),
    pytest.param({"statement_timeout": 0}, "statement_timeout", "greater than 0",
                 id="statement-timeout-zero"),
    pytest.param({"replication": {"warning": "10m", "critical": "1m"}}, "replication",
                 "expected warning (600) not above critical (60)", id="lag-upside-down"),
    pytest.param({"queries": [{"name": "jobs", "sql": "SELECT 1"},
                              {"name": "jobs", "sql": "SELECT 2"}]},
                 "queries", 'expected each query name once, got "jobs" twice',
                 id="duplicate-query"),
    pytest.param({"queries": [{"name": "size", "sql": "SELECT 1"}]}, "queries.0.name",
                 "a name other than connection, size or replication",
                 id="query-named-like-a-target"),
    pytest.param({"queries": [{"name": "Stuck Jobs", "sql": "SELECT 1"}]},
                 "queries.0.name", "a lower-case name such as stuck_jobs",
                 id="query-name-with-space"),
    pytest.param({"queries": [{"name": "jobs", "sql": ""}]}, "queries.0.sql",
                 "at least 1 character", id="empty-sql"),
    pytest.param({"queries": [{"name": "jobs", "sql": "SELECT 1", "threshold": {"warn": 1}}]},
                 "queries.0.threshold.warn", "Extra inputs are not permitted",
                 id="threshold-typo"),
    pytest.param({"capcity": "1GiB"}, "capcity", "Extra inputs are not permitted",
                 id="unknown-key"),
])
def test_bad_config_is_refused_with_its_path(options: dict[str, Any], where: str,
                                             says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        config(**options)
    errors = caught.value.errors()
    assert [".".join(map(str, e["loc"])) for e in errors] == [where]
    assert says in errors[0]["msg"]


def test_the_password_never_shows_in_the_config() -> None:
    cfg = config(password="hunter2-secret")
    assert "hunter2-secret" not in repr(cfg) and "hunter2-secret" not in str(cfg)


def test_the_loader_refuses_a_timeout_shorter_than_the_statement_timeout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(checks.REGISTRY, "postgres", "checks.postgres:PostgresCheck")
    path = tmp_path / "kanshi.yaml"
    path.write_text(textwrap.dedent("""\
        agent: {name: host1, state_dir: state}
        checks:
          - {name: db, type: postgres, user: kanshi, statement_timeout: 5s, timeout: 2s}
        """), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert "expected at least 5 s" in str(caught.value)


# -- judging a query's answer ------------------------------------------------------


@pytest.mark.parametrize(("rows", "value", "problem"), [
    pytest.param([(5,)], 5.0, "", id="integer"),
    pytest.param([(Decimal("2.5"),)], 2.5, "", id="numeric"),
    pytest.param([(" 42 ",)], 42.0, "", id="number-as-text"),
    pytest.param([(b"7",)], 7.0, "", id="number-as-bytes"),
    pytest.param([(timedelta(minutes=3),)], 180.0, "", id="interval-in-seconds"),
    pytest.param([], None, "returned no rows", id="no-rows"),
    pytest.param([(1,), (2,)], None, "returned more than one row", id="two-rows"),
    pytest.param([(1, 2)], None, "returned 2 columns", id="two-columns"),
    pytest.param([(None,)], None, "returned NULL", id="null"),
    pytest.param([("abc",)], None, 'returned "abc", not a number', id="text"),
    pytest.param([(True,)], None, "returned a boolean (true), not a number",
                 id="boolean"),
    pytest.param([(float("nan"),)], None, "not a number", id="nan"),
])
def test_a_query_must_return_exactly_one_number(rows: list[tuple[Any, ...]],
                                                value: float | None, problem: str) -> None:
    got, why = single_number(rows)
    assert got == value
    assert problem in why


def test_sizes_read_in_binary_units() -> None:
    assert [format_bytes(n) for n in (512, 1536, 50 * GiB)] == ["512 B", "1.5 KiB",
                                                                  "50.0 GiB"]


# -- a real server -----------------------------------------------------------------

@pytest.mark.real
def test_a_healthy_server_answers_select_1(postgres_server: PostgresServer) -> None:
    results = run(make(postgres_server))
    assert list(results) == ["connection"]
    live = results["connection"]
    assert live.status is Status.OK, live.message
    assert live.message.startswith("PostgreSQL 15.")
    assert f"at 127.0.0.1:{postgres_server.port} answers: database postgres as postgres" \
        in live.message
    assert 0 < live.metrics["connect_seconds"] < 10
    assert 0 < live.metrics["query_seconds"] < 10


@pytest.mark.real
def test_it_connects_through_the_unix_socket(postgres_server: PostgresServer) -> None:
    live = run(make(postgres_server, socket=str(postgres_server.socket_dir)))["connection"]
    assert live.status is Status.OK, live.message
    assert f"at socket {postgres_server.socket_dir} answers" in live.message


@pytest.mark.real
def test_tls_verify_full_trusts_the_configured_ca(postgres_server: PostgresServer) -> None:
    assert postgres_server.tls is not None
    live = run(make(postgres_server, tls="verify-full",
                    tls_ca=str(postgres_server.tls.ca_file)))["connection"]
    assert live.status is Status.OK, live.message


@pytest.mark.real
def test_a_certificate_from_another_ca_is_critical(postgres_server: PostgresServer) -> None:
    other = LoopbackTLS()
    try:
        live = run(make(postgres_server, tls="verify-full",
                        tls_ca=str(other.ca_file)))["connection"]
    finally:
        other.cleanup()
    assert live.status is Status.CRITICAL
    assert live.message.startswith(f"TLS to PostgreSQL at 127.0.0.1:{postgres_server.port} "
                                   "failed (")
    assert "certificate verify failed" in live.message
    assert live.message.endswith("check `tls` and `tls_ca`")


@pytest.mark.real
def test_tls_required_of_a_server_without_tls_is_critical(
        postgres_replica: PostgresServer) -> None:
    live = run(make(postgres_replica, tls="require"))["connection"]
    assert live.status is Status.CRITICAL
    assert "TLS to PostgreSQL" in live.message and "does not support SSL" in live.message


@pytest.mark.real
def test_a_closed_port_is_critical_refused() -> None:
    port = free_port()
    live = run(make(host="127.0.0.1", port=port, password="x"))["connection"]
    assert (live.status, live.message) == (
        Status.CRITICAL,
        f"PostgreSQL at 127.0.0.1:{port} refused the connection (Connection refused): the "
        "server is down or not listening there; start the service or fix `host`/`port`")


@pytest.mark.real
def test_a_missing_socket_is_critical_refused(tmp_path: Path) -> None:
    live = run(make(socket=str(tmp_path)))["connection"]
    assert live.status is Status.CRITICAL
    assert live.message.startswith(f"PostgreSQL at socket {tmp_path} refused the connection "
                                   "(No such file or directory)")


@pytest.mark.real
def test_a_hung_server_is_critical_after_the_timeout() -> None:
    with RawTcpServer() as hung:  # accepts, never says a word
        live = run(make(host="127.0.0.1", port=hung.port, password="x", timeout=2))["connection"]
    assert (live.status, live.message) == (
        Status.CRITICAL,
        f"PostgreSQL at 127.0.0.1:{hung.port} did not answer within 2 s (the check's "
        "timeout): the server or the network is hung or overloaded")
    assert live.duration < 8


@pytest.mark.real
@pytest.mark.parametrize("tls", ["prefer", "disable"])
def test_a_server_speaking_another_protocol_is_critical(tls: str) -> None:
    with RawTcpServer(b"220 mail.example ESMTP ready\r\n") as smtp_like:
        live = run(make(host="127.0.0.1", port=smtp_like.port, password="x", tls=tls))["connection"]
    assert live.status is Status.CRITICAL
    assert live.message.startswith(f"PostgreSQL at 127.0.0.1:{smtp_like.port} does not "
                                   "speak the PostgreSQL protocol (")
    assert live.message.endswith("is `port` the database's port?")


@pytest.mark.real
def test_a_wrong_password_is_critical_and_names_the_user_not_the_password(
        postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture) -> None:
    user, _ = postgres_server.create_user()
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-password-4711"
    live = run(make(postgres_server, user=user, password=wrong))["connection"]
    assert (live.status, live.message) == (
        Status.CRITICAL,
        f'PostgreSQL at 127.0.0.1:{postgres_server.port} rejected user "{user}": password '
        f'authentication failed for user "{user}"; check `user` and `password` in the config '
        "(and the server's pg_hba.conf for this user and address)")
    assert wrong not in caplog.text


@pytest.mark.real
def test_an_unknown_user_is_critical_as_a_rejected_login(
        postgres_server: PostgresServer) -> None:
    live = run(make(postgres_server, user="nobody_here"))["connection"]
    assert live.status is Status.CRITICAL
    assert 'rejected user "nobody_here"' in live.message


@pytest.mark.real
def test_a_missing_database_is_critical(postgres_server: PostgresServer) -> None:
    live = run(make(postgres_server, database="no_such_db"))["connection"]
    assert (live.status, live.message) == (
        Status.CRITICAL,
        f'database "no_such_db" does not exist on PostgreSQL at 127.0.0.1:'
        f'{postgres_server.port} (database "no_such_db" does not exist); create it or fix '
        "`database`")


@pytest.mark.real
def test_without_psycopg_it_is_unknown_and_says_what_to_install(
        postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # A fake: the driver is installed here, so its absence is simulated.
    monkeypatch.setitem(sys.modules, "psycopg", None)
    live = run(make(postgres_server))[""]
    assert (live.status, live.message) == (
        Status.UNKNOWN,
        "cannot check PostgreSQL: its Python driver (psycopg) is not installed; install "
        'kanshi[postgres] (pip install "kanshi[postgres]")')


@pytest.mark.real
def test_a_dual_stack_name_that_is_down_takes_one_timeout_not_two() -> None:
    with SilentListener("::1") as v6, SilentListener(HOST, v6.port):
        port = v6.port
        check = PostgresCheck("db", config(host="db.example", port=port, password="x"),
                              timeout=2.5, context=CheckContext(clock=SystemClock()),
                              resolve=lambda host, at: [
                                  (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port)),
                                  (socket.AF_INET, socket.SOCK_STREAM, 6, "", (HOST, port))])
        live = run(check)["connection"]

    assert (live.status, live.message) == (
        Status.CRITICAL,
        f"PostgreSQL at db.example:{port} did not answer within 2.5 s (the check's "
        "timeout): the server or the network is hung or overloaded")
    assert live.duration < 2.5 + grace(2.5)


@pytest.mark.real
def test_a_login_refused_on_one_address_is_told_over_a_refused_connection_on_another(
        postgres_server: PostgresServer) -> None:
    """127.0.0.1 answers and rejects the password; ::1 (tried last) refuses."""
    check = PostgresCheck("db", config(host="db.example", port=postgres_server.port,
                                       password="wrong-password-1"),
                          timeout=5.0, context=CheckContext(clock=SystemClock()),
                          resolve=lambda host, at: [
                              (socket.AF_INET, socket.SOCK_STREAM, 6, "", (HOST, at)),
                              (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", at))])

    live = run(check)["connection"]

    assert live.status is Status.CRITICAL
    assert live.message.startswith(f"PostgreSQL at db.example:{postgres_server.port} rejected "
                                   'user "kanshi": password authentication failed')


@pytest.mark.real
def test_a_server_it_cannot_reach_leaves_every_target_unknown_not_gone() -> None:
    port = free_port()
    check = make(host="127.0.0.1", port=port, password="x", capacity="1GiB",
                 replication={"warning": "1m"}, queries=[query("SELECT 1")])

    results = run(check)

    assert {t: r.status for t, r in results.items()} == {
        "connection": Status.CRITICAL, "size": Status.UNKNOWN, "replication": Status.UNKNOWN,
        "jobs": Status.UNKNOWN}
    assert results["connection"].message.startswith(f"PostgreSQL at 127.0.0.1:{port} refused")
    assert results["size"].message == f"size not measured: cannot connect to PostgreSQL at " \
                                      f"127.0.0.1:{port}"


# -- configured queries --------------------------------------------------------------


def query(sql: str, **threshold: float) -> dict[str, Any]:
    return {"name": "jobs", "sql": sql, "threshold": threshold}


@pytest.mark.real
@pytest.mark.parametrize(("sql", "status", "message"), [
    pytest.param("SELECT 5", Status.OK, "jobs = 5 (query took", id="below-warning"),
    pytest.param("SELECT 50::numeric", Status.WARNING, "jobs = 50 ≥ warning 10 (query took",
                 id="warning"),
    pytest.param("SELECT count(*) * 100 FROM generate_series(1, 3)", Status.CRITICAL,
                 "jobs = 300 ≥ critical 100 (query took", id="critical"),
    pytest.param("SELECT interval '2 minutes'", Status.CRITICAL, "jobs = 120 ≥ critical 100",
                 id="interval-in-seconds"),
    pytest.param("SELECT count(*) FROM pg_class WHERE relname LIKE 'pg_%'", Status.CRITICAL,
                 "jobs = ", id="percent-signs-are-plain-sql"),
])
def test_a_query_answer_is_judged_against_its_thresholds(
        postgres_server: PostgresServer, sql: str, status: Status, message: str) -> None:
    results = run(make(postgres_server, queries=[query(sql, warning=10, critical=100)]))
    assert results["connection"].status is Status.OK
    jobs = results["jobs"]
    assert jobs.status is status and jobs.message.startswith(message), jobs.message
    assert set(jobs.metrics) == {"jobs", "query_seconds"}


@pytest.mark.real
@pytest.mark.parametrize(("sql", "why"), [
    pytest.param("SELECT 'many'", 'returned "many", not a number', id="text"),
    pytest.param("SELECT 1 WHERE false", "returned no rows", id="empty"),
    pytest.param("SELECT NULL::int", "returned NULL", id="null"),
    pytest.param("SELECT generate_series(1, 3)", "returned more than one row", id="rows"),
    pytest.param("SELECT 1, 2", "returned 2 columns", id="columns"),
    pytest.param("SELECT true", "returned a boolean (true), not a number", id="boolean"),
])
def test_a_query_without_one_number_is_unknown_with_the_reason(
        postgres_server: PostgresServer, sql: str, why: str) -> None:
    jobs = run(make(postgres_server, queries=[query(sql, critical=1)]))["jobs"]
    assert (jobs.status, jobs.message) == (
        Status.UNKNOWN, f"query jobs {why}; it must return one row with one number")


@pytest.mark.real
def test_a_query_slower_than_the_statement_timeout_is_critical(
        postgres_server: PostgresServer) -> None:
    results = run(make(postgres_server, statement_timeout="300ms",
                       queries=[query("SELECT pg_sleep(3)::text::int")]))
    assert results["connection"].status is Status.OK  # the server itself answers
    assert (results["jobs"].status, results["jobs"].message) == (
        Status.CRITICAL,
        "query jobs did not finish within statement_timeout (0.3 s): the server is "
        "overloaded or blocked; raise `statement_timeout` if it is just slow")


@pytest.mark.real
def test_statements_get_only_what_is_left_of_the_checks_timeout(
        postgres_server: PostgresServer) -> None:
    """Each query fits statement_timeout; together they do not fit the timeout."""
    sleep = "SELECT 1 FROM pg_sleep(1.2)"
    check = make(postgres_server, timeout=2.0, statement_timeout="1.5s",
                 queries=[{"name": name, "sql": sleep} for name in ("first", "second", "third")])

    results = run(check)

    assert [results[t].status for t in ("connection", "first", "second", "third")] == \
        [Status.OK, Status.OK, Status.CRITICAL, Status.UNKNOWN]
    assert re.fullmatch(r"query second did not finish in the [\d.]+ s left of the check's "
                        r"timeout \(2 s\): the server is overloaded or blocked; raise "
                        r"`timeout` if it is just slow", results["second"].message)
    assert results["third"].message == ("third not measured: the check's timeout (2 s) ran "
                                        "out before it; raise `timeout`")
    assert results["third"].duration < 2.0 + grace(2.0)


@pytest.mark.real
def test_a_server_that_stops_answering_mid_query_is_critical_within_the_timeout(
        postgres_server: PostgresServer) -> None:
    """The backend running the query is frozen (SIGSTOP): a real hang, no answer, no
    error; libpq alone would wait for ever."""
    marker = unique("hang")
    check = make(postgres_server, timeout=3.0, statement_timeout="2500ms", queries=[
        {"name": "stuck", "sql": f"SELECT 1 FROM pg_sleep(2) /* {marker} */"}])
    done: list[Result] = []
    worker = threading.Thread(target=lambda: done.extend(check.execute()), daemon=True)
    worker.start()
    backend = running_query(postgres_server, marker)

    os.kill(backend, signal.SIGSTOP)
    try:
        worker.join(3.0 + grace(3.0))
        hung = worker.is_alive()
    finally:
        os.kill(backend, signal.SIGCONT)
    worker.join(10)

    assert not hung, "the run outlasted its timeout"
    results = {r.target: r for r in done}
    assert results["connection"].status is Status.OK
    assert results["stuck"].status is Status.CRITICAL
    assert results["stuck"].message.startswith(
        "the server stopped answering during query stuck: no answer within the check's "
        "timeout (3 s)")


def running_query(server: PostgresServer, marker: str) -> int:
    """The pid of the backend running the statement that holds ``marker``."""
    found: list[int] = []

    def active() -> bool:
        found[:] = [pid for (pid,) in server.execute(
            "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s "
            "AND pid <> pg_backend_pid()", [f"%{marker}%"])]
        return bool(found)

    wait_for(active, timeout=10, what=f"the query {marker} to run")
    return found[0]


@pytest.mark.real
def test_a_broken_query_is_unknown_and_does_not_spoil_the_next(
        postgres_server: PostgresServer) -> None:
    results = run(make(postgres_server, queries=[
        {"name": "broken", "sql": "SELEC 1"}, {"name": "fine", "sql": "SELECT 1"}]))
    assert results["broken"].status is Status.UNKNOWN
    assert results["broken"].message.startswith(
        'query broken failed: syntax error at or near "SELEC"; fix the SQL in the config')
    assert results["fine"].status is Status.OK


@pytest.mark.real
@pytest.mark.parametrize(("sql", "says"), [
    pytest.param("INSERT INTO victim VALUES (1) RETURNING 1", "tried to write",
                 id="insert"),
    pytest.param("SELECT 1; DROP TABLE victim", "cannot insert multiple commands",
                 id="a-second-statement"),
    pytest.param("WITH gone AS (DELETE FROM victim RETURNING 1) SELECT count(*) FROM gone",
                 "tried to write", id="writable-cte"),
])
def test_a_query_cannot_change_the_database(postgres_server: PostgresServer, sql: str,
                                            says: str) -> None:
    database = postgres_server.create_database()
    postgres_server.execute("CREATE TABLE victim (n int)", database=database)
    postgres_server.execute("INSERT INTO victim VALUES (0)", database=database)
    result = run(make(postgres_server, database=database,
                      queries=[{"name": "sneaky", "sql": sql}]))["sneaky"]
    assert result.status is Status.UNKNOWN and says in result.message, result.message
    assert postgres_server.execute("SELECT count(*) FROM victim", database=database) == [(1,)]


# -- size against capacity -----------------------------------------------------------


@pytest.fixture(scope="module")
def filled_database(postgres_server: PostgresServer) -> str:
    """A database holding a table of 10,000 rows."""
    database = postgres_server.create_database()
    postgres_server.execute("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v "
                            "FROM generate_series(1, 10000) g", database=database)
    # Vacuumed now, so autovacuum adds no visibility-map files while the tests measure.
    postgres_server.execute("VACUUM ANALYZE t", database=database)
    postgres_server.execute("CHECKPOINT")
    return database


@pytest.mark.real
def test_a_database_over_its_capacity_is_critical(postgres_server: PostgresServer,
                                                  filled_database: str) -> None:
    size = run(make(postgres_server, database=filled_database, capacity="1MiB"))["size"]
    [(expected,)] = postgres_server.execute("SELECT pg_database_size(%s)", [filled_database])
    assert size.status is Status.CRITICAL
    assert size.metrics["size_bytes"] == expected
    assert size.metrics["capacity_bytes"] == 1024**2
    assert size.metrics["used_percent"] == pytest.approx(100 * expected / 1024**2)
    assert size.message == (
        f"database {filled_database} uses {format_bytes(expected)} of the 1.0 MiB capacity "
        f"({int(100 * expected / 1024**2 * 10) / 10:.1f}%) ≥ critical 90%; free space or "
        "raise `capacity` if the disk was grown")


@pytest.mark.real
def test_the_size_agrees_with_the_files_on_disk(postgres_server: PostgresServer,
                                                filled_database: str) -> None:
    # pg_database_size adds up the files of base/<oid>; so does `du --apparent-size`.
    import subprocess

    size = run(make(postgres_server, database=filled_database, capacity="1TiB"))["size"]
    [(oid,)] = postgres_server.execute("SELECT oid FROM pg_database WHERE datname = %s",
                                       [filled_database])
    folder = postgres_server.data_dir / "base" / str(oid)
    du = subprocess.run(["du", "-s", "-b", "--apparent-size", str(folder)],
                        capture_output=True, text=True, check=True)
    on_disk = int(du.stdout.split()[0]) - folder.stat().st_size  # du counts the folder too
    assert size.status is Status.OK
    assert size.metrics["size_bytes"] == on_disk


@pytest.mark.real
def test_a_warning_comes_before_the_capacity_is_reached(postgres_server: PostgresServer,
                                                        filled_database: str) -> None:
    [(used,)] = postgres_server.execute("SELECT pg_database_size(%s)", [filled_database])
    capacity = int(used / 0.85)  # 85 % used: over warning 80, under critical 90
    size = run(make(postgres_server, database=filled_database, capacity=capacity))["size"]
    assert size.status is Status.WARNING
    assert re.search(r" \(8[5-9]\.\d%\) ≥ warning 80%; ", size.message), size.message


@pytest.mark.real
def test_the_server_scope_counts_every_database(postgres_server: PostgresServer,
                                                filled_database: str) -> None:
    [(total,)] = postgres_server.execute("SELECT sum(pg_database_size(oid)) FROM pg_database")
    size = run(make(postgres_server, capacity="1TiB", size_of="server"))["size"]
    assert size.status is Status.OK
    assert size.message.startswith("all databases use ")
    # Other tests may create databases meanwhile: at least what we saw, same order.
    assert total <= size.metrics["size_bytes"] < total + 64 * 1024**2


@pytest.mark.real
def test_a_size_the_user_may_not_read_is_unknown_with_what_to_grant(
        postgres_server: PostgresServer) -> None:
    locked = postgres_server.create_database()
    postgres_server.execute(f'REVOKE CONNECT ON DATABASE "{locked}" FROM PUBLIC')
    user, password = postgres_server.create_user()
    size = run(make(postgres_server, user=user, password=password, capacity="1TiB",
                    size_of="server"))["size"]
    assert size.status is Status.UNKNOWN
    assert size.message == (
        f"the size query was refused: permission denied for database {locked}; grant the "
        "monitoring user the pg_monitor role (GRANT pg_monitor TO <user>) or the right to "
        "read it")
    postgres_server.execute(f'GRANT pg_monitor TO "{user}"')
    size = run(make(postgres_server, user=user, password=password, capacity="1TiB",
                    size_of="server"))["size"]
    assert size.status is Status.OK, size.message


# -- replication --------------------------------------------------------------------


@pytest.mark.real
def test_a_primary_asked_for_its_lag_says_it_is_not_a_standby(
        postgres_server: PostgresServer) -> None:
    results = run(make(postgres_server, replication={"warning": "30s", "critical": "5m"}))
    assert results["connection"].status is Status.OK
    assert (results["replication"].status, results["replication"].message) == (
        Status.CRITICAL,
        "the server is not a standby (pg_is_in_recovery() is false): it may have been "
        "promoted to primary; remove `replication` if this server is meant to be a primary")


@pytest.mark.real
def test_a_streaming_standby_that_replayed_everything_has_no_lag(
        postgres_server: PostgresServer, postgres_replica: PostgresServer) -> None:
    wait_replayed(postgres_server, postgres_replica)
    lag = run(make(postgres_replica, replication="1m"))["replication"]
    assert (lag.status, lag.message, lag.metrics) == (
        Status.OK, "replica is 0.0 s behind its primary (all WAL received is replayed)",
        {"lag_seconds": 0.0})


@pytest.mark.real
def test_a_standby_that_stopped_replaying_is_judged_on_its_lag(
        postgres_server: PostgresServer, postgres_replica: PostgresServer) -> None:
    wait_replayed(postgres_server, postgres_replica)
    postgres_replica.execute("SELECT pg_wal_replay_pause()")
    try:
        wait_for(lambda: postgres_replica.execute(
            "SELECT pg_get_wal_replay_pause_state() = 'paused'")[0][0], what="replay paused")
        postgres_server.execute("INSERT INTO kanshi_heartbeat VALUES (now())")
        [(lsn,)] = postgres_server.execute("SELECT pg_current_wal_insert_lsn()::text")
        wait_for(lambda: postgres_replica.execute(
            "SELECT pg_last_wal_receive_lsn() >= %s::pg_lsn", [lsn])[0][0],
            what="the standby to receive the new WAL")
        lag = run(make(postgres_replica,
                       replication={"warning": "1ms", "critical": "1h"}))["replication"]
    finally:
        postgres_replica.execute("SELECT pg_wal_replay_resume()")
    assert lag.status is Status.WARNING, lag.message
    assert 0 < lag.metrics["lag_seconds"] < 600
    assert lag.message.startswith("replica is ")
    assert " s behind its primary ≥ warning 0.001 s (last transaction replayed " in lag.message


@pytest.mark.real
def test_a_monitoring_user_without_pg_read_all_stats_still_sees_the_lag(
        postgres_server: PostgresServer, postgres_replica: PostgresServer) -> None:
    user, password = postgres_server.create_user()  # replicated to the standby
    wait_replayed(postgres_server, postgres_replica)
    lag = run(make(postgres_replica, user=user, password=password,
                   replication="1m"))["replication"]
    assert lag.status is Status.OK, lag.message


@pytest.mark.real
def test_a_standby_cut_off_from_its_primary_is_critical(
        postgres_server: PostgresServer, postgres_replica: PostgresServer) -> None:
    [(conninfo,)] = postgres_replica.execute("SELECT current_setting('primary_conninfo')")
    nowhere = f"host=127.0.0.1 port={free_port()} user=postgres"
    try:
        postgres_replica.execute(f"ALTER SYSTEM SET primary_conninfo = '{nowhere}'")
        postgres_replica.execute("SELECT pg_reload_conf()")
        wait_for(lambda: not postgres_replica.execute("SELECT 1 FROM pg_stat_wal_receiver"),
                 what="the WAL receiver to stop")
        lag = run(make(postgres_replica, replication="1m"))["replication"]
    finally:
        quoted = conninfo.replace("'", "''")
        postgres_replica.execute(f"ALTER SYSTEM SET primary_conninfo = '{quoted}'")
        postgres_replica.execute("SELECT pg_reload_conf()")
    assert lag.status is Status.CRITICAL
    assert lag.message.startswith(
        "the standby is not streaming from its primary (no WAL receiver in "
        "pg_stat_wal_receiver): check primary_conninfo and the primary; last transaction "
        "replayed "), lag.message
    wait_for(lambda: postgres_replica.execute(
        "SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming'"),
        what="the WAL receiver to stream again")


# -- through the agent's loader -------------------------------------------------------


@pytest.mark.real
def test_a_configured_check_runs_through_the_loader(
        postgres_server: PostgresServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(checks.REGISTRY, "postgres", "checks.postgres:PostgresCheck")
    user, password = postgres_server.create_user(roles=["pg_monitor"])
    path = tmp_path / "kanshi.yaml"
    path.write_text(textwrap.dedent(f"""\
        agent: {{name: host1, state_dir: state}}
        checks:
          - name: appdb
            type: postgres
            host: 127.0.0.1
            port: {postgres_server.port}
            user: {user}
            password: "${{DB_PASSWORD}}"
            capacity: 50GiB
            queries:
              - {{name: connections, sql: "SELECT count(*) FROM pg_stat_activity",
                 threshold: {{warning: 30, critical: 38}}}}
        """), encoding="utf-8")
    loaded = load_config(path, environ={"DB_PASSWORD": password})
    [spec] = loaded.enabled_checks
    assert (spec.interval, spec.timeout) == (600.0, 10.0)
    check = build_check(spec, SystemClock(), LocalResources(), Redactor(loaded.secrets()))
    results = {r.target: r for r in check.execute()}
    assert [results[t].status for t in ("connection", "size", "connections")] == [Status.OK] * 3
    assert results["size"].metrics["capacity_bytes"] == 50 * GiB
