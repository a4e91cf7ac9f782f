"""The client side of line protocols (FTP, SMTP, POP3, IMAP) and what their checks share.

One check watches one endpoint, ``host:port``, which is also the result's
``target``. A run is one session under one deadline (the check's ``timeout``):

- :class:`Dialogue` connects (plain or implicit TLS), reads reply lines and sends
  commands, upgrades with STARTTLS; every blocking call gets what is left of the
  deadline, so a server that drips a byte a second cannot stretch a run.
- Anything that goes wrong becomes a :class:`Failure` whose reason is what a
  person needs first: ``refused``, ``timed out after 10 s (no greeting)``,
  ``unexpected greeting "SSH-2.0-OpenSSH_9.2"`` — plus a hint on what to do.
- :class:`DialogueCheck` turns a session into a :class:`Result`: CRITICAL with
  the reason when the dialogue failed, otherwise the total time against
  ``response_time`` and, after TLS, the certificate's time left against
  ``certificate_expiry``.

Metrics: ``connect_seconds`` — until the channel is ready: the TCP connect, plus
the TLS handshake with implicit TLS (``security: ssl``); ``response_seconds`` —
the dialogue after that (greeting, commands, a STARTTLS handshake), up to the last
reply judged (the closing QUIT is a courtesy and not timed); ``total_seconds`` —
the sum, which ``response_time`` judges; ``certificate_expires_in_seconds``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import ssl
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    model_validator,
)
from pydantic_core import PydanticCustomError

from checks.base import Check, CheckConfig, CheckContext, Result, Status, worst
from checks.types import DurationThresholds, OptionalDuration, expected_error, parse_duration

logger = logging.getLogger(__name__)

Security = Literal["none", "starttls", "ssl"]

#: A reply line longer than this is not a line protocol talking (RFC 5321 §4.5.3.1.5
#: allows 512 octets for SMTP replies; IMAP greetings with capabilities stay far below).
MAX_LINE = 8192
#: Lines of one multi-line reply we accept before calling it garbage.
MAX_REPLY_LINES = 200
#: Longest piece of a server's words quoted in a message.
QUOTE_CHARS = 80
#: How long the closing QUIT/LOGOUT may wait for its reply.
GOODBYE_WAIT = 1.0


# -- config ----------------------------------------------------------------------------


def _host(value: str) -> str:
    host = value.strip().removeprefix("[").removesuffix("]")  # "[::1]" as in URLs
    if not host or any(c.isspace() or c in "/@" for c in host):
        raise expected_error("a host name or IP address such as mail.example.jp or "
                             "127.0.0.1", value)
    return host


def _one_line(value: str) -> str:
    # A line break would let a config value inject commands into the dialogue.
    if any(c in value for c in "\r\n\0"):
        raise PydanticCustomError("kanshi", "expected one line without line breaks")
    return value


def _one_line_secret(value: SecretStr) -> SecretStr:
    _one_line(value.get_secret_value())
    return value


Host = Annotated[str, AfterValidator(_host)]
Port = Annotated[int, Field(ge=1, le=65535)]
Line = Annotated[str, AfterValidator(_one_line)]
SecretLine = Annotated[SecretStr, AfterValidator(_one_line_secret)]


class ExpiryThresholds(BaseModel):
    """Time left before a certificate expires: ``{warning: 30d, critical: 7d}`` or a bare ``7d``.

    Less time left is worse, so the order is the reverse of :class:`checks.types.Thresholds`;
    a level is reached when *less* than its value remains (as ``check_http -C``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    warning: OptionalDuration = None
    critical: OptionalDuration = None

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, value: Any) -> Any:
        return value if isinstance(value, dict) else {"critical": parse_duration(value)}

    @model_validator(mode="after")
    def _ordered(self) -> ExpiryThresholds:
        if self.warning is not None and self.critical is not None \
                and self.warning < self.critical:
            raise PydanticCustomError(
                "kanshi", "expected warning ({w}) not below critical ({c})",
                {"w": days(self.warning), "c": days(self.critical)})
        return self

    def judge(self, left: float) -> Status:
        """The status of ``left`` seconds before expiry; an expired certificate is CRITICAL."""
        if left <= 0 or (self.critical is not None and left < self.critical):
            return Status.CRITICAL
        if self.warning is not None and left < self.warning:
            return Status.WARNING
        return Status.OK


