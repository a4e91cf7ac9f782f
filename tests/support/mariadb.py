"""Throw-away MariaDB servers on 127.0.0.1 for tests (Debian package ``mariadb-server``).

::

    def test_something(mariadb_server: MariadbServer) -> None:
        database = mariadb_server.create_database()             # fresh, uniquely named
        user, password = mariadb_server.create_user(grants=[f"SELECT ON {database}.*"])
        pymysql.connect(**mariadb_server.connect_args(user, password, database))

``mariadb_server`` (session scope) runs ``mariadb-install-db`` and ``mariadbd``
in a temp dir, listening on 127.0.0.1:<free port> and a unix socket in that dir,
with a root password, TLS from a throwaway CA (``server.tls.ca_file``) and a
binary log. ``mariadb_replica`` adds a replica of it (no TLS), replicating
from the primary's position when it was set up: users and databases made on
the primary later reach it too (wait with :meth:`MariadbServer.wait_caught_up`).
Both are stopped and deleted at the end of the session; they get SIGTERM if
pytest dies (``setpriv --pdeathsig``). Durability is off: they hold nothing.
"""

from __future__ import annotations

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

ROOT = "root"
_OPTIONS = ("--skip-name-resolve", "--innodb-buffer-pool-size=16M",
            "--innodb-log-file-size=4M", "--innodb-flush-log-at-trx-commit=0",
            "--sync-binlog=0", "--max-connections=40", "--skip-external-locking",
            "--innodb-fast-shutdown=2")  # nothing to keep: stop without flushing


def unique(prefix: str) -> str:
    """A name no other test in this session uses (databases and users are shared)."""
    return f"{prefix}_{secrets.token_hex(4)}"


