"""The webhook notifier against real HTTP(S) peers on 127.0.0.1."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from notifiers.base import NotifierError
from notifiers.http import HttpStatusError
from notifiers.webhook import WebhookConfig, WebhookNotifier
from tests.support.http_server import HttpServer, LoopbackTLS, Reply
from tests.support.notifiers import Peers, make_alert

# Webhook URLs are bearer tokens; none of these may ever show up in an error or log.
PATH_TOKEN = "T0KEN-in-the-path"
QUERY_TOKEN = "QUERY-s1gnature"
HEADER_TOKEN = "HEADER-api-key-s3cret"
PASSWORD = "BASIC-pa55word"
SECRETS = (PATH_TOKEN, QUERY_TOKEN, HEADER_TOKEN, PASSWORD)
TARGET = f"/hooks/{PATH_TOKEN}?sig={QUERY_TOKEN}"


def make_notifier(base_url: str, **options: Any) -> WebhookNotifier:
    settings: dict[str, Any] = {"url": base_url + TARGET, "timeout": "1s",
                                "headers": {"X-Api-Key": HEADER_TOKEN}}
    return WebhookNotifier("ops-hook", WebhookConfig.model_validate(settings | options))


def failure(notifier: WebhookNotifier) -> NotifierError:
    with pytest.raises(NotifierError) as caught:
        notifier.send(make_alert())
    return caught.value


def everything_said(err: BaseException, notifier: WebhookNotifier,
                    caplog: pytest.LogCaptureFixture) -> str:
    """All text a secret could leak into: the error, its traceback, reprs, logs.

    Logs include urllib3's DEBUG request lines; only the test servers' own
    lines are left out.
    """
    logs = [r.getMessage() for r in caplog.records if not r.name.startswith("tests.")]
    return "\n".join([str(err), repr(err), "".join(traceback.format_exception(err)),
                      repr(notifier), repr(notifier.config), str(notifier.config), *logs])


@pytest.fixture
def server() -> Iterator[HttpServer]:
    with HttpServer() as http_server:
        yield http_server


# -- delivery -----------------------------------------------------------------

def test_it_posts_the_alert_as_versioned_json(server: HttpServer) -> None:
    alert = make_alert()
    make_notifier(server.url).send(alert)

    [request] = server.requests
    assert request.method == "POST"
    assert request.path == TARGET
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {"version": 1, **alert.to_dict()}


def test_it_sends_the_configured_headers_and_basic_auth(server: HttpServer) -> None:
    make_notifier(server.url, username="kanshi", password=PASSWORD).send(make_alert())

    [request] = server.requests
    assert request.headers["x-api-key"] == HEADER_TOKEN
    assert request.headers["authorization"].startswith("Basic ")


@pytest.mark.parametrize("status", [
    pytest.param(200, id="200 ok"),
    pytest.param(201, id="201 created"),
    pytest.param(202, id="202 accepted"),
    pytest.param(204, id="204 no content"),
])
def test_any_2xx_means_delivered(server: HttpServer, status: int) -> None:
    server.respond(Reply(status))

    make_notifier(server.url).send(make_alert())

    assert len(server.requests) == 1


def test_a_tls_receiver_is_verified_against_ca_file() -> None:
    tls = LoopbackTLS()
    with HttpServer(tls=tls) as server:
        make_notifier(server.url, ca_file=str(tls.ca_file)).send(make_alert())
        assert len(server.requests) == 1
    tls.cleanup()


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_verify_tls_false_accepts_a_self_signed_receiver() -> None:
    with HttpServer(tls=LoopbackTLS()) as server:
        make_notifier(server.url, verify_tls=False).send(make_alert())
        assert len(server.requests) == 1


def test_it_delivers_again_once_the_receiver_is_back(server: HttpServer) -> None:
    notifier = make_notifier(server.url)
    server.stop()
    assert not failure(notifier).permanent

    server.start()
    notifier.send(make_alert())
    assert len(server.requests) == 1


def test_each_send_is_exactly_one_attempt(server: HttpServer) -> None:
    server.respond(Reply(503))

    failure(make_notifier(server.url))

    assert len(server.requests) == 1


# -- the failure-mode table ------------------------------------------------------

Arrange = Callable[[Peers], str]
ECHO = f"invalid token {PATH_TOKEN} / {QUERY_TOKEN} / {HEADER_TOKEN}"  # a chatty receiver

FAILURES = [
    pytest.param(lambda p: p.nobody(), False, "refused",
                 id="connection refused is transient"),
    pytest.param(lambda p: p.http(Reply(200, delay=5)), False, "no response from",
                 id="a response slower than timeout is transient"),
    pytest.param(lambda p: p.raw(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), False, "not HTTP",
                 id="a malformed HTTP response is transient"),
    pytest.param(lambda p: p.raw(b""), False, "not HTTP",
                 id="a peer hanging up without a word is transient"),
    pytest.param(lambda p: p.http(Reply(200), tls=LoopbackTLS()), False,
                 "certificate verify failed",
                 id="a self-signed certificate with verify on is an error"),
    pytest.param(lambda p: p.http(Reply(301, headers={
        "Location": f"https://new.example.jp/hooks/{PATH_TOKEN}?sig={QUERY_TOKEN}"})),
        True, "redirecting to https://new.example.jp — redirects are not followed",
        id="301 not followed is permanent and names the host only"),
    pytest.param(lambda p: p.http(Reply(307, headers={"Location": "/v2/hooks"})), True,
                 "redirecting to http://127.0.0.1:",
                 id="307 to a relative location is permanent"),
    pytest.param(lambda p: p.http(Reply(400, body=ECHO)), True, "HTTP 400 Bad Request",
                 id="400 is permanent even when the body echoes secrets"),
    pytest.param(lambda p: p.http(Reply(401)), True, "refused the credentials",
                 id="401 is permanent"),
    pytest.param(lambda p: p.http(Reply(403)), True, "refused the credentials",
                 id="403 is permanent"),
    pytest.param(lambda p: p.http(Reply(404)), True, "check url of notifier",
                 id="404 is permanent"),
    pytest.param(lambda p: p.http(Reply(410)), True, "check url of notifier",
                 id="410 is permanent"),
    pytest.param(lambda p: p.http(Reply(422)), True, "HTTP 422", id="422 is permanent"),
    pytest.param(lambda p: p.http(Reply(408)), False, "HTTP 408", id="408 is transient"),
    pytest.param(lambda p: p.http(Reply(425)), False, "HTTP 425", id="425 is transient"),
    pytest.param(lambda p: p.http(Reply(429, headers={"Retry-After": "120"})), False,
                 "asks to retry after 120 s", id="429 is transient and honours Retry-After"),
    pytest.param(lambda p: p.http(Reply(500, body=ECHO)), False, "HTTP 500",
                 id="500 is transient"),
    pytest.param(lambda p: p.http(Reply(502)), False, "HTTP 502", id="502 is transient"),
    pytest.param(lambda p: p.http(Reply(503, headers={"Retry-After": "30"})), False,
                 "asks to retry after 30 s", id="503 is transient and honours Retry-After"),
    pytest.param(lambda p: p.http(Reply(504)), False, "HTTP 504", id="504 is transient"),
]


@pytest.mark.parametrize(("arrange", "permanent", "says"), FAILURES)
def test_each_failure_mode_is_classified_without_leaking_secrets(
        peers: Peers, caplog: pytest.LogCaptureFixture,
        arrange: Arrange, permanent: bool, says: str) -> None:
    caplog.set_level(logging.DEBUG)
    notifier = make_notifier(arrange(peers), username="kanshi", password=PASSWORD)

    started = time.monotonic()
    err = failure(notifier)

    assert time.monotonic() - started < 10
    assert err.permanent is permanent
    assert says in str(err)
    said = everything_said(err, notifier, caplog)
    assert [secret for secret in SECRETS if secret in said] == []


def test_retry_after_is_given_to_the_outbox_in_seconds(server: HttpServer) -> None:
    server.respond(Reply(429, headers={"Retry-After": "120"}))

    err = failure(make_notifier(server.url))

    assert isinstance(err, HttpStatusError)
    assert (err.status, err.retry_after) == (429, 120.0)


def test_userinfo_in_the_url_is_used_but_never_shown(server: HttpServer) -> None:
    server.respond(Reply(404))
    base = server.url.replace("http://", f"http://kanshi:{PASSWORD}@")

    err = failure(make_notifier(base))

    assert server.requests[0].headers["authorization"].startswith("Basic ")
    assert PASSWORD not in str(err)
    assert f"from {server.url} " in str(err)


# -- configuration ---------------------------------------------------------------

@pytest.mark.parametrize(("options", "says"), [
    pytest.param({"url": f"ftp://files.example.jp/{PATH_TOKEN}"}, "http:// or https://",
                 id="a non-http url"),
    pytest.param({"url": f"https:///{PATH_TOKEN}"}, "with a host", id="a url without a host"),
    pytest.param({"headers": {"Bad Header": HEADER_TOKEN}}, "header name",
                 id="a header name with a space"),
    pytest.param({"headers": {"X-Api-Key": f"{HEADER_TOKEN}\r\nX-Evil: 1"}}, "line breaks",
                 id="a header value with a line break"),
    pytest.param({"username": "kanshi"}, "username and password together",
                 id="a username without a password"),
    pytest.param({"timeout": 0}, "greater than 0", id="a zero timeout"),
    pytest.param({"ca_file": "/nonexistent/ca.pem"}, "ca_file", id="a missing ca_file"),
    pytest.param({"tiemout": "5s"}, "tiemout", id="an unknown key"),
])
def test_bad_settings_are_refused_without_echoing_secrets(
        options: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        make_notifier("https://hooks.example.jp", **options)
    assert says in str(caught.value)
    assert [secret for secret in SECRETS if secret in str(caught.value)] == []


def test_secrets_do_not_show_in_the_config_or_notifier_repr() -> None:
    notifier = make_notifier("https://hooks.example.jp", username="kanshi", password=PASSWORD)
    shown = f"{notifier!r} {notifier.config!r} {notifier.config}"
    assert [secret for secret in SECRETS if secret in shown] == []