DEFAULT_RESPONSE_TIME = DurationThresholds(warning=5.0)
DEFAULT_CERTIFICATE_EXPIRY = ExpiryThresholds(warning=30 * 86400.0, critical=7 * 86400.0)


class DialogueConfig(CheckConfig):
    """Where to talk and how fast the answer must come; ``port`` defaults by protocol."""

    # pydantic would echo a rejected password in its error text.
    model_config = ConfigDict(hide_input_in_errors=True)
    #: Port by ``security`` (``"none"`` alone for protocols without TLS).
    default_ports: ClassVar[dict[str, int]] = {}

    host: Host
    port: Port
    response_time: DurationThresholds = DEFAULT_RESPONSE_TIME

    @model_validator(mode="before")
    @classmethod
    def _default_port(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("port") is None:
            # An unknown security is reported on its own; don't add "port: required".
            port = cls.default_ports.get(str(data.get("security", "none")),
                                         cls.default_ports.get("none"))
            if port is not None:
                data = {**data, "port": port}
        return data


class TlsDialogueConfig(DialogueConfig):
    """A protocol that can run over TLS, implicit (``ssl``) or upgraded (``starttls``)."""

    security: Security = "none"
    verify_tls: bool = True
    ca_file: FilePath | None = None
    """Trust only this CA bundle (PEM) instead of the system store."""
    certificate_expiry: ExpiryThresholds = DEFAULT_CERTIFICATE_EXPIRY


class LoginConfig(CheckConfig):
    """An optional login; username and password come together."""

    username: Line | None = None
    password: SecretLine | None = None

    @model_validator(mode="after")
    def _credentials_paired(self) -> LoginConfig:
        if (self.username is None) != (self.password is None):
            raise PydanticCustomError("kanshi", "expected username and password together")
        return self


def tls_context(verify: bool, ca_file: Path | None) -> ssl.SSLContext:
    """A client context: the system CAs, only ``ca_file`` if given, or no verification."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


# -- failures --------------------------------------------------------------------------


class Failure(Exception):
    """Why a dialogue failed: a short ``reason``, what to do (``hint``) and the status."""

    def __init__(self, reason: str, hint: str = "", status: Status = Status.CRITICAL) -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint
        self.status = status

    def text(self) -> str:
        return f"{self.reason} — {self.hint}" if self.hint else self.reason


def quote(text: str) -> str:
    """``text`` as a short, printable, double-quoted excerpt for a message."""
    shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text[:QUOTE_CHARS])
    return f'"{shown}…"' if len(text) > QUOTE_CHARS else f'"{shown}"'


def unexpected(what: str, line: str, expected: str) -> Failure:
    """A server that answered, but not in the protocol we expect on this port."""
    return Failure(f"unexpected {what} {quote(line)}",
                   f'expected "{expected}"; is another service listening on this port?')


def unavailable(what: str, line: str) -> Failure:
    """A server of the right protocol that turns us away (e.g. ``421 Too many users``)."""
    return Failure(f"service refused in the {what}: {quote(line)}",
                   "the server runs but turns clients away (overloaded, out of "
                   "connections, or blocking this host)")


def rejected(command: str, line: str, hint: str = "") -> Failure:
    """A command the server answered with an error."""
    return Failure(f"{command} refused: {quote(line)}", hint)


def login_rejected(user: str, line: str) -> Failure:
    """A login the server said no to (the reply never holds the password we sent)."""
    return Failure(f"login as {user} rejected: {quote(line)}",
                   "check username and password in the config, and whether the "
                   "account is locked")


def tls_failure(exc: Exception, timeout: float) -> Failure:
    """A TLS handshake that did not succeed, worded by cause."""
    if isinstance(exc, TimeoutError):
        return Failure(f"timed out after {timeout:g} s (TLS handshake)",
                       "the server never completed the handshake")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Failure(f"TLS certificate rejected: {exc.verify_message}",
                       "renew or fix the server's certificate, or point ca_file at the CA "
                       "that signed it (verify_tls: false skips verification)")
    if isinstance(exc, ssl.SSLEOFError | ConnectionResetError):
        return Failure("connection closed during the TLS handshake",
                       "is TLS spoken on this port? (security: ssl is TLS from the first "
                       "byte, starttls upgrades a plain session)")
    reason = exc.reason if isinstance(exc, ssl.SSLError) and exc.reason else str(exc)
    return Failure(f"TLS handshake failed: {reason}",
                   "is TLS spoken on this port? (security: ssl is TLS from the first "
                   "byte, starttls upgrades a plain session)")


def connect_failure(exc: OSError, host: str, port: int, timeout: float) -> Failure:
    """A TCP connect that did not succeed, worded by cause."""
    if isinstance(exc, ConnectionRefusedError):
        return Failure("refused", f"nothing listens on port {port}; is the service running?")
    if isinstance(exc, TimeoutError):
        return Failure(f"timed out after {timeout:g} s (connecting)",
                       "no answer to the connection attempt: a firewall dropping packets, "
                       "the host down, or the server's connection queue full")
    if isinstance(exc, socket.gaierror):
        return Failure(f"cannot resolve {host}: {exc.strerror}",
                       "check the host name and DNS", Status.UNKNOWN)
    return Failure(f"cannot connect: {exc.strerror or exc}")


# -- connecting under a deadline --------------------------------------------------------

#: ``socket.getaddrinfo``'s answer: (family, type, proto, canonname, sockaddr) tuples.
Addresses = Sequence[tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]]
#: Resolves a host name and port into the addresses to try, in order.
Resolver = Callable[[str, int], Addresses]


def resolve_tcp(host: str, port: int) -> Addresses:
    """The TCP addresses of ``host`` in the system's order (``getaddrinfo``, no timeout:
    the C library offers none; /etc/resolv.conf's ``timeout``/``attempts`` bound it)."""
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def open_connection(host: str, port: int, deadline: float, *,
                    clock: Callable[[], float] = time.monotonic,
                    resolve: Resolver = resolve_tcp) -> socket.socket:
    """A TCP connection to the first address of ``host`` that accepts before ``deadline``
    (on ``clock``), the socket left in blocking mode with a timeout.

    ``socket.create_connection`` gives every address the whole timeout, so a name with
    an IPv6 and an IPv4 address that are both down took twice the check's timeout;
    here each address gets only what is left. Raises ``TimeoutError`` when the deadline
    passed, else the last address's error (``socket.gaierror`` if none resolved).
    """
    error: OSError | None = None
    for family, kind, proto, _, address in resolve(host, port):
        left = deadline - clock()
        if left <= 0:
            break
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(left)
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    if error is None or deadline - clock() <= 0:
        raise TimeoutError("timed out") from error
    raise error


class Watchdog:
    """Shuts sockets down at a deadline, so a call blocked on one returns at once.

    Socket timeouts bound each operation, not a run: a server that trickles bytes,
    or stops answering in the middle of a statement inside a driver that sets no
    timeout, holds the caller as long as it likes. At the deadline every watched
    socket is shut down, which wakes a blocked read with an end of file; the caller
    then asks :attr:`fired` to tell that from a peer that hung up. A duplicate of
    each socket is kept, so the shutdown reaches it after TLS has wrapped it or a
    driver has taken it over, and never hits a reused descriptor.
    """

    def __init__(self, deadline: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.deadline = deadline
        self._clock = clock
        self._fired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    @property
    def fired(self) -> bool:
        """Whether the deadline passed and the sockets were shut down."""
        with self._lock:
            return self._fired

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` down at the deadline (at once if it has passed)."""
        self._add(sock.dup())

    def watch_fd(self, fd: int) -> None:
        """Like :meth:`watch`, for a socket a C library holds (e.g. libpq's)."""
        self._add(socket.socket(fileno=os.dup(fd)))

    def _add(self, copy: socket.socket) -> None:
        with self._lock:
            self._sockets.append(copy)
            if self._fired:
                _shut(copy)

    def _fire(self) -> None:
        with self._lock:
            self._fired = True
            for sock in self._sockets:
                _shut(sock)

    def __enter__(self) -> Watchdog:
        self._timer = threading.Timer(max(0.0, self.deadline - self._clock()), self._fire)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the peer or by its owner
        sock.shutdown(socket.SHUT_RDWR)


# -- the session ----------------------------------------------------------------------


class Dialogue:
    """One client session with a line protocol server, under one deadline."""

    def __init__(self, host: str, port: int, *, timeout: float,
                 resolve: Resolver = resolve_tcp) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.resolve = resolve
        self.connect_seconds: float | None = None
        self.not_after: datetime | None = None
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._started = time.perf_counter()
        self._deadline = self._started + timeout

    def elapsed(self) -> float:
        """Seconds since the session began (before the connect)."""
        return time.perf_counter() - self._started

    def _left(self, waiting_for: str) -> float:
        left = self._deadline - time.perf_counter()
        if left <= 0:
            raise Failure(f"timed out after {self.timeout:g} s ({waiting_for})",
                          _SLOW_HINT)
        return left

    def connect(self, tls: ssl.SSLContext | None = None) -> None:
        """TCP connect, then the TLS handshake when ``tls`` is given (implicit TLS)."""
        self._left("connecting")
        try:
            self._sock = open_connection(self.host, self.port, self._deadline,
                                         clock=time.perf_counter, resolve=self.resolve)
        except OSError as exc:
            raise connect_failure(exc, self.host, self.port, self.timeout) from exc
        if tls is not None:
            self.start_tls(tls)
        self.connect_seconds = self.elapsed()

    def start_tls(self, context: ssl.SSLContext) -> None:
        """The TLS handshake on the open connection (implicit TLS, or after STARTTLS)."""
        assert self._sock is not None
        # Bytes that came before the handshake were not protected; a client that kept
        # them would obey a man in the middle's injected commands (CVE-2011-0411).
        self._buffer = b""
        try:
            self._sock.settimeout(self._left("TLS handshake"))
            self._sock = context.wrap_socket(self._sock, server_hostname=self.host)
        except OSError as exc:
            raise tls_failure(exc, self.timeout) from exc
        self.not_after = certificate_not_after(self._sock)

    def send(self, line: str, command: str) -> None:
        """Send one command line; ``command`` names it in errors (never its arguments)."""
        assert self._sock is not None
        logger.debug("%s:%d <- %s", self.host, self.port, command)
        try:
            self._sock.settimeout(self._left(f"sending {command}"))
            self._sock.sendall(line.encode() + b"\r\n")
        except OSError as exc:
            raise Failure(f"connection lost sending {command}: {exc.strerror or exc}") from exc

    def read_line(self, what: str) -> str:
        """The next reply line without its CRLF; ``what`` names it in errors ("greeting")."""
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_LINE:
                raise unexpected(what, self._decode(self._buffer), "a short reply line")
            chunk = self._recv(what)
            if not chunk:
                if self._buffer:  # a last line without line end still tells who speaks
                    line, self._buffer = self._buffer, b""
                    return self._decode(line)
                raise Failure(f"connection closed by the server (no {what})",
                              "the port accepts connections but the server hangs up at "
                              "once: crashed worker, connection limit, or access rules")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return self._decode(line)

    def _recv(self, what: str) -> bytes:
        assert self._sock is not None
        try:
            self._sock.settimeout(self._left(f"no {what}"))
            return self._sock.recv(4096)
        except TimeoutError as exc:
            raise Failure(f"timed out after {self.timeout:g} s (no {what})",
                          "the port accepts connections but the server never answered: "
                          "hung or overloaded (raise the check's timeout if it is just "
                          "slow)") from exc
        except ssl.SSLError as exc:
            raise Failure(f"TLS error (no {what}): {exc.reason or exc}") from exc
        except OSError as exc:
            raise Failure(f"connection lost (no {what}): {exc.strerror or exc}") from exc

    @staticmethod
    def _decode(line: bytes) -> str:
        return line.rstrip(b"\r\n").decode("utf-8", "replace")

    def goodbye(self, line: str) -> None:
        """Say goodbye (QUIT, LOGOUT) and wait briefly for the answer; errors don't count."""
        try:
            self._deadline = min(self._deadline, time.perf_counter() + GOODBYE_WAIT)
            self.send(line, line.split()[-1])
            self.read_line(f"reply to {line}")
        except Failure:
            logger.debug("%s:%d: no clean goodbye", self.host, self.port)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


_SLOW_HINT = "the server is too slow for the check's timeout (raise it if that is expected)"


def read_coded_reply(talk: Dialogue, what: str, expected: str) -> tuple[int, list[str]]:
    """An FTP/SMTP reply: its code and lines, ``220-…`` continued up to ``220 …``.

    RFC 959 §4.2 and RFC 5321 §4.2: a multi-line reply ends with the line that
    starts with the same code and a space (FTP lets the lines between say anything).
    """
    first = talk.read_line(what)
    match = _CODED.match(first)
    if match is None:
        raise unexpected(what, first, expected)
    code, lines = match.group(1), [first]
    if match.group(2) == "-":
        while True:
            line = talk.read_line(what)
            lines.append(line)
            if line.startswith(f"{code} ") or line == code:
                break
            if len(lines) > MAX_REPLY_LINES:
                raise unexpected(what, first, f"{code} … within {MAX_REPLY_LINES} lines")
    return int(code), lines


_CODED = re.compile(r"^([1-5]\d\d)([ -]|$)")


def certificate_not_after(sock: ssl.SSLSocket) -> datetime | None:
    """When the peer's certificate expires, or None if it cannot be read.

    A verified certificate comes decoded from :mod:`ssl`; with verification off
    :mod:`ssl` hands out only DER, which the optional ``cryptography`` package reads.
    """
    decoded = sock.getpeercert()
    if decoded and "notAfter" in decoded:
        return datetime.fromtimestamp(ssl.cert_time_to_seconds(str(decoded["notAfter"])), UTC)
    der = sock.getpeercert(binary_form=True)
    if not der:
        return None
    try:
        from cryptography import x509
    except ImportError:
        logger.info("certificate expiry not read: verify_tls is false and the Python "
                    "package cryptography is not installed")
        return None
    try:
        return x509.load_der_x509_certificate(der).not_valid_after_utc
    except ValueError:  # a certificate cryptography cannot parse: no expiry, no crash
        logger.info("certificate expiry not read: the server's certificate did not parse")
        return None


# -- judging ----------------------------------------------------------------------------


def label(host: str, port: int) -> str:
    """``host:port``, with IPv6 addresses in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def failed(target: str, protocol: str, failure: Failure,
           connect_seconds: float | None) -> Result:
    """The result of a dialogue that went wrong."""
    metrics = {} if connect_seconds is None else {"connect_seconds": connect_seconds}
    return Result(failure.status, f"{target} {protocol}: {failure.text()}", target, metrics)


def timing(total: float, connect: float, thresholds: DurationThresholds) -> tuple[Status, str]:
    """``total`` judged: ``in 3.1 ms (connect 0.2 ms)``, ``slowly in 6 s (warning at 5 s; …)``."""
    status = thresholds.judge(total)
    level = thresholds.critical if status is Status.CRITICAL else thresholds.warning
    reached = f"{status.name.lower()} at {seconds(level)}; " if status.is_problem and level \
        else ""
    slowly = "slowly " if status.is_problem else ""
    return status, f"{slowly}in {seconds(total)} ({reached}connect {seconds(connect)})"


def judge_certificate(not_after: datetime, now: datetime,
                      thresholds: ExpiryThresholds) -> tuple[Status, str, float]:
    """Status, wording and seconds left of a certificate expiring at ``not_after``."""
    left = (not_after - now).total_seconds()
    status = thresholds.judge(left)
    if left <= 0:
        return status, f"TLS certificate expired {days(-left)} ago ({not_after:%Y-%m-%d})", left
    text = f"TLS certificate expires in {days(left)} ({not_after:%Y-%m-%d})"
    level = thresholds.critical if status is Status.CRITICAL else thresholds.warning
    if status.is_problem and level is not None:
        text += f" ({status.name.lower()} under {days(level)}, renew it)"
    return status, text, left


def seconds(value: float) -> str:
    """A duration for people: ``45 µs``, ``0.18 ms``, ``14 ms``, ``2.5 s``."""
    if value >= 1:
        return f"{value:.3g} s" if value < 100 else f"{value:.0f} s"
    ms = value * 1000
    if ms < 0.1:
        return f"{value * 1e6:.0f} µs"
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


def days(value: float) -> str:
    """Whole days (rounded down) for people: ``1 day``, ``29 days``, ``under a day``."""
    whole = int(value // 86400)
    return "under a day" if whole < 1 else f"{whole} day{'s' if whole != 1 else ''}"


# -- the check ---------------------------------------------------------------------------


class DialogueCheck(Check):
    """A line-protocol check: subclasses say how to :meth:`converse`."""

    protocol: ClassVar[str]
    #: What ends the session politely (``QUIT``; IMAP: a tagged ``LOGOUT``).
    goodbye_command: ClassVar[str] = "QUIT"
    default_interval: ClassVar[float] = 600.0  # SPEC §1: service ports every 10 min
    default_timeout: ClassVar[float] = 10.0    # monitoring-plugins check_tcp & co.

    def __init__(self, name: str, config: CheckConfig, *, timeout: float,
                 context: CheckContext, resolve: Resolver = resolve_tcp) -> None:
        super().__init__(name, config, timeout=timeout, context=context)
        self.resolve = resolve

    @abstractmethod
    def converse(self, talk: Dialogue) -> list[str]:
        """Greet, log in, …; return notes for the message or raise :class:`Failure`."""

    def run(self) -> Result:
        config: DialogueConfig = self.config  # type: ignore[assignment]
        target = label(config.host, config.port)
        talk = Dialogue(config.host, config.port, timeout=self.timeout, resolve=self.resolve)
        try:
            talk.connect(self._implicit_tls())
            notes = self.converse(talk)
            total = talk.elapsed()
            talk.goodbye(self.goodbye_command)
        except Failure as failure:
            return failed(target, self.shown_protocol, failure, talk.connect_seconds)
        finally:
            talk.close()
        return self._judge(target, talk, notes, total)

    @property
    def shown_protocol(self) -> str:
        """``SMTP``, or ``SMTP over TLS`` with implicit TLS."""
        security = getattr(self.config, "security", "none")
        return f"{self.protocol} over TLS" if security == "ssl" else self.protocol

    def tls(self) -> ssl.SSLContext:
        """The client TLS context the config asks for."""
        config: TlsDialogueConfig = self.config  # type: ignore[assignment]
        return tls_context(config.verify_tls, config.ca_file)

    def _implicit_tls(self) -> ssl.SSLContext | None:
        return self.tls() if getattr(self.config, "security", "none") == "ssl" else None

    def _judge(self, target: str, talk: Dialogue, notes: list[str], total: float) -> Result:
        config: DialogueConfig = self.config  # type: ignore[assignment]
        connect = talk.connect_seconds or 0.0
        metrics = {"connect_seconds": connect, "response_seconds": total - connect,
                   "total_seconds": total}
        status, took = timing(total, connect, config.response_time)
        statuses = [status]
        head = f"{target} answers {self.shown_protocol} {took}"
        if talk.not_after is not None and isinstance(config, TlsDialogueConfig):
            status, text, left = judge_certificate(talk.not_after, self.context.clock.now(),
                                                   config.certificate_expiry)
            statuses.append(status)
            metrics["certificate_expires_in_seconds"] = left
            notes = [*notes, text] if not status.is_problem else [text, *notes]
        return Result(worst(statuses), f"{head}: {'; '.join(notes)}", target, metrics)
