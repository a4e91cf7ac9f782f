"""A real FTP server on 127.0.0.1 for tests: pyftpdlib in a thread.

::

    with FtpServer() as ftp:
        ...connect to ftp.host:ftp.port, log in as FtpServer.USER / FtpServer.PASSWORD...

The server has its own I/O loop (pyftpdlib's default is a process-wide one) and
answers a wrong password at once (pyftpdlib waits 3 s by default).
"""

from __future__ import annotations

import logging
import tempfile
import threading
from typing import Any

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import FTPServer

from tests.support.http_server import HOST

logger = logging.getLogger(__name__)


class FtpServer:
    """pyftpdlib on 127.0.0.1 with one read-only user.

    ``banner`` replaces the greeting text; pyftpdlib sends one longer than 75
    characters as a multi-line ``220-…`` / ``220 `` reply.
    """

    USER = "kanshi-ftp"
    PASSWORD = "ftp-Secret-Pass-77"

    def __init__(self, *, banner: str | None = None) -> None:
        self.banner = banner
        self.host = HOST
        self.port = 0
        self._home = tempfile.TemporaryDirectory(prefix="kanshi-ftp-")
        self._stop = threading.Event()
        self._server: FTPServer | None = None
        self._thread: threading.Thread | None = None

    def _handler(self) -> type[FTPHandler]:
        authorizer = DummyAuthorizer()
        authorizer.add_user(self.USER, self.PASSWORD, self._home.name, perm="elr")
        attributes: dict[str, Any] = {"authorizer": authorizer, "auth_failed_timeout": 0}
        if self.banner is not None:
            attributes["banner"] = self.banner
        return type("TestFtpHandler", (FTPHandler,), attributes)

    def start(self) -> FtpServer:
        self._stop.clear()
        self._server = FTPServer((self.host, self.port), self._handler(), ioloop=IOLoop())
        self.port = self._server.address[1]
        self._thread = threading.Thread(target=self._serve, args=(self._server,),
                                        name=f"ftp-test-server-{self.port}", daemon=True)
        self._thread.start()
        return self

    def _serve(self, server: FTPServer) -> None:
        # One short poll at a time, so stop() is noticed (serve_forever would log a
        # banner per poll); close_all() here because pyftpdlib is not thread-safe.
        while not self._stop.is_set():
            server.ioloop.loop(0.05, blocking=False)
        server.close_all()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._home.cleanup()
