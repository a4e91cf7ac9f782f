"""URL monitoring (SPEC §1 service port http, §2 NTT "URL: response time, response code").

One check watches one URL, which is also the result's ``target``. A run is one
request with a fresh session (no connection reuse across runs, no proxy or
``.netrc`` from the environment), so its time is comparable with
``curl -w '%{time_total}'``. The check's ``timeout`` bounds the whole request —
each address of the host, the TLS handshake, headers and body — not each socket
read as requests' own ``timeout`` does (:class:`Run`); only the name lookup is the
system resolver's to bound. The status is the worst of:

- the HTTP status against ``expected_status`` (default 200–399; a redirect is
  followed only with ``follow_redirects``, then the last answer counts);
- ``body_matches`` / ``body_not_matches`` on the first :data:`MAX_BODY` bytes;
- ``total_seconds`` against ``response_time``;
- for https, the certificate's time left against ``certificate_expiry``.

A refused, silent or wrong-speaking server is CRITICAL with the reason. Messages
are scrubbed of the config's secrets: a page or a Location may echo a token.
Metrics: ``connect_seconds`` (TCP connect plus, for https, the TLS handshake, of
the first connection), ``response_seconds`` (the rest), ``total_seconds``,
``status_code``, ``redirects``, ``certificate_expires_in_seconds``.
"""

from __future__ import annotations

import contextvars
import functools
import http.client
import logging
import re
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, FilePath, model_validator
from pydantic_core import PydanticCustomError

from checks.base import Check, CheckConfig, CheckContext, Result, Scrubber, Status, worst
from checks.dialogue import (
    DEFAULT_CERTIFICATE_EXPIRY,
    DEFAULT_RESPONSE_TIME,
    ExpiryThresholds,
    Failure,
    Line,
    Resolver,
    SecretLine,
    Watchdog,
    certificate_not_after,
    judge_certificate,
    open_connection,
    quote,
    resolve_tcp,
    timing,
)
from checks.types import DurationThresholds, expected_error

if TYPE_CHECKING:
    import requests

logger = logging.getLogger(__name__)

#: Bytes of the body read and searched; the rest is not downloaded.
MAX_BODY = 1024 * 1024
_CHUNK = 64 * 1024
_MAX_REDIRECTS = 30

