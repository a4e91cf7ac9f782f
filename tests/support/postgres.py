"""Throw-away PostgreSQL clusters on 127.0.0.1 for tests (Debian package ``postgresql``).

::

    def test_something(postgres_server: PostgresServer) -> None:
        database = postgres_server.create_database()          # fresh, uniquely named
        user, password = postgres_server.create_user()        # a login role
        psycopg.connect(postgres_server.dsn(database, user, password))

``postgres_server`` (session scope) runs ``initdb`` and ``postgres`` as the
``postgres`` OS user — PostgreSQL refuses to run as root — in a temp dir under
/tmp, listening on 127.0.0.1:<free port> and on a unix socket in that dir, with
scram-sha-256 passwords for every login and TLS from a throwaway CA
(``server.tls.ca_file``). ``postgres_replica`` adds a streaming standby of it
(``pg_basebackup -R``), without TLS. Both are stopped and deleted at the end of
the session; the servers also get SIGTERM if pytest dies (``setpriv
--pdeathsig``). Durability is off (``fsync=off``): these clusters hold nothing.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support import needs
from tests.support.http_server import HOST, LoopbackTLS, free_port
from tests.support.wait import wait_for

PG_ROOT = Path("/usr/lib/postgresql")
OS_USER = "postgres"
SUPERUSER = "postgres"
_SETTINGS = {
    "listen_addresses": HOST, "fsync": "off", "synchronous_commit": "off",
    "full_page_writes": "off", "max_connections": "40", "shared_buffers": "16MB",
    "logging_collector": "off", "lc_messages": "C",
}


def pg_bin() -> Path:
    """The newest installed server binaries, or skip naming the package."""
    found = [p.parent for p in PG_ROOT.glob("*/bin/postgres") if p.parent.parent.name.isdigit()]
    if not found:
        pytest.skip("needs the PostgreSQL server (Debian package postgresql, binaries in "
                    f"{PG_ROOT}/<version>/bin); ./test installs it as root")
    return max(found, key=lambda p: int(p.parent.name))


def _as_os_user(*argv: str | Path) -> list[str]:
    return ["setpriv", f"--reuid={OS_USER}", f"--regid={OS_USER}", "--init-groups",
            "--pdeathsig=TERM", "--", *map(str, argv)]


def unique(prefix: str) -> str:
    """A name no other test in this session uses (databases and roles are shared)."""
    return f"{prefix}_{secrets.token_hex(4)}"


class PostgresServer:
    """One cluster: ``host``, ``port``, ``socket_dir``; superuser ``postgres``/``password``."""

    def __init__(self, base: Path, *, password: str, tls: LoopbackTLS | None) -> None:
        self.base = base
        self.data_dir = base / "data"
        self.socket_dir = base
        self.host = HOST
        self.port = 0
        self.superuser = SUPERUSER
        self.password = password
        self.tls = tls
        self.log_file = base / "server.log"
        self._process: subprocess.Popen[bytes] | None = None

    # -- for tests -------------------------------------------------------------

    def dsn(self, database: str = "postgres", user: str | None = None,
            password: str | None = None) -> str:
        """A libpq key=value connection string (superuser unless told)."""
        from psycopg.conninfo import make_conninfo

        return make_conninfo(host=self.host, port=self.port, dbname=database,
                             user=user or self.superuser,
                             password=self.password if user is None else password,
                             connect_timeout=5)

    @property
    def superuser_dsn(self) -> str:
        return self.dsn()

    def connect(self, database: str = "postgres") -> Any:
        """A psycopg connection as the superuser, autocommit on."""
        import psycopg

        return psycopg.connect(self.dsn(database), autocommit=True)

    def execute(self, sql: str, params: Sequence[Any] | None = None,
                database: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement as the superuser; its rows ([] when it returns none)."""
        with self.connect(database) as conn:
            cursor = conn.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description else []

    def create_database(self, name: str | None = None, owner: str | None = None) -> str:
        """A new database (a unique name unless given); returns its name."""
        from psycopg import sql

        name = name or unique("db")
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if owner:
            statement += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
        self.execute(statement.as_string())
        return name

    def create_user(self, name: str | None = None, password: str | None = None, *,
                    superuser: bool = False, roles: Sequence[str] = ()) -> tuple[str, str]:
        """A login role with a password, member of ``roles``; returns (name, password)."""
        from psycopg import sql

        name, password = name or unique("user"), password or secrets.token_urlsafe(12)
        self.execute(sql.SQL("CREATE ROLE {} LOGIN {} PASSWORD {}").format(
            sql.Identifier(name), sql.SQL("SUPERUSER" if superuser else "NOSUPERUSER"),
            sql.Literal(password)).as_string())
        for role in roles:
            self.execute(sql.SQL("GRANT {} TO {}").format(
                sql.Identifier(role), sql.Identifier(name)).as_string())
        return name, password

    # -- lifecycle -------------------------------------------------------------

    def init(self) -> None:
        """``initdb`` with scram-sha-256 for every login and the superuser password."""
        password_file = self.base / "superuser-password"
        password_file.write_text(self.password)
        _give_to_os_user(password_file)
        _run(_as_os_user(pg_bin() / "initdb", "-D", self.data_dir, "-U", self.superuser,
                         "--auth=scram-sha-256", f"--pwfile={password_file}", "-E", "UTF8",
                         "--locale=C.UTF-8", "--no-sync"), "initdb")
        password_file.unlink()

    def start(self, **settings: str) -> None:
        """Run the server on a free port; wait until it accepts logins."""
        self.port = free_port()
        options = {**_SETTINGS, "port": str(self.port),
                   "unix_socket_directories": str(self.socket_dir), **settings,
                   **self._tls_settings()}
        argv: list[str | Path] = [pg_bin() / "postgres", "-D", self.data_dir]
        for key, value in options.items():
            argv += ["-c", f"{key}={value}"]
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(_as_os_user(*argv), stdout=log,
                                             stderr=subprocess.STDOUT)
        wait_for(self._ready, timeout=30, what=f"PostgreSQL on port {self.port}; "
                                                f"log: {self.log_file}")

    def stop(self) -> None:
        """Fast shutdown (SIGINT: disconnect clients, checkpoint, exit)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def standby(self, base: Path) -> PostgresServer:
        """A streaming standby of this (running) server, initialised in ``base``."""
        replica = PostgresServer(base, password=self.password, tls=None)
        env = {**os.environ, "PGPASSWORD": self.password}
        _run(_as_os_user(pg_bin() / "pg_basebackup", "-h", self.host, "-p", str(self.port),
                         "-U", self.superuser, "-D", replica.data_dir, "-R", "-X", "stream",
                         "--checkpoint=fast", "--no-sync"), "pg_basebackup", env=env)
        return replica

    def _tls_settings(self) -> dict[str, str]:
        if self.tls is None:
            return {"ssl": "off"}
        cert, key = self.base / "server.crt", self.base / "server.key"
        self.tls.server_cert.cert_chain_pems[0].write_to_path(str(cert))
        self.tls.server_cert.private_key_pem.write_to_path(str(key))
        for path in (cert, key):
            _give_to_os_user(path)
        key.chmod(0o600)  # the server refuses a key others can read
        return {"ssl": "on", "ssl_cert_file": str(cert), "ssl_key_file": str(key)}

    def _ready(self) -> bool:
        import psycopg

        if self._process is not None and self._process.poll() is not None:
            raise AssertionError(f"postgres exited ({self._process.returncode}):\n"
                                 f"{_tail(self.log_file)}")
        try:
            self.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True


def _run(argv: list[str], what: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env,
                          check=False)
    if done.returncode != 0:
        raise AssertionError(f"{what} failed ({done.returncode}): {done.stderr[-2000:]}")


def _give_to_os_user(path: Path) -> None:
    entry = pwd.getpwnam(OS_USER)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _tail(path: Path) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-20:])
    except OSError:
        return "(no log)"


def _base_dir(prefix: str) -> Path:
    """A temp dir the ``postgres`` user owns, under /tmp (pytest's dirs are root-only)."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    _give_to_os_user(base)
    return base


def _prerequisites() -> None:
    needs.root()
    needs.command("setpriv", "util-linux")
    pg_bin()
    try:
        pwd.getpwnam(OS_USER)
    except KeyError:
        pytest.skip(f"needs the `{OS_USER}` OS user (Debian package postgresql creates it)")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A running cluster with TLS, shared by the whole session."""
    _prerequisites()
    tls = LoopbackTLS()
    server = PostgresServer(_base_dir("kanshi-pg-"), password=secrets.token_urlsafe(12),
                            tls=tls)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)
        tls.cleanup()


@pytest.fixture(scope="session")
def postgres_replica(postgres_server: PostgresServer) -> Iterator[PostgresServer]:
    """A streaming standby of ``postgres_server`` (no TLS), having replayed a transaction."""
    replica = postgres_server.standby(_base_dir("kanshi-pg-standby-"))
    try:
        replica.start()
        wait_replayed(postgres_server, replica)
        yield replica
    finally:
        replica.stop()
        shutil.rmtree(replica.base, ignore_errors=True)


def wait_replayed(primary: PostgresServer, replica: PostgresServer,
                  timeout: float = 30.0) -> None:
    """Commit a transaction on ``primary`` and wait until ``replica`` has replayed it."""
    primary.execute("CREATE TABLE IF NOT EXISTS kanshi_heartbeat (at timestamptz)")
    primary.execute("INSERT INTO kanshi_heartbeat VALUES (now())")
    # The insert position: with synchronous_commit off the commit may not be written yet.
    [(lsn,)] = primary.execute("SELECT pg_current_wal_insert_lsn()::text")

    def replayed() -> bool:
        rows = replica.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn])
        return bool(rows[0][0])

    wait_for(replayed, timeout=timeout, what=f"the standby to replay up to {lsn}")