class MariadbServer:
    """One server: ``host``, ``port``, ``socket``; user ``root`` with ``password``."""

    def __init__(self, base: Path, *, server_id: int, tls: LoopbackTLS | None) -> None:
        self.base = base
        self.data_dir = base / "data"
        self.socket = base / "mysqld.sock"
        self.host = HOST
        self.port = 0
        self.user = ROOT
        self.password = secrets.token_urlsafe(12)
        self.server_id = server_id
        self.tls = tls
        self.log_file = base / "error.log"
        self._process: subprocess.Popen[bytes] | None = None

    # -- for tests -------------------------------------------------------------

    def connect_args(self, user: str | None = None, password: str | None = None,
                     database: str | None = None) -> dict[str, Any]:
        """``pymysql.connect`` keywords over TCP (root unless told)."""
        return {"host": self.host, "port": self.port, "user": user or self.user,
                "password": self.password if user is None else (password or ""),
                "database": database, "connect_timeout": 5, "read_timeout": 30,
                "autocommit": True}

    def url(self, user: str | None = None, password: str | None = None,
            database: str = "") -> str:
        """``mysql://user:password@127.0.0.1:port/database`` (root unless told)."""
        from urllib.parse import quote

        secret = self.password if user is None else (password or "")
        return (f"mysql://{quote(user or self.user, safe='')}:{quote(secret, safe='')}"
                f"@{self.host}:{self.port}/{database}")

    def connect(self, database: str | None = None) -> Any:
        """A PyMySQL connection as root, autocommit on."""
        import pymysql

        return pymysql.connect(**self.connect_args(database=database))

    def execute(self, sql: str, params: Sequence[Any] | None = None,
                database: str | None = None) -> list[tuple[Any, ...]]:
        """Run one statement as root; its rows ([] when it returns none)."""
        conn = self.connect(database)
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, params)
                return list(cursor.fetchall())
        finally:
            conn.close()

    def create_database(self, name: str | None = None) -> str:
        """A new database (a unique name unless given); returns its name."""
        name = name or unique("db")
        self.execute(f"CREATE DATABASE `{name}`")
        return name

    def create_user(self, name: str | None = None, password: str | None = None, *,
                    grants: Sequence[str] = ()) -> tuple[str, str]:
        """A user for any host with a password and ``grants`` ("SELECT ON db.*")."""
        name, password = name or unique("user"), password or secrets.token_urlsafe(12)
        self.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", [name, password])
        for grant in grants:
            self.execute(f"GRANT {grant} TO %s@'%%'", [name])
        return name, password

    def wait_caught_up(self, primary: MariadbServer, timeout: float = 30.0) -> None:
        """Wait until this replica has applied everything ``primary`` logged so far."""
        [(log_file, position, *_)] = primary.execute("SHOW MASTER STATUS")
        [(done,)] = self.execute("SELECT MASTER_POS_WAIT(%s, %s, %s)",
                                 [log_file, position, timeout])
        if done is None or done < 0:
            raise AssertionError(f"the replica did not reach {log_file}:{position} within "
                                 f"{timeout:g} s ({done}); log: {self.log_file}")

    # -- lifecycle -------------------------------------------------------------

    def init(self) -> None:
        """``mariadb-install-db``: system tables, root@localhost without a password yet."""
        _run(["mariadb-install-db", "--no-defaults", f"--datadir={self.data_dir}",
              f"--user={ROOT}", "--auth-root-authentication-method=normal",
              "--skip-test-db", *_OPTIONS[1:3]], "mariadb-install-db")

    def start(self, *options: str) -> None:
        """Run ``mariadbd`` on a free port; wait for the socket; set the root password."""
        self.port = free_port()
        argv = ["setpriv", "--pdeathsig=TERM", "--", _mariadbd(), "--no-defaults",
                f"--datadir={self.data_dir}", f"--socket={self.socket}",
                f"--port={self.port}", f"--bind-address={HOST}", f"--user={ROOT}",
                f"--pid-file={self.base / 'mysqld.pid'}", f"--log-error={self.log_file}",
                f"--server-id={self.server_id}", *_OPTIONS, *self._tls_options(), *options]
        self._process = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
        wait_for(self._socket_answers, timeout=60, what=f"mariadbd on {self.socket}; "
                                                         f"log: {self.log_file}")
        self._set_root_password()

    def stop(self) -> None:
        """Normal shutdown (SIGTERM), killed if it takes too long."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def replicate_from(self, primary: MariadbServer) -> None:
        """Replicate ``primary`` from its current binary log position."""
        name, password = unique("repl"), secrets.token_urlsafe(12)
        _unlogged(primary, f"CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'",
                  f"GRANT REPLICATION SLAVE ON *.* TO '{name}'@'%'")
        [(log_file, position, *_)] = primary.execute("SHOW MASTER STATUS")
        self.execute("CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USER=%s, "
                     "MASTER_PASSWORD=%s, MASTER_LOG_FILE=%s, MASTER_LOG_POS=%s, "
                     "MASTER_CONNECT_RETRY=1",
                     [primary.host, primary.port, name, password, log_file, position])
        self.execute("START SLAVE")
        self.wait_caught_up(primary)

    def _set_root_password(self) -> None:
        import pymysql

        # Unlogged: a replica set up later must not replay another server's root password.
        conn = pymysql.connect(unix_socket=str(self.socket), user=ROOT, password="")
        try:
            with conn.cursor() as cursor:
                cursor.execute("SET SESSION sql_log_bin = 0")
                cursor.execute("SELECT host FROM mysql.user WHERE user = 'root'")
                for (host,) in cursor.fetchall():
                    if host in ("localhost", "127.0.0.1", "::1"):
                        cursor.execute("ALTER USER 'root'@%s IDENTIFIED BY %s",
                                       [host, self.password])
                    else:  # root@<hostname>: unusable under --skip-name-resolve
                        cursor.execute("DROP USER 'root'@%s", [host])
        finally:
            conn.close()

    def _tls_options(self) -> list[str]:
        if self.tls is None:
            return []
        cert, key = self.base / "server.crt", self.base / "server.key"
        self.tls.server_cert.cert_chain_pems[0].write_to_path(str(cert))
        self.tls.server_cert.private_key_pem.write_to_path(str(key))
        return [f"--ssl-cert={cert}", f"--ssl-key={key}", f"--ssl-ca={self.tls.ca_file}"]

    def _socket_answers(self) -> bool:
        import pymysql

        if self._process is not None and self._process.poll() is not None:
            raise AssertionError(f"mariadbd exited ({self._process.returncode}):\n"
                                 f"{_tail(self.log_file)}")
        if not self.socket.exists():
            return False
        try:
            pymysql.connect(unix_socket=str(self.socket), user=ROOT, password="",
                            connect_timeout=2).close()
        except pymysql.err.OperationalError:
            return False
        return True


def _unlogged(server: MariadbServer, *statements: str) -> None:
    conn = server.connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute("SET SESSION sql_log_bin = 0")
            for statement in statements:
                cursor.execute(statement)
    finally:
        conn.close()


def _mariadbd() -> str:
    for name in ("mariadbd", "mysqld"):
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin")
        if path:
            return path
    pytest.skip("needs `mariadbd` (Debian package mariadb-server); ./test installs it as root")


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{what} failed ({done.returncode}): "
                             f"{(done.stderr or done.stdout)[-2000:]}")


def _tail(path: Path) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-20:])
    except OSError:
        return "(no log)"


def _prerequisites() -> None:
    needs.root()  # mariadbd --user=root, and a server's files in /tmp of our own
    needs.command("setpriv", "util-linux")
    needs.command("mariadb-install-db", "mariadb-server")
    _mariadbd()


def _started(server: MariadbServer, *options: str) -> MariadbServer:
    server.init()
    server.start(*options)
    return server


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariadbServer]:
    """A running server with TLS and a binary log, shared by the whole session."""
    _prerequisites()
    tls = LoopbackTLS()
    server = MariadbServer(Path(tempfile.mkdtemp(prefix="kanshi-mariadb-")), server_id=1,
                           tls=tls)
    try:
        yield _started(server, "--log-bin=binlog", "--binlog-format=ROW")
    finally:
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)
        tls.cleanup()


@pytest.fixture(scope="session")
def mariadb_replica(mariadb_server: MariadbServer) -> Iterator[MariadbServer]:
    """A running replica of ``mariadb_server`` (no TLS), caught up."""
    replica = MariadbServer(Path(tempfile.mkdtemp(prefix="kanshi-mariadb-replica-")),
                            server_id=2, tls=None)
    try:
        _started(replica, "--relay-log=relay", "--skip-slave-start")
        replica.replicate_from(mariadb_server)
        yield replica
    finally:
        replica.stop()
        shutil.rmtree(replica.base, ignore_errors=True)
