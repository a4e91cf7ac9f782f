"""The shared HTTP helper: every ``requests`` exception, redaction, Retry-After, overrides."""

from __future__ import annotations

import logging
import socket
import ssl
import traceback
from http.client import BadStatusLine
from typing import Any

import pytest
import requests
from urllib3.exceptions import MaxRetryError, NameResolutionError, ProtocolError

from notifiers.base import Alert, NotifierError
from notifiers.http import (
    HttpConfig,
    HttpNotifier,
    Scrubber,
    redact_url,
    retry_after_seconds,
)
from tests.support.http_server import HttpServer, Reply

TOKEN = "s3cret-T0KEN"
URL = f"https://user:{TOKEN}@hooks.example.jp:8443/services/{TOKEN}?sig={TOKEN}"
# requests' own messages repeat the whole URL; the helper must not pass that on.
SAID_BY_REQUESTS = f"HTTPSConnectionPool(host='hooks.example.jp', port=8443): url: {URL}"


class PostNotifier(HttpNotifier):
    """The smallest HTTP channel: POST the alert's subject to ``url``."""

    type_name = "test-post"
    url = URL

    def send(self, alert: Alert) -> None:
        self.post(self.url, json={"text": alert.subject})


class RaisingSession(requests.Session):
    """A session whose every request fails with ``exc`` (no network involved)."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.exc = exc

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        raise self.exc


def make_alert() -> Alert:
    return Alert(kind="problem", notification_id=1, incident_id=1, dedup_key="k", host="h",
                 check="c", target="t", status="CRITICAL", previous_status="OK",
                 severity="critical", message="m", detected_at="2024-05-01T00:00:00+00:00",
                 at="2024-05-01T00:00:00+00:00", outage_seconds=None, locale="en",
                 subject="down", body="down")


def failing_with(exc: BaseException) -> NotifierError:
    notifier = PostNotifier("hook", HttpConfig(timeout=3, connect_timeout=2),
                            session=RaisingSession(exc))
    with pytest.raises(NotifierError) as caught:
        notifier.send(make_alert())
    return caught.value


def dns_failure() -> requests.ConnectionError:
    gaierror = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    resolution = NameResolutionError("hooks.example.jp", None, gaierror)  # type: ignore[arg-type]
    return requests.ConnectionError(MaxRetryError(None, URL, resolution))  # type: ignore[arg-type]


def refused() -> requests.ConnectionError:
    return requests.ConnectionError(MaxRetryError(None, URL, ConnectionRefusedError(  # type: ignore[arg-type]
        111, "Connection refused")))


def cert_failure() -> requests.exceptions.SSLError:
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_message = "self-signed certificate"
    return requests.exceptions.SSLError(MaxRetryError(None, URL, error))  # type: ignore[arg-type]


@pytest.mark.parametrize(("exc", "permanent", "says"), [
    pytest.param(requests.exceptions.ConnectTimeout(SAID_BY_REQUESTS), False,
                 "no connection to https://hooks.example.jp:8443 within 2 s",
                 id="a connect timeout is transient and names connect_timeout"),
    pytest.param(requests.exceptions.ReadTimeout(SAID_BY_REQUESTS), False,
                 "no response from https://hooks.example.jp:8443 within 3 s",
                 id="a read timeout is transient and names timeout"),
    pytest.param(cert_failure(), False, "certificate verify failed: self-signed certificate",
                 id="a certificate failure is transient and names ca_file/verify_tls"),
    pytest.param(requests.exceptions.SSLError(SAID_BY_REQUESTS), False, "TLS with",
                 id="a bare TLS error is transient"),
    pytest.param(dns_failure(), False, "cannot resolve the host",
                 id="a DNS failure is transient"),
    pytest.param(refused(), False, "refused", id="connection refused is transient"),
    pytest.param(requests.ConnectionError(ProtocolError("Connection aborted.",
                                                        BadStatusLine(TOKEN))),
                 False, "not HTTP (BadStatusLine)", id="a garbled response is transient"),
    pytest.param(requests.exceptions.ProxyError(SAID_BY_REQUESTS), False, "HTTPS_PROXY",
                 id="a proxy failure is transient and names the proxy environment"),
    pytest.param(requests.exceptions.ChunkedEncodingError(SAID_BY_REQUESTS), False,
                 "broken response body", id="a broken chunked body is transient"),
    pytest.param(requests.exceptions.ContentDecodingError(SAID_BY_REQUESTS), False,
                 "broken response body", id="an undecodable body is transient"),
    pytest.param(requests.exceptions.InvalidURL(SAID_BY_REQUESTS), True, "check url/headers",
                 id="an invalid url is permanent"),
    pytest.param(requests.exceptions.InvalidHeader(SAID_BY_REQUESTS), True,
                 "check url/headers", id="an invalid header is permanent"),
    pytest.param(requests.exceptions.MissingSchema(SAID_BY_REQUESTS), True,
                 "check url/headers", id="a url without scheme is permanent"),
    pytest.param(requests.exceptions.InvalidSchema(SAID_BY_REQUESTS), True,
                 "check url/headers", id="a url with an unknown scheme is permanent"),
    pytest.param(requests.exceptions.TooManyRedirects(SAID_BY_REQUESTS), False,
                 "failed (TooManyRedirects)", id="any other requests error is transient"),
])
def test_every_requests_exception_is_classified_and_redacted(
        exc: BaseException, permanent: bool, says: str) -> None:
    err = failing_with(exc)

    assert err.permanent is permanent
    assert says in str(err)
    everything = f"{err}\n{err!r}\n{''.join(traceback.format_exception(err))}"
    assert TOKEN not in everything


@pytest.mark.parametrize(("url", "shown"), [
    pytest.param(URL, "https://hooks.example.jp:8443", id="userinfo, path and query go"),
    pytest.param("http://hooks.example.jp/x", "http://hooks.example.jp", id="no port kept"),
    pytest.param("http://[::1]:8080/t", "http://[::1]:8080", id="an IPv6 host keeps brackets"),
    pytest.param("http://host:notaport/t", "<invalid url>", id="a broken port"),
    pytest.param("/relative/t0ken", "<invalid url>", id="no scheme or host"),
])
def test_redact_url_keeps_only_scheme_host_and_port(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(("value", "date", "seconds"), [
    pytest.param("120", None, 120.0, id="delta seconds"),
    pytest.param(" 5 ", None, 5.0, id="delta seconds with spaces"),
    pytest.param("Wed, 01 May 2024 00:02:00 GMT", "Wed, 01 May 2024 00:00:00 GMT", 120.0,
                 id="an HTTP-date against the response Date"),
    pytest.param("Wed, 01 May 2024 00:00:00 GMT", "Wed, 01 May 2024 00:02:00 GMT", 0.0,
                 id="an HTTP-date in the past means now"),
    pytest.param("Wed, 01 May 2024 00:02:00 GMT", None, None,
                 id="an HTTP-date without a Date is unknown"),
    pytest.param("soon", None, None, id="garbage is unknown"),
    pytest.param(None, None, None, id="absent"),
])
def test_retry_after_is_read_in_both_forms(
        value: str | None, date: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value, date) == seconds


def test_the_scrubber_leaves_short_fragments_alone() -> None:
    scrub = Scrubber(["/", "v1", TOKEN])
    assert scrub(f"POST /v1/{TOKEN}") == "POST /v1/***"


class OkInBodyNotifier(HttpNotifier):
    """A Slack-like service: 200 with ``{"ok": false, "error": ...}`` on failure."""

    type_name = "test-ok-in-body"
    url = ""

    def send(self, alert: Alert) -> None:
        self.post(self.url, json={"text": alert.subject}, secrets=["xoxb-" + TOKEN])

    def raise_for_response(self, response: requests.Response) -> None:
        super().raise_for_response(response)
        body = response.json()
        if not body.get("ok"):
            raise NotifierError(f"the service said {body.get('error')}", permanent=True)


def test_a_subclass_judges_the_response_and_its_errors_are_scrubbed() -> None:
    with HttpServer() as server:
        server.respond(Reply(200, body=f'{{"ok": false, "error": "bad token xoxb-{TOKEN}"}}'))
        notifier = OkInBodyNotifier("chat", HttpConfig())
        notifier.url = f"{server.url}/api/{TOKEN}"
        with pytest.raises(NotifierError) as caught:
            notifier.send(make_alert())

    assert caught.value.permanent
    assert str(caught.value) == "the service said bad token ***"


def test_urllib3_request_lines_are_logged_without_path_or_query(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="urllib3")
    with HttpServer() as server:
        notifier = PostNotifier("hook", HttpConfig())
        notifier.url = f"{server.url}/services/{TOKEN}?sig={TOKEN}"
        notifier.send(make_alert())

    lines = [r.getMessage() for r in caplog.records if r.name.startswith("urllib3")]
    assert any('"POST /… HTTP/1.1" 200' in line for line in lines)
    assert not [line for line in lines if TOKEN in line]


class CountingSession(requests.Session):
    closed = 0

    def close(self) -> None:
        self.closed += 1
        super().close()


def test_close_leaves_a_session_it_was_given_to_its_owner() -> None:
    session = CountingSession()
    PostNotifier("hook", HttpConfig(), session=session).close()
    assert session.closed == 0