Method = Literal["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]


# -- config ----------------------------------------------------------------------------


def _url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise expected_error("an http:// or https:// URL such as https://example.jp/health",
                             value)
    if parts.username is not None or parts.password is not None:
        # A password in the URL would be in every message, since the URL is the target.
        raise PydanticCustomError("kanshi", "expected a URL without user:password@; set "
                                  "username and password instead")
    return value.strip()


def _status_ranges(value: Any) -> Any:
    """``[200, "301-302", "2xx"]`` → ``[(200, 200), (301, 302), (200, 299)]``."""
    items = value if isinstance(value, list | tuple) else [value]
    if not items:
        raise expected_error("a list of status codes such as [200, 301-302, 2xx]", value)
    return [_status_range(item) for item in items]


def _status_range(item: Any) -> tuple[int, int]:
    text = str(item).strip().lower() if not isinstance(item, bool) else ""
    if re.fullmatch(r"[1-5]xx", text):
        low, high = int(text[0]) * 100, int(text[0]) * 100 + 99
    elif match := re.fullmatch(r"(\d{3})(?:\s*-\s*(\d{3}))?", text):
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
    else:
        raise expected_error("a status code (200), a range (200-399) or a class (2xx)", item)
    if not 100 <= low <= high <= 599:
        raise expected_error("status codes from 100 to 599, low to high", item)
    return low, high


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise PydanticCustomError("kanshi", "expected a regular expression, got {got}: {why}",
                                  {"got": f'"{value}"', "why": str(exc)}) from None
    return value


def _headers(value: dict[str, str]) -> dict[str, str]:
    for name, text in value.items():
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
            raise expected_error("header names of letters, digits and -", name)
        if any(c in text for c in "\r\n\0"):
            raise PydanticCustomError("kanshi", "expected header values on one line")
    return value


Url = Annotated[str, AfterValidator(_url)]
StatusRanges = Annotated[tuple[tuple[int, int], ...], BeforeValidator(_status_ranges)]
Regex = Annotated[str, AfterValidator(_regex)]
Headers = Annotated[dict[str, str], AfterValidator(_headers)]


class HttpConfig(CheckConfig):
    """Options of a ``type: http`` check (documented in config/example.yaml)."""

    # pydantic would echo a rejected password in its error text.
    model_config = ConfigDict(hide_input_in_errors=True)

    url: Url
    method: Method = "GET"
    headers: Headers = Field(default_factory=dict)
    username: Line | None = None
    password: SecretLine | None = None
    expected_status: StatusRanges = ((200, 399),)
    response_time: DurationThresholds = DEFAULT_RESPONSE_TIME
    body_matches: Regex | None = None
    body_not_matches: Regex | None = None
    follow_redirects: bool = False
    max_redirects: int = Field(default=5, ge=1, le=_MAX_REDIRECTS)
    verify_tls: bool = True
    ca_file: FilePath | None = None
    """Trust only this CA bundle (PEM) instead of the system store."""
    certificate_expiry: ExpiryThresholds = DEFAULT_CERTIFICATE_EXPIRY

    @model_validator(mode="after")
    def _consistent(self) -> HttpConfig:
        if (self.username is None) != (self.password is None):
            raise PydanticCustomError("kanshi", "expected username and password together")
        if self.method == "HEAD" and (self.body_matches or self.body_not_matches):
            raise PydanticCustomError("kanshi", "expected no body_matches/body_not_matches "
                                      "with method HEAD: its answer has no body")
        return self


# -- timing connections ----------------------------------------------------------------


@dataclass(frozen=True)
class Connection:
    """What one new connection of a run took, and its certificate's expiry (https)."""

    seconds: float
    not_after: datetime | None


class Run:
    """One request under one deadline: its connections, and a :class:`Watchdog`.

    requests' ``timeout`` bounds each socket operation, not the request: a server
    that trickles its headers or body a byte at a time, or a TLS handshake that
    crawls, would hold a run for as long as it likes. The watchdog shuts the run's
    sockets down at the deadline, which wakes whatever read is blocked on them.
    """

    def __init__(self, timeout: float, resolve: Resolver) -> None:
        self.watchdog = Watchdog(time.monotonic() + timeout)
        self.resolve = resolve
        self.connections: list[Connection] = []
        #: What the run is waiting for, as a timeout message names it.
        self.phase = "connecting"

    @property
    def deadline(self) -> float:
        return self.watchdog.deadline

    @property
    def fired(self) -> bool:
        return self.watchdog.fired

    def __enter__(self) -> Run:
        self.watchdog.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.watchdog.__exit__(*exc)


#: The current run (set around each request; pools build connections in its thread).
_RUN: contextvars.ContextVar[Run | None] = contextvars.ContextVar("kanshi_http_run",
                                                                  default=None)


def _note(seconds: float, sock: Any) -> None:
    run = _RUN.get()
    if run is not None:
        not_after = certificate_not_after(sock) if hasattr(sock, "getpeercert") else None
        run.connections.append(Connection(seconds, not_after))
        run.phase = "no response"


def _open(conn: Any, run: Run, tls: bool) -> socket.socket:
    """A TCP connection for urllib3's ``conn``: every address within the run's deadline
    (urllib3 gives each the whole timeout), errors raised as urllib3 raises them."""
    from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

    try:
        sock = open_connection(conn._dns_host, conn.port, run.deadline, resolve=run.resolve)
    except socket.gaierror as exc:
        raise NameResolutionError(conn.host, conn, exc) from exc
    except TimeoutError as exc:
        raise ConnectTimeoutError(conn, f"Connection to {conn.host} timed out") from exc
    except OSError as exc:
        raise NewConnectionError(conn, f"Failed to establish a new connection: {exc}") \
            from exc
    for option in conn.socket_options or ():
        sock.setsockopt(*option)
    run.watchdog.watch(sock)
    run.phase = "TLS handshake" if tls else "no response"
    return sock


@functools.cache
def _adapter_class() -> type[Any]:
    """An ``HTTPAdapter`` whose connections connect under the run's deadline and note how
    long ``connect()`` took.

    requests tells the time to the response headers only; curl's ``time_connect``
    needs a hook in urllib3's connection, here a subclass its pools build.
    """
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class TimedHTTPConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            run = _RUN.get()
            return super()._new_conn() if run is None else _open(self, run, tls=False)

        def connect(self) -> None:
            started = time.perf_counter()
            super().connect()
            _note(time.perf_counter() - started, None)

    class TimedHTTPSConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            run = _RUN.get()
            return super()._new_conn() if run is None else _open(self, run, tls=True)

        def connect(self) -> None:
            started = time.perf_counter()
            super().connect()
            _note(time.perf_counter() - started, self.sock)

    class Pool(HTTPConnectionPool):
        ConnectionCls = TimedHTTPConnection

    class TlsPool(HTTPSConnectionPool):
        ConnectionCls = TimedHTTPSConnection

    class TimedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": Pool, "https": TlsPool}

    return TimedAdapter


# -- the check ---------------------------------------------------------------------------


@dataclass
class Answer:
    """What one run got back."""

    response: requests.Response
    body: bytes
    total: float
    connections: list[Connection]


class HttpCheck(Check):
    """One request to one URL, judged on status, body, time and certificate."""

    type_name: ClassVar[str] = "http"
    Config: ClassVar[type[CheckConfig]] = HttpConfig
    default_interval: ClassVar[float] = 600.0  # SPEC §1: service ports every 10 min
    default_timeout: ClassVar[float] = 10.0    # monitoring-plugins check_http

    def __init__(self, name: str, config: CheckConfig, *, timeout: float,
                 context: CheckContext, resolve: Resolver = resolve_tcp) -> None:
        super().__init__(name, config, timeout=timeout, context=context)
        self.resolve = resolve

    def run(self) -> Result:
        config: HttpConfig = self.config  # type: ignore[assignment]
        try:
            answer = self._fetch(config)
        except Failure as failure:
            result = Result(failure.status, f"{config.url}: {failure.text()}", config.url)
        else:
            result = self._judge(config, answer)
        # The server's words (a status line, a body excerpt) may echo a secret we sent.
        return Result(result.status, self.context.scrub(result.message), result.target,
                      result.metrics)

    # -- the request ---------------------------------------------------------------

    def _fetch(self, config: HttpConfig) -> Answer:
        """One request, connect to last body byte, within ``self.timeout``."""
        import requests

        started = time.perf_counter()
        with Run(self.timeout, self.resolve) as run:
            token = _RUN.set(run)
            try:
                with self._session(config) as session:
                    response = session.request(
                        config.method, config.url, headers=config.headers,
                        auth=_auth(config), timeout=self.timeout,
                        allow_redirects=config.follow_redirects, verify=_verify(config),
                        stream=True)
                    if run.fired:  # headers cut off at the deadline parse as complete
                        raise self._late(run.phase)
                    run.phase = "reading the body"
                    with response:
                        body = _read_body(response)
            except requests.RequestException as exc:
                if run.fired:
                    raise self._late(run.phase) from exc
                raise _failure(exc, self.timeout, config) from exc
            finally:
                _RUN.reset(token)
            if run.fired:  # a body without a length ends at the cut as if complete
                raise self._late(run.phase)
        return Answer(response, body, time.perf_counter() - started, run.connections)

    def _late(self, phase: str) -> Failure:
        """The run's deadline passed while it was waiting for ``phase``."""
        return Failure(f"timed out after {self.timeout:g} s ({phase})", _LATE[phase])

    def _session(self, config: HttpConfig) -> requests.Session:
        import requests

        session = requests.Session()
        session.trust_env = False  # no proxy, .netrc or CA bundle from the environment
        session.max_redirects = config.max_redirects
        adapter = _adapter_class()(max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        if not config.verify_tls:
            import urllib3

            # The config said so; a warning per run would only flood the log.
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        return session

    # -- judging ---------------------------------------------------------------------

    def _judge(self, config: HttpConfig, answer: Answer) -> Result:
        status_found, status_text = _status(config, answer.response)
        connect = answer.connections[0].seconds if answer.connections else 0.0
        time_found, time_text = timing(answer.total, connect, config.response_time)
        findings = [_body(config, answer.response, answer.body, self.context.scrub)]
        metrics = _metrics(answer)
        first = answer.connections[0] if answer.connections else None
        if first is not None and first.not_after is not None:
            found, text, left = judge_certificate(first.not_after, self.context.clock.now(),
                                                  config.certificate_expiry)
            findings.append((found, text))
            metrics["certificate_expires_in_seconds"] = left
        notes = [text for found, text in findings if found.is_problem]
        notes += [text for found, text in findings if not found.is_problem and text]
        status = worst([status_found, time_found, *(found for found, _ in findings)])
        message = "; ".join([f"{config.url}: {status_text} {time_text}", *notes])
        return Result(status, message, config.url, metrics)


def _read_body(response: requests.Response) -> bytes:
    """Up to :data:`MAX_BODY` bytes (the run's watchdog stops a slow server)."""
    body = bytearray()
    for chunk in response.iter_content(_CHUNK):
        body += chunk
        if len(body) >= MAX_BODY:
            break
    return bytes(body[:MAX_BODY])


_SLOW = "(raise the check's timeout if it is just slow)"
#: What to do when the deadline passed, by what the run was waiting for.
_LATE = {
    "connecting": "no answer to the connection attempt: a firewall dropping packets, the "
                  "host down, or the server's connection queue full",
    "TLS handshake": f"the server did not complete the TLS handshake in time {_SLOW}",
    "no response": "the port accepts connections but the server did not send its status "
                   f"line and headers in time: hung, overloaded or very slow {_SLOW}",
    "reading the body": "the server sends the page too slowly for the check's timeout "
                        "(raise it if that is expected)",
}


def _auth(config: HttpConfig) -> tuple[str, str] | None:
    if config.username is None or config.password is None:
        return None
    return config.username, config.password.get_secret_value()


def _verify(config: HttpConfig) -> bool | str:
    if not config.verify_tls:
        return False
    return str(config.ca_file) if config.ca_file is not None else True


def _metrics(answer: Answer) -> dict[str, float]:
    connect = answer.connections[0].seconds if answer.connections else 0.0
    return {"connect_seconds": connect, "response_seconds": answer.total - connect,
            "total_seconds": answer.total, "status_code": float(answer.response.status_code),
            "redirects": float(len(answer.response.history))}


def _status(config: HttpConfig, response: requests.Response) -> tuple[Status, str]:
    text = f"{response.status_code} {response.reason or ''}".strip()
    hops = len(response.history)
    if hops:
        text += f" after {hops} redirect{'s' if hops > 1 else ''} (now at {response.url})"
    elif response.is_redirect and "location" in response.headers:
        text += f" → {response.headers['location']} (not followed)"
    if any(low <= response.status_code <= high for low, high in config.expected_status):
        return Status.OK, text
    return Status.CRITICAL, f"{text} (expected {_ranges(config.expected_status)})"


def _body(config: HttpConfig, response: requests.Response, body: bytes,
          scrub: Scrubber) -> tuple[Status, str]:
    """The body against ``body_matches`` / ``body_not_matches`` (nothing to say without);
    an excerpt is scrubbed before :func:`quote` cuts it, which could halve a secret."""
    if not (config.body_matches or config.body_not_matches):
        return Status.OK, ""
    text = _decode(response, body)
    capped = " (first 1 MiB)" if len(body) >= MAX_BODY else ""
    notes = []
    if config.body_matches:
        if not re.search(config.body_matches, text):
            return Status.CRITICAL, (f'body{capped} does not match "{config.body_matches}" '
                                     f"({len(body)} bytes)")
        notes.append(f'body matches "{config.body_matches}"')
    if config.body_not_matches:
        if found := re.search(config.body_not_matches, text):
            return Status.CRITICAL, (f'body matches "{config.body_not_matches}", which it '
                                     f"must not: {quote(scrub(found.group(0)))}")
        notes.append(f'body{capped} free of "{config.body_not_matches}"')
    return Status.OK, "; ".join(notes)


def _decode(response: requests.Response, body: bytes) -> str:
    # requests assumes ISO-8859-1 for text/* without a charset (RFC 2616); pages today
    # are UTF-8, so only a charset the server names is believed.
    named = "charset" in response.headers.get("content-type", "").lower()
    encoding = (response.encoding if named else None) or "utf-8"
    try:
        return body.decode(encoding, "replace")
    except LookupError:
        return body.decode("utf-8", "replace")


def _ranges(ranges: tuple[tuple[int, int], ...]) -> str:
    return ", ".join(f"{low}" if low == high else f"{low}–{high}" for low, high in ranges)


# -- failures ------------------------------------------------------------------------------


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps (requests → urllib3 → socket), outermost first."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop(0)
        if item is None or any(item is s for s in seen) or len(seen) > 20:
            continue
        seen.append(item)
        reason = getattr(item, "reason", None)  # urllib3's; ssl's is a string
        todo += [a for a in (reason, *item.args) if isinstance(a, BaseException)]
        todo += [item.__cause__, item.__context__]
    return seen


def _failure(exc: requests.RequestException, timeout: float, config: HttpConfig) -> Failure:
    """A request that got no usable answer, worded by its deepest known cause."""
    import ssl

    import requests

    causes = _causes(exc)

    def first(*kinds: type[BaseException]) -> BaseException | None:
        return next((c for c in causes if isinstance(c, kinds)), None)

    where = urlsplit(config.url)
    if isinstance(exc, requests.TooManyRedirects):
        return Failure(f"more than {config.max_redirects} redirects",
                       "a redirect loop, or raise max_redirects")
    if first(ConnectionRefusedError):
        return Failure("refused", f"nothing listens on {where.netloc}; is the web server "
                       "running?")
    if isinstance(exc, requests.ConnectTimeout):
        return Failure(f"timed out after {timeout:g} s (connecting)",
                       "no answer to the connection attempt: a firewall dropping packets, "
                       "the host down, or the server's connection queue full")
    if (cert := first(ssl.SSLCertVerificationError)) is not None:
        message = getattr(cert, "verify_message", "") or str(cert)
        return Failure(f"TLS certificate rejected: {message}",
                       "renew or fix the server's certificate, or point ca_file at the CA "
                       "that signed it (verify_tls: false skips verification)")
    if (tls := first(ssl.SSLError)) is not None:
        reason = getattr(tls, "reason", None) or str(tls)
        return Failure(f"TLS handshake failed: {reason}",
                       "is this port really https? (http:// and https:// may be swapped)")
    if isinstance(exc, requests.ReadTimeout) or first(TimeoutError):
        return Failure(f"timed out after {timeout:g} s (no response)",
                       "the port accepts connections but the server never answered: hung "
                       "or overloaded (raise the check's timeout if it is just slow)")
    if (dns := first(socket.gaierror)) is not None:
        return Failure(f"cannot resolve {where.hostname}: {getattr(dns, 'strerror', dns)}",
                       "check the host name and DNS", Status.UNKNOWN)
    if first(http.client.RemoteDisconnected, ConnectionResetError):
        return Failure("connection closed by the server (no response)",
                       "the server hangs up without answering: crashed worker, access "
                       "rules, or https:// expected where http:// was used")
    if (bad := first(http.client.BadStatusLine)) is not None:
        line = str(bad.args[0]) if bad.args else ""
        return Failure(f"unexpected response {quote(line.strip())}",
                       "not HTTP: is another service listening on this port, or are "
                       "http:// and https:// swapped?")
    return Failure(f"request failed: {type(exc).__name__}: {exc}")
