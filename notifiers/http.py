"""The shared HTTP delivery helper: one POST, fixed timeouts, a judged response.

Channels that speak HTTP (webhook, Slack, PagerDuty …) subclass
:class:`HttpNotifier`, call :meth:`HttpNotifier.post` from ``send`` and override
only :meth:`HttpNotifier.raise_for_response` when their service reports errors
differently (healthchecks' ``HttpTransport.raise_for_response``).

Every failure becomes a :class:`~notifiers.base.NotifierError` whose message
never carries a URL's path, query or userinfo, nor a header or password value:
webhook URLs are bearer tokens (Slack, Teams, Discord), and these messages end
up in logs, the store and the web page.
"""

from __future__ import annotations

import http
import logging
import re
import socket
import ssl
from collections.abc import Iterable, Iterator, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urljoin, urlsplit

import requests
from pydantic import ConfigDict, FilePath
from urllib3.exceptions import NameResolutionError

from checks.types import Duration, OptionalDuration
from notifiers.base import Notifier, NotifierConfig, NotifierError

logger = logging.getLogger(__name__)

#: RFC 9110 / RFC 6585 statuses that mean "try again later" despite being 4xx.
TRANSIENT_4XX = frozenset({408, 425, 429})
_SNIPPET_CHARS = 200
_MIN_SECRET_CHARS = 4  # shorter fragments ("/", "v1") would shred every message


def redact_url(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: path, query and userinfo may hold tokens."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "<invalid url>"
    if not parts.scheme or not host:
        return "<invalid url>"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def url_secrets(url: str) -> list[str]:
    """The parts of ``url`` that may be secret, for :class:`Scrubber`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    found = [url, parts.path, parts.query, parts.fragment, parts.password or ""]
    found += parts.path.split("/")
    found += [value for _, value in parse_qsl(parts.query, keep_blank_values=True)]
    return found


class Scrubber:
    """Replaces known secret values in text with ``***``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        unique = {s for s in secrets if len(s) >= _MIN_SECRET_CHARS}
        # Longest first, so a URL goes before the path segment it contains.
        self._secrets = sorted(unique, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def retry_after_seconds(value: str | None, date: str | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date).

    An HTTP-date is measured against the response's own ``Date`` header, so no
    local clock is involved; without one the wait is unknown (``None``).
    """
    if not value or not (value := value.strip()):
        return None
    if value.isdigit():
        return float(value)
    try:
        until, now = parsedate_to_datetime(value), parsedate_to_datetime(date or "")
        return max(0.0, (until - now).total_seconds())
    except (TypeError, ValueError):
        return None


class RedactRequestTargets(logging.Filter):
    """Cuts paths and queries out of urllib3's DEBUG lines.

    urllib3 logs every request line (``"POST /hooks/<token> HTTP/1.1" 200``),
    which would put a webhook's token in the agent's log at debug level.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_target(arg) for arg in record.args)
        return True


#: The urllib3 loggers whose messages carry request URLs.
URLLIB3_URL_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry")


def install_log_redaction() -> None:
    """Attach :class:`RedactRequestTargets` to urllib3's loggers (once)."""
    for name in URLLIB3_URL_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(f, RedactRequestTargets) for f in target.filters):
            target.addFilter(RedactRequestTargets())


def _redact_target(arg: object) -> object:
    if not isinstance(arg, str):
        return arg
    if arg.startswith("/"):
        return "/…" if len(arg) > 1 else arg
    return redact_url(arg) + "/…" if "://" in arg else arg


class HttpStatusError(NotifierError):
    """The service answered with a status that is not success (``retry_after``:
    what the service asked for, if it said; the outbox waits at least that)."""

    def __init__(self, message: str, *, status: int, permanent: bool,
                 retry_after: float | None = None) -> None:
        super().__init__(message, permanent=permanent, retry_after=retry_after)
        self.status = status


class HttpConfig(NotifierConfig):
    """Options every HTTP channel shares."""

    # pydantic echoes the rejected input in its errors; for a URL or header
    # that is the secret itself.
    model_config = ConfigDict(hide_input_in_errors=True)

    timeout: Duration = 10.0
    """Seconds to wait for the response (each read)."""
    connect_timeout: OptionalDuration = None
    """Seconds to wait for the TCP/TLS connection; defaults to ``timeout``."""
    verify_tls: bool = True
    ca_file: FilePath | None = None
    """Trust only this CA bundle (PEM) instead of the system store."""


