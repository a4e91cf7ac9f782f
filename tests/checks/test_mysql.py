"""The ``mysql`` check against MariaDB 10.11 (Debian's mariadb-server).

Real runs go against a throw-away MariaDB server and a replica of it
(tests/support/mariadb.py), started once per session on 127.0.0.1. The config
and judging shared with ``postgres`` are tested in test_postgres.py.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent.clock import SystemClock
from agent.runner import grace
from checks.base import CheckContext, Result, Status
from checks.database import Budget, format_bytes
from checks.dialogue import Watchdog
from checks.mysql import MysqlCheck, MysqlConfig, _version
from tests.support.http_server import HOST, LoopbackTLS, RawTcpServer, SilentListener, free_port
from tests.support.mariadb import MariadbServer, unique
from tests.support.smtp_server import SmtpServer
from tests.support.wait import wait_for

# The session fixtures (until tests/conftest.py lists tests.support.mariadb as a plugin).


def config(**options: Any) -> MysqlConfig:
    return MysqlCheck.Config.model_validate({"user": "kanshi", **options})  # type: ignore[return-value]


def make(server: MariadbServer | None = None, timeout: float = 10.0,
         **options: Any) -> MysqlCheck:
    """A check of ``server`` as root unless ``options`` say otherwise."""
    base: dict[str, Any] = {"user": "root"}
    if server is not None:
        base = {"host": server.host, "port": server.port, "user": server.user,
                "password": server.password}
    return MysqlCheck("db", config(**{**base, **options}), timeout=timeout,
                      context=CheckContext(clock=SystemClock()))


def run(check: MysqlCheck) -> dict[str, Result]:
    results = check.execute()
    by_target = {r.target: r for r in results}
    assert len(by_target) == len(results), "one result per target"
    return by_target


def query(sql: str, **threshold: float) -> dict[str, Any]:
    return {"name": "jobs", "sql": sql, "threshold": threshold}


# -- config --------------------------------------------------------------------------


def test_defaults_follow_spec_and_check_mysql() -> None:
    cfg = config()
    assert (MysqlCheck.type_name, MysqlCheck.default_interval,
            MysqlCheck.default_timeout) == ("mysql", 600.0, 10.0)
    assert (cfg.host, cfg.port, cfg.database, cfg.tls, cfg.statement_timeout) == (
        "localhost", 3306, None, "prefer", 5.0)


def test_a_capacity_needs_a_database_or_the_server_scope() -> None:
    with pytest.raises(ValidationError) as caught:
        config(capacity="10GiB")
    assert "expected `database` to measure against `capacity`, or size_of: server" in \
        caught.value.errors()[0]["msg"]
    assert config(capacity="10GiB", size_of="server").capacity == 10 * 1024**3
    assert config(capacity="10GiB", database="app").database == "app"


@pytest.mark.parametrize(("info", "version"), [
    pytest.param("5.5.5-10.11.18-MariaDB-0+deb12u1-log", "MariaDB 10.11.18", id="mariadb"),
    pytest.param("10.6.16-MariaDB", "MariaDB 10.6.16", id="mariadb-plain"),
    pytest.param("8.0.36", "MySQL 8.0.36", id="mysql"),
    pytest.param("8.4.0-commercial", "MySQL 8.4.0", id="mysql-suffix"),
])
def test_the_server_names_its_flavour_and_version(info: str, version: str) -> None:
    assert _version(info) == version


# -- a real server -----------------------------------------------------------------


@pytest.mark.real
def test_a_healthy_server_answers_select_1(mariadb_server: MariadbServer) -> None:
    results = run(make(mariadb_server))
    assert list(results) == ["connection"]
    live = results["connection"]
    assert live.status is Status.OK, live.message
    assert live.message.startswith("MariaDB 10.11.") and \
        f"at 127.0.0.1:{mariadb_server.port} answers: database (none) as root" in live.message
    assert 0 < live.metrics["connect_seconds"] < 10
    assert 0 < live.metrics["query_seconds"] < 10


@pytest.mark.real
def test_it_connects_through_the_unix_socket(mariadb_server: MariadbServer) -> None:
    live = run(make(mariadb_server, socket=str(mariadb_server.socket)))["connection"]
    assert live.status is Status.OK, live.message
    assert f"at socket {mariadb_server.socket} answers" in live.message


@pytest.mark.real
def test_tls_verify_full_trusts_the_configured_ca(mariadb_server: MariadbServer) -> None:
    assert mariadb_server.tls is not None
    check = make(mariadb_server, tls="verify-full", tls_ca=str(mariadb_server.tls.ca_file))
    assert run(check)["connection"].status is Status.OK
    budget = Budget.of(10.0, 5.0)
    with Watchdog(budget.deadline) as watchdog:
        session = check.open(budget, watchdog)
        try:  # the server agrees the session is encrypted
            [(_, cipher)] = session._fetch("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        finally:
            session.close()
    assert cipher


@pytest.mark.real
def test_a_certificate_from_another_ca_is_critical(mariadb_server: MariadbServer) -> None:
    other = LoopbackTLS()
    try:
        live = run(make(mariadb_server, tls="verify-full", tls_ca=str(other.ca_file)))["connection"]
    finally:
        other.cleanup()
    assert live.status is Status.CRITICAL
    assert live.message.startswith(f"TLS to MySQL at 127.0.0.1:{mariadb_server.port} failed")
    assert "CERTIFICATE_VERIFY_FAILED" in live.message
    assert live.message.endswith("check `tls` and `tls_ca`")


@pytest.mark.real
def test_tls_required_of_a_server_without_tls_is_critical(
        mariadb_replica: MariadbServer) -> None:
    live = run(make(mariadb_replica, tls="require"))["connection"]
    assert (live.status, live.message) == (
        Status.CRITICAL,
        f"TLS to MySQL at 127.0.0.1:{mariadb_replica.port} failed (SSL is required but the "
        "server doesn't support it); check `tls` and `tls_ca`")


@pytest.mark.real
def test_a_closed_port_is_critical_refused() -> None:
    port = free_port()
    live = run(make(host="127.0.0.1", port=port, password="x"))["connection"]
    assert (live.status, live.message) == (
        Status.CRITICAL,
        f"MySQL at 127.0.0.1:{port} refused the connection (Connection refused): the server "
        "is down or not listening there; start the service or fix `host`/`port`")


@pytest.mark.real
def test_a_missing_socket_is_critical_refused(tmp_path: Path) -> None:
    live = run(make(socket=str(tmp_path / "mysqld.sock")))["connection"]
    assert live.status is Status.CRITICAL
    assert live.message.startswith(f"MySQL at socket {tmp_path / 'mysqld.sock'} refused the "
                                   "connection")


@pytest.mark.real
def test_a_hung_server_is_critical_after_the_timeout() -> None:
    with RawTcpServer() as hung:  # accepts, never sends its greeting
        live = run(make(host="127.0.0.1", port=hung.port, password="x", timeout=1.5))["connection"]
    assert (live.status, live.message) == (
        Status.CRITICAL,
        f"MySQL at 127.0.0.1:{hung.port} did not answer within 1.5 s (the check's "
        "timeout): the server or the network is hung or overloaded")
    assert live.duration < 8


@pytest.mark.real
def test_a_dual_stack_name_that_is_down_takes_one_timeout_not_two() -> None:
    with SilentListener("::1") as v6, SilentListener(HOST, v6.port):
        port = v6.port
        check = MysqlCheck("db", config(host="db.example", port=port, password="x"),
                           timeout=1.5, context=CheckContext(clock=SystemClock()),
                           resolve=lambda host, at: [
                               (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port)),
                               (socket.AF_INET, socket.SOCK_STREAM, 6, "", (HOST, port))])
        live = run(check)["connection"]

    assert (live.status, live.message) == (
        Status.CRITICAL,
        f"MySQL at db.example:{port} did not answer within 1.5 s (the check's timeout): the "
        "server or the network is hung or overloaded")
    assert live.duration < 1.5 + grace(1.5)


@pytest.mark.real
def test_a_server_it_cannot_reach_leaves_every_target_unknown_not_gone() -> None:
    port = free_port()
    check = make(host="127.0.0.1", port=port, password="x", database="app",
                 capacity="1GiB", replication={"warning": "1m"}, queries=[query("SELECT 1")])

    results = run(check)

    assert {t: r.status for t, r in results.items()} == {
        "connection": Status.CRITICAL, "size": Status.UNKNOWN, "replication": Status.UNKNOWN,
        "jobs": Status.UNKNOWN}
    assert results["jobs"].message == f"jobs not measured: cannot connect to MySQL at " \
                                      f"127.0.0.1:{port}"


@pytest.mark.real
def test_a_server_speaking_another_protocol_is_critical() -> None:
    with SmtpServer() as smtp:  # a real SMTP server: it greets first, as MySQL would
        live = run(make(host=smtp.host, port=smtp.port, password="x"))["connection"]
    assert live.status is Status.CRITICAL
    assert live.message.startswith(f"MySQL at 127.0.0.1:{smtp.port} does not speak the MySQL "
                                   "protocol (")
    assert live.message.endswith("is `port` the database's port?")


@pytest.mark.real
def test_a_wrong_password_is_critical_and_names_the_user_not_the_password(
        mariadb_server: MariadbServer, caplog: pytest.LogCaptureFixture) -> None:
    user, _ = mariadb_server.create_user()
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-password-4711"
    live = run(make(mariadb_server, user=user, password=wrong))["connection"]
    assert (live.status, live.message) == (
        Status.CRITICAL,
        f"MySQL at 127.0.0.1:{mariadb_server.port} rejected user \"{user}\": Access denied "
        f"for user '{user}'@'127.0.0.1' (using password: YES); check `user` and `password` in "
        "the config (and that the user exists for the host kanshi connects from)")
    assert wrong not in caplog.text


@pytest.mark.real
def test_a_missing_database_is_critical(mariadb_server: MariadbServer) -> None:
    live = run(make(mariadb_server, database="no_such_db"))["connection"]
    assert (live.status, live.message) == (
        Status.CRITICAL,
        f'database "no_such_db" does not exist on MySQL at 127.0.0.1:{mariadb_server.port} '
        "(Unknown database 'no_such_db'); create it or fix `database`")


@pytest.mark.real
def test_without_pymysql_it_is_unknown_and_says_what_to_install(
        mariadb_server: MariadbServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # A fake: the driver is installed here, so its absence is simulated.
    monkeypatch.setitem(sys.modules, "pymysql", None)
    live = run(make(mariadb_server))[""]
    assert (live.status, live.message) == (
        Status.UNKNOWN,
        "cannot check MySQL: its Python driver (PyMySQL) is not installed; install "
        'kanshi[mysql] (pip install "kanshi[mysql]")')


# -- configured queries --------------------------------------------------------------


@pytest.mark.real
@pytest.mark.parametrize(("sql", "status", "message"), [
    pytest.param("SELECT 5", Status.OK, "jobs = 5 (query took", id="below-warning"),
    pytest.param("SELECT CAST(50 AS DECIMAL(5,1))", Status.WARNING,
                 "jobs = 50 ≥ warning 10 (query took", id="warning"),
    pytest.param("SELECT variable_value * 0 + 500 FROM information_schema.global_status "
                 "WHERE variable_name = 'UPTIME'", Status.CRITICAL,
                 "jobs = 500 ≥ critical 100", id="critical"),
    pytest.param("SELECT variable_value FROM information_schema.global_variables "
                 "WHERE variable_name = 'MAX_CONNECTIONS'", Status.WARNING,
                 "jobs = 40 ≥ warning 10", id="number-as-text"),
    pytest.param("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name "
                 "LIKE '%schema'", Status.OK, "jobs = 2 ", id="percent-signs-are-plain-sql"),
])
def test_a_query_answer_is_judged_against_its_thresholds(
        mariadb_server: MariadbServer, sql: str, status: Status, message: str) -> None:
    results = run(make(mariadb_server, queries=[query(sql, warning=10, critical=100)]))
    assert results["connection"].status is Status.OK
    jobs = results["jobs"]
    assert jobs.status is status and jobs.message.startswith(message), jobs.message
    assert set(jobs.metrics) == {"jobs", "query_seconds"}


@pytest.mark.real
@pytest.mark.parametrize(("sql", "why"), [
    pytest.param("SELECT 'many'", 'returned "many", not a number', id="text"),
    pytest.param("SELECT 1 FROM DUAL WHERE 1 = 0", "returned no rows", id="empty"),
    pytest.param("SELECT NULL", "returned NULL", id="null"),
    pytest.param("SELECT 1 UNION SELECT 2", "returned more than one row", id="rows"),
    pytest.param("SELECT 1, 2", "returned 2 columns", id="columns"),
])
def test_a_query_without_one_number_is_unknown_with_the_reason(
        mariadb_server: MariadbServer, sql: str, why: str) -> None:
    jobs = run(make(mariadb_server, queries=[query(sql, critical=1)]))["jobs"]
    assert (jobs.status, jobs.message) == (
        Status.UNKNOWN, f"query jobs {why}; it must return one row with one number")


@pytest.mark.real
def test_a_query_slower_than_the_statement_timeout_is_critical(
        mariadb_server: MariadbServer) -> None:
    results = run(make(mariadb_server, statement_timeout="300ms",
                       queries=[query("SELECT SLEEP(3)")]))
    assert results["connection"].status is Status.OK  # the server itself answers
    assert (results["jobs"].status, results["jobs"].message) == (
        Status.CRITICAL,
        "query jobs did not finish within statement_timeout (0.3 s): the server is "
        "overloaded or blocked; raise `statement_timeout` if it is just slow")


@pytest.mark.real
def test_statements_get_only_what_is_left_of_the_checks_timeout(
        mariadb_server: MariadbServer) -> None:
    """Each query fits statement_timeout; together they do not fit the timeout."""
    check = make(mariadb_server, timeout=2.0, statement_timeout="1.5s",
                 queries=[{"name": name, "sql": "SELECT SLEEP(1.2)"}
                          for name in ("first", "second", "third")])

    results = run(check)

    assert [results[t].status for t in ("connection", "first", "second", "third")] == \
        [Status.OK, Status.OK, Status.CRITICAL, Status.UNKNOWN]
    assert results["second"].message.startswith("query second did not finish in the ")
    assert results["third"].message == ("third not measured: the check's timeout (2 s) ran "
                                        "out before it; raise `timeout`")
    assert results["third"].duration < 2.0 + grace(2.0)


@pytest.mark.real
def test_a_server_that_stops_answering_mid_query_is_critical_within_the_timeout(
        mariadb_server: MariadbServer) -> None:
    """The server is frozen (SIGSTOP) while the query runs: a real hang."""
    marker = unique("hang")
    check = make(mariadb_server, timeout=3.0, statement_timeout="2500ms", queries=[
        {"name": "stuck", "sql": f"SELECT SLEEP(2) /* {marker} */"}])
    done: list[Result] = []
    worker = threading.Thread(target=lambda: done.extend(check.execute()), daemon=True)
    worker.start()
    wait_for(lambda: mariadb_server.execute(
        "SELECT id FROM information_schema.processlist WHERE info LIKE %s AND id <> "
        "CONNECTION_ID()", [f"%{marker}%"]), timeout=10, what=f"the query {marker} to run")
    server = int((mariadb_server.base / "mysqld.pid").read_text())

    os.kill(server, signal.SIGSTOP)
    try:
        worker.join(3.0 + grace(3.0))
        hung = worker.is_alive()
    finally:
        os.kill(server, signal.SIGCONT)
    worker.join(10)

    assert not hung, "the run outlasted its timeout"
    results = {r.target: r for r in done}
    assert results["connection"].status is Status.OK
    assert results["stuck"].status is Status.CRITICAL
    assert results["stuck"].message.startswith(
        "the server stopped answering during query stuck: no answer within the check's "
        "timeout (3 s)")


@pytest.mark.real
def test_a_broken_query_is_unknown_and_does_not_spoil_the_next(
        mariadb_server: MariadbServer) -> None:
    results = run(make(mariadb_server, queries=[
        {"name": "broken", "sql": "SELEC 1"}, {"name": "fine", "sql": "SELECT 1"}]))
    assert results["broken"].status is Status.UNKNOWN
    assert results["broken"].message.startswith("query broken failed: You have an error in "
                                                "your SQL syntax")
    assert results["broken"].message.endswith("; fix the SQL in the config")
    assert results["fine"].status is Status.OK


@pytest.mark.real
@pytest.mark.parametrize(("sql", "says"), [
    pytest.param("INSERT INTO victim VALUES (1)", "tried to write", id="insert"),
    pytest.param("SELECT 1; DROP TABLE victim", "error in your SQL syntax",
                 id="a-second-statement"),
    pytest.param("CREATE TABLE intruder (n INT)", "tried to write", id="ddl"),
])
def test_a_query_cannot_change_the_database(mariadb_server: MariadbServer, sql: str,
                                            says: str) -> None:
    database = mariadb_server.create_database()
    mariadb_server.execute("CREATE TABLE victim (n INT)", database=database)
    mariadb_server.execute("INSERT INTO victim VALUES (0)", database=database)
    result = run(make(mariadb_server, database=database,
                      queries=[{"name": "sneaky", "sql": sql}]))["sneaky"]
    assert result.status is Status.UNKNOWN and says in result.message, result.message
    assert mariadb_server.execute("SELECT COUNT(*) FROM victim", database=database) == [(1,)]
    assert mariadb_server.execute("SHOW TABLES", database=database) == [("victim",)]


# -- size against capacity -----------------------------------------------------------


@pytest.fixture(scope="module")
def filled_database(mariadb_server: MariadbServer) -> str:
    """A database holding an InnoDB table of 5,000 rows, statistics up to date."""
    database = mariadb_server.create_database()
    mariadb_server.execute("CREATE TABLE t (id INT PRIMARY KEY, v CHAR(32)) ENGINE=InnoDB",
                           database=database)
    mariadb_server.execute("INSERT INTO t SELECT seq, MD5(seq) FROM seq_1_to_5000",
                           database=database)
    mariadb_server.execute("ANALYZE TABLE t", database=database)
    return database


@pytest.mark.real
def test_a_database_over_its_capacity_is_critical(mariadb_server: MariadbServer,
                                                  filled_database: str) -> None:
    size = run(make(mariadb_server, database=filled_database, capacity="64KiB"))["size"]
    [(expected,)] = mariadb_server.execute(
        "SELECT SUM(data_length + index_length) FROM information_schema.tables "
        "WHERE table_schema = %s", [filled_database])
    assert size.status is Status.CRITICAL
    assert expected > 64 * 1024 and size.metrics["size_bytes"] == expected
    assert size.metrics["used_percent"] == pytest.approx(100 * expected / (64 * 1024))
    assert size.message.startswith(f"database {filled_database} uses "
                                   f"{format_bytes(int(expected))} of the 64.0 KiB capacity (")
    assert size.message.endswith("≥ critical 90%; free space or raise `capacity` if the "
                                 "disk was grown")


@pytest.mark.real
def test_size_under_capacity_is_ok_and_the_server_scope_is_larger(
        mariadb_server: MariadbServer, filled_database: str) -> None:
    one = run(make(mariadb_server, database=filled_database, capacity="1GiB"))["size"]
    every = run(make(mariadb_server, capacity="1GiB", size_of="server"))["size"]
    assert (one.status, every.status) == (Status.OK, Status.OK)
    assert every.metrics["size_bytes"] > one.metrics["size_bytes"] > 0
    assert every.message.startswith("all databases use ")


# -- replication --------------------------------------------------------------------


@pytest.mark.real
def test_a_primary_asked_for_its_lag_says_it_is_not_a_replica(
        mariadb_server: MariadbServer) -> None:
    results = run(make(mariadb_server, replication={"warning": "30s", "critical": "5m"}))
    assert results["connection"].status is Status.OK
    assert (results["replication"].status, results["replication"].message) == (
        Status.CRITICAL,
        "the server is not a replica (SHOW REPLICA STATUS returned nothing): remove "
        "`replication` if this server is a primary")


@pytest.mark.real
def test_a_running_replica_reports_its_lag(mariadb_server: MariadbServer,
                                           mariadb_replica: MariadbServer) -> None:
    mariadb_replica.wait_caught_up(mariadb_server)
    lag = run(make(mariadb_replica, replication="1m"))["replication"]
    assert (lag.status, lag.message, lag.metrics) == (
        Status.OK, "replica is 0.0 s behind its primary (IO thread Yes, SQL thread Yes)",
        {"lag_seconds": 0.0})


@pytest.mark.real
def test_a_replica_whose_io_thread_stopped_is_critical(
        mariadb_server: MariadbServer, mariadb_replica: MariadbServer) -> None:
    mariadb_replica.execute("STOP SLAVE IO_THREAD")
    try:
        lag = run(make(mariadb_replica, replication="1m"))["replication"]
    finally:
        mariadb_replica.execute("START SLAVE IO_THREAD")
    assert (lag.status, lag.message) == (
        Status.CRITICAL,
        "replication is not running: IO thread No, SQL thread Yes; fix the cause, then "
        "START REPLICA (START SLAVE)")
    mariadb_replica.wait_caught_up(mariadb_server)


@pytest.mark.real
def test_a_broken_replica_shows_the_last_sql_error(
        mariadb_server: MariadbServer, mariadb_replica: MariadbServer) -> None:
    database = mariadb_server.create_database()
    mariadb_server.execute("CREATE TABLE t (id INT PRIMARY KEY)", database=database)
    mariadb_replica.wait_caught_up(mariadb_server)
    mariadb_replica.execute("INSERT INTO t VALUES (1)", database=database)  # a conflict
    mariadb_server.execute("INSERT INTO t VALUES (1)", database=database)
    try:
        wait_for(lambda: mariadb_replica.execute("SHOW SLAVE STATUS")[0][11] == "No",
                         what="the SQL thread to stop on the duplicate key")
        lag = run(make(mariadb_replica, replication="1m"))["replication"]
    finally:
        mariadb_replica.execute("STOP SLAVE")
        mariadb_replica.execute("SET GLOBAL sql_slave_skip_counter = 1")
        mariadb_replica.execute("START SLAVE")
    assert lag.status is Status.CRITICAL
    assert lag.message.startswith("replication is not running: IO thread Yes, SQL thread No; "
                                  "last SQL error: ")
    assert "Duplicate entry '1'" in lag.message
    mariadb_replica.wait_caught_up(mariadb_server)


@pytest.mark.real
def test_replica_status_the_user_may_not_read_is_unknown_with_what_to_grant(
        mariadb_server: MariadbServer, mariadb_replica: MariadbServer) -> None:
    user, password = mariadb_server.create_user()  # replicated to the replica
    mariadb_replica.wait_caught_up(mariadb_server)
    results = run(make(mariadb_replica, user=user, password=password, replication="1m"))
    assert results["connection"].status is Status.OK
    lag = results["replication"]
    assert lag.status is Status.UNKNOWN
    assert lag.message.startswith("the replication query was refused: Access denied; you "
                                  "need (at least one of) the SUPER, SLAVE MONITOR "
                                  "privilege(s) for this operation; grant the monitoring user")
    mariadb_server.execute(f"GRANT SLAVE MONITOR ON *.* TO '{user}'@'%'")
    mariadb_replica.wait_caught_up(mariadb_server)
    lag = run(make(mariadb_replica, user=user, password=password,
                   replication="1m"))["replication"]
    assert lag.status is Status.OK, lag.message
