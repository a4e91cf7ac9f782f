"""Real servers on 127.0.0.1 for tests: an HTTP server, a raw TCP peer, TLS certificates.

* :class:`HttpServer` — ``http.server.ThreadingHTTPServer`` in a thread; records
  every request and answers from a programmable queue of :class:`Reply`.
* :class:`RawTcpServer` — a TCP listener that answers with fixed bytes (garbage
  instead of HTTP) or never speaks at all (a hung peer).
* :class:`SilentListener` — a port whose accept queue is full, so a connect to it
  times out as to a host behind a firewall that drops packets.
* :class:`LoopbackTLS` — a throwaway trustme CA and a certificate for
  127.0.0.1/localhost; the SMTP test server uses it too.

All of them restart on the same port, for "down for a while, then back" tests::

    with HttpServer() as server:
        server.respond(Reply(503), Reply(200))
        ...
        server.stop(); ...; server.start()   # same server.url
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import tempfile
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (a moment ago)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class LoopbackTLS:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost.

    ``ca_file`` is the CA in PEM, for clients that verify. Two instances are two
    unrelated CAs: a client trusting one must reject the other's server.
    """

    def __init__(self) -> None:
        self.ca = trustme.CA()
        self.server_cert = self.ca.issue_cert(HOST, "localhost")
        self._dir = tempfile.TemporaryDirectory(prefix="kanshi-tls-")
        self.ca_file = Path(self._dir.name) / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def server_context(self) -> ssl.SSLContext:
        """A context for the server side, presenting the loopback certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_cert.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only this CA."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def cleanup(self) -> None:
        self._dir.cleanup()


@dataclass(frozen=True)
class Reply:
    """What the server answers to one request; ``delay`` seconds before answering.

    ``head_drip`` / ``body_drip``: seconds between the bytes of the status line and
    headers / of the body, sent one at a time (a server trickling its answer).
    ``length=False`` sends no Content-Length: the body ends when the connection closes.
    """

    status: int = 200
    body: bytes | str = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    head_drip: float = 0.0
    body_drip: float = 0.0
    length: bool = True


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it; header names are lower-case."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # a client that stalls mid-request must not pin a thread forever

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        owner = self.server.owner
        reply = owner._record(RecordedRequest(self.command, self.path, headers, body))
        if reply.delay and owner._stopping.wait(reply.delay):
            return  # stopping: don't answer a client that long gave up
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        body = reply.body.encode() if isinstance(reply.body, str) else reply.body
        headers = dict(reply.headers)
        if reply.length and "content-length" not in {name.lower() for name in headers}:
            headers["Content-Length"] = str(len(body))
        if not reply.length:
            self.close_connection = True
        if reply.head_drip:
            self._drip(self._head(reply.status, headers), reply.head_drip)
        else:
            self.send_response(reply.status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
        if self.command != "HEAD":
            self._drip(body, reply.body_drip)

    def _head(self, status: int, headers: dict[str, str]) -> bytes:
        reason = self.responses.get(status, ("",))[0]
        lines = [f"{self.protocol_version} {status} {reason}",
                 *(f"{name}: {value}" for name, value in headers.items())]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _drip(self, data: bytes, pause: float) -> None:
        """Write ``data``, one byte every ``pause`` seconds when ``pause`` is set."""
        if not pause:
            self.wfile.write(data)
            return
        for byte in data:
            if self.server.owner._stopping.wait(pause):
                return
            self.wfile.write(bytes([byte]))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("http test server: %s", format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: HttpServer, port: int) -> None:
        self.owner = owner
        super().__init__((HOST, port), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or refuse our certificate hang up mid-request.
        logger.debug("http test server: error with %s", client_address, exc_info=True)


class HttpServer:
    """A real HTTP(S) server on 127.0.0.1 that records requests.

    Replies come from the queue filled by :meth:`respond`, then ``default``.
    """

    def __init__(self, *, tls: LoopbackTLS | None = None, port: int = 0,
                 default: Reply | None = None) -> None:
        self.tls = tls
        self.port = port
        self.default = default or Reply(200)
        self._replies: deque[Reply] = deque()
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234`` (append a path)."""
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def respond(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, in order."""
        with self._lock:
            self._replies.extend(replies)

    def _record(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self._requests.append(request)
            return self._replies.popleft() if self._replies else self.default

    def start(self) -> HttpServer:
        """Listen (on the same port as before after a :meth:`stop`)."""
        self._stopping.clear()
        httpd = _Server(self, self.port)
        if self.tls is not None:
            # Handshake in the handler thread, not in accept(): a stuck client
            # must not block the whole server.
            httpd.socket = self.tls.server_context().wrap_socket(
                httpd.socket, server_side=True, do_handshake_on_connect=False)
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"http-test-server-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening; the port is free until :meth:`start`."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RawTcpServer:
    """A TCP peer that is not a well-behaved server.

    With ``reply`` it reads what the client sends first, answers ``reply`` and
    hangs up (a "malformed HTTP response"). With ``reply=None`` it accepts and
    never says a word (a hung SMTP or HTTP server).
    """

    def __init__(self, reply: bytes | None = None, *, port: int = 0) -> None:
        self.reply = reply
        self.port = port
        self._listener: socket.socket | None = None
        self._held: list[socket.socket] = []
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> RawTcpServer:
        self._listener = socket.create_server((HOST, self.port))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, args=(self._listener,),
                                        name=f"raw-test-server-{self.port}", daemon=True)
        self._thread.start()
        return self

    def _serve(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # the listener was closed by stop()
            if self.reply is None:
                self._held.append(conn)
                continue
            self._answer(conn, self.reply)

    @staticmethod
    def _answer(conn: socket.socket, reply: bytes) -> None:
        with conn:
            conn.settimeout(1.0)
            try:
                conn.recv(65536)
                conn.sendall(reply)
            except OSError:
                pass  # the client gave up first; nothing to test here

    def stop(self) -> None:
        if self._listener is None:
            return
        # shutdown() wakes the accept() in the serving thread; close() alone may not.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for conn in self._held:
            conn.close()
        self._held.clear()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._listener = self._thread = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> RawTcpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SilentListener:
    """A port on ``host`` where connecting times out: its accept queue is full.

    It listens with a backlog of 0, lets one connection in and never accepts it;
    the kernel then drops further SYNs (no RST), so a client's ``connect()`` waits
    until its own timeout — what a firewall that drops packets does, with no
    system change. ``host`` may be ``::1``; two listeners can share one ``port``.
    """

    def __init__(self, host: str = HOST, port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.host = host
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.bind((host, port))
        self._listener.listen(0)
        self.port = int(self._listener.getsockname()[1])
        self._filler = socket.create_connection((host, self.port), timeout=5)

    def close(self) -> None:
        self._filler.close()
        self._listener.close()

    def __enter__(self) -> SilentListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