class HttpNotifier(Notifier):
    """A channel that delivers with one HTTP request per alert."""

    Config: ClassVar[type[NotifierConfig]] = HttpConfig
    config: HttpConfig
    user_agent: ClassVar[str] = "kanshi-notifier/1"

    def __init__(self, name: str, config: NotifierConfig, *,
                 session: requests.Session | None = None) -> None:
        super().__init__(name, config)
        install_log_redaction()
        self._own_session = session is None
        self.session = session if session is not None else requests.Session()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def close(self) -> None:
        if self._own_session:
            self.session.close()

    # -- the one request -------------------------------------------------

    def post(self, url: str, *, json: Any, headers: Mapping[str, str] | None = None,
             auth: tuple[str, str] | None = None,
             secrets: Iterable[str] = ()) -> requests.Response:
        """POST ``json`` to ``url`` once and judge the answer.

        ``secrets`` are extra values to keep out of error messages; the URL's
        parts, header values and the auth password are always kept out.
        """
        scrub = Scrubber([*url_secrets(url), *(headers or {}).values(),
                          *(auth[1:] if auth else ()), *secrets])
        try:
            response = self._request(url, json, headers, auth)
        except requests.RequestException as exc:
            # ``from None``: requests' own messages repeat the full URL.
            raise self._transport_error(exc, redact_url(url), scrub) from None
        try:
            with response:
                self.raise_for_response(response)
        except NotifierError as exc:
            exc.args = (scrub(str(exc)),)
            raise exc from None
        logger.debug("notifier %s: delivered to %s (HTTP %d)", self.name,
                     redact_url(url), response.status_code)
        return response

    def _request(self, url: str, json: Any, headers: Mapping[str, str] | None,
                 auth: tuple[str, str] | None) -> requests.Response:
        cfg = self.config
        connect = cfg.connect_timeout or cfg.timeout
        # Redirects are not followed: requests would turn a POST into a GET on
        # 301/302 and the alert would silently vanish.
        return self.session.post(
            url, json=json, headers={"User-Agent": self.user_agent, **(headers or {})},
            auth=auth, timeout=(connect, cfg.timeout), allow_redirects=False,
            verify=self._verify())

    def _verify(self) -> bool | str:
        if not self.config.verify_tls:
            return False
        return str(self.config.ca_file) if self.config.ca_file else True

    # -- judging -----------------------------------------------------------

    def raise_for_response(self, response: requests.Response) -> None:
        """Raise :class:`NotifierError` unless ``response`` means delivered.

        2xx is success; 408/425/429/5xx are transient; a 3xx (never followed)
        and other 4xx are permanent. Override for services that answer 200
        with an error inside (Slack) or use other codes.
        """
        status = response.status_code
        if 200 <= status < 300:
            return
        where = redact_url(response.url)
        if 300 <= status < 400:
            raise self._redirect_error(response, where)
        transient = status in TRANSIENT_4XX or not 400 <= status < 500
        wait = retry_after_seconds(response.headers.get("Retry-After"),
                                   response.headers.get("Date"))
        message = f"HTTP {status} {_reason(response)} from {where}"
        hint = (_retry_hint(response, wait) if transient else self._status_hint(status))
        detail = _snippet(response)
        raise HttpStatusError(f"{message}{detail} — {hint}", status=status,
                              permanent=not transient, retry_after=wait)

    def _redirect_error(self, response: requests.Response, where: str) -> NotifierError:
        location = response.headers.get("Location")
        target = redact_url(urljoin(response.url, location)) if location else "nowhere"
        return HttpStatusError(
            f"HTTP {response.status_code} {_reason(response)} from {where}, redirecting to "
            f"{target} — redirects are not followed (a POST would turn into a GET); "
            f"update {self._setting('url')}",
            status=response.status_code, permanent=True)

    def _status_hint(self, status: int) -> str:
        if status in (401, 403):
            return ("the service refused the credentials; check "
                    f"{self._setting('url/headers/username/password')}")
        if status in (404, 405, 410):
            return f"the endpoint is gone or wrong; check {self._setting('url')}"
        if status == 413:
            return "the service refused the payload as too large"
        return f"the service rejected the request; check the settings of notifier \"{self.name}\""

    def _setting(self, names: str) -> str:
        return f'{names} of notifier "{self.name}"'

    # -- transport failures ------------------------------------------------

    def _transport_error(self, exc: requests.RequestException, where: str,
                         scrub: Scrubber) -> NotifierError:
        message, permanent = self._describe(exc, where)
        return NotifierError(scrub(message), permanent=permanent)

    def _describe(self, exc: requests.RequestException, where: str) -> tuple[str, bool]:
        cfg = self.config
        exceptions = requests.exceptions
        if isinstance(exc, exceptions.ConnectTimeout):
            seconds = cfg.connect_timeout or cfg.timeout
            return (f"no connection to {where} within {seconds:g} s — check "
                    f"{self._setting('url')}, or raise connect_timeout", False)
        if isinstance(exc, exceptions.ReadTimeout):
            return (f"no response from {where} within {cfg.timeout:g} s — raise "
                    f"{self._setting('timeout')} if the service is just slow", False)
        if isinstance(exc, exceptions.ProxyError):
            return (f"the HTTP proxy failed on the way to {where} — check the "
                    "HTTPS_PROXY/HTTP_PROXY/NO_PROXY environment of the agent", False)
        if isinstance(exc, exceptions.SSLError):
            return (f"TLS with {where} failed ({_tls_reason(exc)}) — check the server "
                    f"certificate, or {self._setting('ca_file/verify_tls')}", False)
        if isinstance(exc, exceptions.ConnectionError):
            return self._connection_error(exc, where), False
        if isinstance(exc, exceptions.InvalidURL | exceptions.MissingSchema
                      | exceptions.InvalidSchema | exceptions.InvalidHeader):
            return (f"invalid request to {where} ({type(exc).__name__}) — check "
                    f"{self._setting('url/headers')}", True)
        if isinstance(exc, exceptions.ChunkedEncodingError | exceptions.ContentDecodingError):
            return f"{where} sent a broken response body ({type(exc).__name__})", False
        return f"request to {where} failed ({type(exc).__name__})", False

    def _connection_error(self, exc: requests.ConnectionError, where: str) -> str:
        causes = list(_causes(exc))
        if any(isinstance(c, ConnectionRefusedError) for c in causes):
            return (f"connection to {where} refused — is the service up, and is the port "
                    f"in {self._setting('url')} right?")
        if any(isinstance(c, NameResolutionError | socket.gaierror) for c in causes):
            return f"cannot resolve the host of {where} — check {self._setting('url')} and DNS"
        return (f"{where} closed the connection or sent something that is not HTTP "
                f"({_innermost(causes)})")


# -- small helpers ------------------------------------------------------------

def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps (requests → urllib3 → socket), outermost first."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        wrapped = [getattr(current, "reason", None), current.__cause__, current.__context__,
                   *current.args]
        todo += [w for w in wrapped if isinstance(w, BaseException)]


def _innermost(causes: list[BaseException]) -> str:
    """A secret-free name for the root cause (its text may repeat the URL)."""
    root = causes[-1]
    if isinstance(root, OSError) and root.strerror:
        return root.strerror
    return type(root).__name__


def _tls_reason(exc: BaseException) -> str:
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {cause.verify_message}"
        if isinstance(cause, ssl.SSLError):
            return str(cause.reason or type(cause).__name__)
    return "handshake failed"


def _reason(response: requests.Response) -> str:
    try:
        return http.HTTPStatus(response.status_code).phrase
    except ValueError:
        return (response.reason or "").strip() or "(unknown status)"


def _retry_hint(response: requests.Response, wait: float | None) -> str:
    if wait is not None:
        return f"the service asks to retry after {wait:g} s"
    if raw := response.headers.get("Retry-After"):
        return f"the service asks to retry after {raw.strip()[:40]}"
    return "the service is failing or busy (transient)"


def _snippet(response: requests.Response) -> str:
    """The first words of the response body, for errors a person must read."""
    try:
        text = response.text
    except (requests.RequestException, UnicodeError, LookupError):
        return ""
    text = re.sub(r"\s+", " ", text).strip()
    if not text:
        return ""
    return f": {text[:_SNIPPET_CHARS]}" + ("…" if len(text) > _SNIPPET_CHARS else "")
