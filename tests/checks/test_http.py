"""The ``http`` check against a real HTTP(S) server on loopback, compared with curl."""

from __future__ import annotations

import base64
import logging
import socket
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from pydantic import ValidationError

from agent.clock import FrozenClock, SystemClock
from agent.runner import grace
from agent.secrets import Redactor
from checks.base import CheckContext, Clock, Result, Status
from checks.http import MAX_BODY, HttpCheck, HttpConfig
from tests.support import needs
from tests.support.http_server import (
    HOST,
    HttpServer,
    LoopbackTLS,
    RawTcpServer,
    Reply,
    SilentListener,
    free_port,
)

USER, PASSWORD = "monitor", "http-Secret-Pass-42"


def make(timeout: float = 5.0, clock: Clock | None = None, **options: Any) -> HttpCheck:
    return HttpCheck("web", HttpCheck.Config.model_validate(options), timeout=timeout,
                     context=CheckContext(clock=clock or SystemClock()))


def run(timeout: float = 5.0, clock: Clock | None = None, **options: Any) -> Result:
    [result] = make(timeout, clock, **options).execute()
    return result


@pytest.fixture
def server() -> Iterator[HttpServer]:
    with HttpServer() as http:
        yield http


@pytest.fixture(scope="module")
def tls() -> Iterator[LoopbackTLS]:
    made = LoopbackTLS()
    yield made
    made.cleanup()


@pytest.fixture
def https(tls: LoopbackTLS) -> Iterator[HttpServer]:
    with HttpServer(tls=tls) as http:
        yield http


def expiring_tls(not_after: datetime) -> LoopbackTLS:
    """A LoopbackTLS whose server certificate expires at ``not_after``."""
    made = LoopbackTLS()
    made.server_cert = made.ca.issue_cert(HOST, "localhost", not_after=not_after,
                                          not_before=not_after - timedelta(days=90))
    return made


def not_after(tls: LoopbackTLS) -> datetime:
    return x509.load_pem_x509_certificate(tls.server_cert.cert_chain_pems[0].bytes()) \
        .not_valid_after_utc


# -- config ----------------------------------------------------------------------------------


def config(**options: Any) -> HttpConfig:
    return HttpCheck.Config.model_validate({"url": "https://example.jp/", **options})  # type: ignore[return-value]


def test_defaults_follow_spec_and_check_http() -> None:
    cfg = config()
    assert (HttpCheck.type_name, HttpCheck.default_interval, HttpCheck.default_timeout) == \
        ("http", 600.0, 10.0)
    assert (cfg.method, cfg.expected_status, cfg.follow_redirects, cfg.max_redirects) == \
        ("GET", ((200, 399),), False, 5)
    assert (cfg.response_time.warning, cfg.response_time.critical) == (5.0, None)
    assert (cfg.certificate_expiry.warning, cfg.certificate_expiry.critical) == \
        (30 * 86400.0, 7 * 86400.0)
    assert (cfg.verify_tls, cfg.ca_file, cfg.headers) == (True, None, {})


@pytest.mark.parametrize(("given", "ranges"), [
    pytest.param(200, ((200, 200),), id="one-code"),
    pytest.param("2xx", ((200, 299),), id="a-class"),
    pytest.param([200, "301-302", "4XX"], ((200, 200), (301, 302), (400, 499)), id="a-list"),
])
def test_expected_status_takes_codes_ranges_and_classes(given: Any, ranges: Any) -> None:
    assert config(expected_status=given).expected_status == ranges


@pytest.mark.parametrize(("options", "where", "says"), [
    pytest.param({"url": "ftp://example.jp/"}, "url", "expected an http:// or https:// URL",
                 id="not-http"),
    pytest.param({"url": "https://ops:pw@example.jp/"}, "url",
                 "without user:password@; set username and password", id="password-in-url"),
    pytest.param({"expected_status": "600"}, "expected_status",
                 "status codes from 100 to 599", id="status-out-of-range"),
    pytest.param({"expected_status": "ok"}, "expected_status",
                 'a class (2xx), got "ok"', id="status-not-a-code"),
    pytest.param({"expected_status": []}, "expected_status", "a list of status codes",
                 id="no-status"),
    pytest.param({"body_matches": "(unclosed"}, "body_matches",
                 'expected a regular expression, got "(unclosed"', id="bad-regex"),
    pytest.param({"method": "HEAD", "body_matches": "ok"}, "",
                 "with method HEAD: its answer has no body", id="head-has-no-body"),
    pytest.param({"method": "GETT"}, "method", "Input should be", id="unknown-method"),
    pytest.param({"username": "ops"}, "", "expected username and password together",
                 id="user-without-password"),
    pytest.param({"headers": {"X-A": "1\r\nX-Injected: 2"}}, "headers",
                 "header values on one line", id="header-injection"),
    pytest.param({"max_redirects": 0}, "max_redirects", "greater than or equal to 1",
                 id="no-redirects-allowed"),
    pytest.param({"certificate_expiry": {"warning": "7d", "critical": "30d"}},
                 "certificate_expiry", "expected warning (7 days) not below critical (30 days)",
                 id="expiry-upside-down"),
])
def test_bad_config_is_refused_with_its_path(options: dict[str, Any], where: str,
                                             says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        config(**options)
    errors = caught.value.errors()
    assert [".".join(map(str, e["loc"])) for e in errors] == [where]
    assert says in errors[0]["msg"]


def test_a_rejected_password_is_not_echoed_in_the_error() -> None:
    with pytest.raises(ValidationError) as caught:
        config(password=PASSWORD)  # no username
    assert PASSWORD not in str(caught.value)


# -- answers -------------------------------------------------------------------------------


def test_a_200_is_ok_with_its_timings(server: HttpServer) -> None:
    url = f"{server.url}/health"
    result = run(url=url)
    assert (result.status, result.target) == (Status.OK, url)
    assert result.message.startswith(f"{url}: 200 OK in ")
    metrics = result.metrics
    assert (metrics["status_code"], metrics["redirects"]) == (200.0, 0.0)
    assert 0 < metrics["connect_seconds"] < metrics["total_seconds"] < 1.0
    assert metrics["response_seconds"] == pytest.approx(
        metrics["total_seconds"] - metrics["connect_seconds"])


def test_a_500_is_critical_naming_the_expected_codes(server: HttpServer) -> None:
    server.respond(Reply(500, body="boom"))
    result = run(url=server.url)
    assert result.status is Status.CRITICAL
    assert result.message.startswith(f"{server.url}: 500 Internal Server Error "
                                     "(expected 200–399) in ")
    assert result.metrics["status_code"] == 500.0


def test_expected_status_can_accept_what_the_default_does_not(server: HttpServer) -> None:
    server.respond(Reply(503))
    assert run(url=server.url, expected_status=[200, 503]).status is Status.OK


def test_method_headers_and_basic_auth_are_sent(server: HttpServer) -> None:
    run(url=f"{server.url}/api", method="POST", headers={"X-Monitor": "kanshi"},
        username=USER, password=PASSWORD)
    [request] = server.requests
    assert (request.method, request.path, request.headers["x-monitor"]) == \
        ("POST", "/api", "kanshi")
    assert request.headers["authorization"] == \
        "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def test_a_redirect_is_reported_not_followed_by_default(server: HttpServer) -> None:
    server.respond(Reply(301, headers={"Location": "/new"}))
    result = run(url=f"{server.url}/old")
    assert result.status is Status.OK
    assert result.message.startswith(f"{server.url}/old: 301 Moved Permanently → /new "
                                     "(not followed) in ")
    assert [r.path for r in server.requests] == ["/old"]


def test_a_redirect_is_critical_when_only_200_is_expected(server: HttpServer) -> None:
    server.respond(Reply(302, headers={"Location": "/login"}))
    result = run(url=server.url, expected_status=200)
    assert result.status is Status.CRITICAL
    assert "302 Found → /login (not followed) (expected 200)" in result.message


def test_followed_redirects_judge_the_last_answer(server: HttpServer) -> None:
    server.respond(Reply(301, headers={"Location": "/new"}), Reply(200, body="ok"))
    result = run(url=f"{server.url}/old", follow_redirects=True)
    assert result.status is Status.OK
    assert result.message.startswith(f"{server.url}/old: 200 OK after 1 redirect "
                                     f"(now at {server.url}/new) in ")
    assert result.metrics["redirects"] == 1.0
    assert [r.path for r in server.requests] == ["/old", "/new"]


def test_a_redirect_loop_is_critical(server: HttpServer) -> None:
    server.default = Reply(302, headers={"Location": "/again"})
    result = run(url=server.url, follow_redirects=True, max_redirects=3)
    assert result.status is Status.CRITICAL
    assert result.message == (f"{server.url}: more than 3 redirects — a redirect loop, "
                              "or raise max_redirects")
    assert len(server.requests) == 4


@pytest.mark.parametrize(("body", "options", "status", "says"), [
    pytest.param("status: healthy", {"body_matches": "healthy"}, Status.OK,
                 'body matches "healthy"', id="must-match-and-does"),
    pytest.param("status: degraded", {"body_matches": "healthy"}, Status.CRITICAL,
                 'body does not match "healthy" (16 bytes)', id="must-match-and-does-not"),
    pytest.param("<p>Fatal error: database gone</p>", {"body_not_matches": "(?i)fatal error"},
                 Status.CRITICAL, 'body matches "(?i)fatal error", which it must not: '
                 '"Fatal error"', id="must-not-match-and-does"),
    pytest.param("all fine", {"body_not_matches": "error"}, Status.OK,
                 'body free of "error"', id="must-not-match-and-does-not"),
    pytest.param("ステータス: 正常", {"body_matches": "正常"}, Status.OK, 'body matches "正常"',
                 id="utf-8-without-charset"),
])
def test_the_body_regex_decides(server: HttpServer, body: str, options: dict[str, Any],
                                status: Status, says: str) -> None:
    server.respond(Reply(200, body=body, headers={"Content-Type": "text/html"}))
    result = run(url=server.url, **options)
    assert result.status is status
    assert says in result.message


def test_only_the_first_mib_of_the_body_is_read(server: HttpServer) -> None:
    server.respond(Reply(200, body=b"x" * (3 * MAX_BODY) + b"needle"))
    result = run(url=server.url, body_matches="needle")
    assert result.status is Status.CRITICAL
    assert f'body (first 1 MiB) does not match "needle" ({MAX_BODY} bytes)' in result.message


@pytest.mark.parametrize(("thresholds", "status", "says"), [
    pytest.param({"warning": "100ms"}, Status.WARNING, "(warning at 100 ms; connect ",
                 id="warning"),
    pytest.param({"warning": "50ms", "critical": "150ms"}, Status.CRITICAL,
                 "(critical at 150 ms; connect ", id="critical"),
    pytest.param({"warning": "5s"}, Status.OK, "", id="under"),
])
def test_response_time_is_judged_on_the_total(server: HttpServer, thresholds: dict[str, str],
                                              status: Status, says: str) -> None:
    server.respond(Reply(200, delay=0.3))
    result = run(url=server.url, response_time=thresholds)
    assert result.status is status
    assert result.metrics["total_seconds"] >= 0.3
    assert says in result.message
    assert ("200 OK slowly in " in result.message) is status.is_problem


# -- TLS ---------------------------------------------------------------------------------------


def test_https_trusting_the_test_ca_reports_the_certificate_expiry(
        https: HttpServer, tls: LoopbackTLS) -> None:
    result = run(url=https.url, ca_file=str(tls.ca_file))
    assert result.status is Status.OK
    expected = (not_after(tls) - datetime.now(UTC)).total_seconds()
    assert result.metrics["certificate_expires_in_seconds"] == pytest.approx(expected, abs=60)
    assert f"TLS certificate expires in {int(expected // 86400)} days " \
           f"({not_after(tls):%Y-%m-%d})" in result.message


@pytest.mark.parametrize(("days_left", "status", "says"), [
    pytest.param(20, Status.WARNING, "(warning under 30 days, renew it)", id="warning"),
    pytest.param(3, Status.CRITICAL, "(critical under 7 days, renew it)", id="critical"),
])
def test_a_certificate_near_expiry_is_a_problem(days_left: int, status: Status,
                                                says: str) -> None:
    soon = expiring_tls(datetime.now(UTC) + timedelta(days=days_left, hours=1))
    with HttpServer(tls=soon) as server:
        result = run(url=server.url, ca_file=str(soon.ca_file))
    soon.cleanup()
    assert result.status is status
    assert result.message.split("; ")[1] == (
        f"TLS certificate expires in {days_left} days ({not_after(soon):%Y-%m-%d}) {says}")


def test_expiry_is_judged_by_the_agents_clock(https: HttpServer, tls: LoopbackTLS) -> None:
    late = FrozenClock(not_after(tls) - timedelta(days=2))
    result = run(url=https.url, ca_file=str(tls.ca_file), clock=late)
    assert result.status is Status.CRITICAL
    assert "TLS certificate expires in 2 days" in result.message


def test_an_expired_certificate_is_critical_even_unverified() -> None:
    stale = expiring_tls(datetime.now(UTC) - timedelta(days=2))
    with HttpServer(tls=stale) as server:
        verified = run(url=server.url, ca_file=str(stale.ca_file))
        unverified = run(url=server.url, verify_tls=False)
    stale.cleanup()
    assert verified.status is unverified.status is Status.CRITICAL
    assert "TLS certificate rejected: certificate has expired" in verified.message
    assert "TLS certificate expired 2 days ago" in unverified.message


def test_an_untrusted_certificate_is_critical_unless_verification_is_off(
        https: HttpServer) -> None:
    untrusted = run(url=https.url)  # the system CAs don't know the test CA
    assert untrusted.status is Status.CRITICAL
    assert untrusted.message.startswith(
        f"{https.url}: TLS certificate rejected: unable to get local issuer certificate — "
        "renew or fix the server's certificate, or point ca_file at the CA")
    assert run(url=https.url, verify_tls=False).status is Status.OK


def test_https_to_a_plain_http_port_says_tls_failed(server: HttpServer) -> None:
    result = run(url=server.url.replace("http:", "https:"))
    assert result.status is Status.CRITICAL
    assert "TLS handshake failed: WRONG_VERSION_NUMBER — is this port really https?" \
        in result.message


def test_http_to_an_https_port_says_the_server_hung_up(https: HttpServer) -> None:
    result = run(url=https.url.replace("https:", "http:"))
    assert result.status is Status.CRITICAL
    assert "connection closed by the server (no response)" in result.message


# -- three ways to fail --------------------------------------------------------------------


def test_a_closed_port_is_critical_refused() -> None:
    url = f"http://{HOST}:{free_port()}/"
    result = run(url=url)
    assert result.status is Status.CRITICAL
    assert result.message == (f"{url}: refused — nothing listens on "
                              f"{url[7:-1]}; is the web server running?")


def test_a_hung_server_times_out_with_no_response() -> None:
    with RawTcpServer(None) as hung:
        result = run(timeout=1.0, url=hung.url)
    assert result.status is Status.CRITICAL
    assert result.message.startswith(f"{hung.url}: timed out after 1 s (no response) — the "
                                     "port accepts connections but the server did not send "
                                     "its status line and headers in time")


# -- one deadline for the whole request ---------------------------------------------------


@pytest.mark.parametrize(("reply", "waiting_for"), [
    pytest.param(Reply(200, body="ok", head_drip=0.05), "no response", id="trickled-headers"),
    pytest.param(Reply(200, body="x" * 400, body_drip=0.05), "reading the body",
                 id="trickled-body"),
    pytest.param(Reply(200, body="x" * 400, body_drip=0.05, length=False), "reading the body",
                 id="trickled-body-without-length"),
])
def test_a_server_trickling_its_answer_cannot_stretch_the_run(
        server: HttpServer, reply: Reply, waiting_for: str) -> None:
    """Every byte comes well within requests' per-read timeout; the whole does not."""
    server.respond(reply)

    result = run(timeout=1.0, url=server.url)

    assert result.status is Status.CRITICAL
    assert result.message.startswith(f"{server.url}: timed out after 1 s ({waiting_for})")
    assert result.duration < 1.0 + grace(1.0)  # within what the agent waits for a run


def test_a_dual_stack_name_that_is_down_takes_one_timeout_not_two() -> None:
    with SilentListener("::1") as v6, SilentListener(HOST, v6.port):
        port = v6.port
        check = HttpCheck("web", HttpCheck.Config.model_validate(
            {"url": f"http://web.example:{port}/"}), timeout=1.0,
            context=CheckContext(clock=SystemClock()),
            resolve=lambda host, at: [
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", (HOST, port))])
        [result] = check.execute()

    assert result.status is Status.CRITICAL
    assert result.message.startswith(f"http://web.example:{port}/: timed out after 1 s "
                                     "(connecting)")
    assert result.duration < 1.0 + grace(1.0)


def test_a_server_speaking_another_protocol_is_quoted() -> None:
    with RawTcpServer(b"SSH-2.0-OpenSSH_9.2\r\n") as ssh:
        result = run(url=ssh.url)
    assert result.status is Status.CRITICAL
    assert result.message.startswith(f'{ssh.url}: unexpected response "SSH-2.0-OpenSSH_9.2" '
                                     "— not HTTP")


# -- accuracy ----------------------------------------------------------------------------------


@pytest.mark.real
@pytest.mark.parametrize(("status", "delay", "secure"), [
    pytest.param(200, 0.0, False, id="200-at-once"),
    pytest.param(503, 0.0, False, id="503-at-once"),
    pytest.param(200, 0.3, False, id="200-after-300ms"),
    pytest.param(200, 0.3, True, id="https-200-after-300ms"),
])
def test_status_and_time_agree_with_curl(status: int, delay: float, secure: bool,
                                         tls: LoopbackTLS) -> None:
    curl = needs.command("curl", "curl")
    with HttpServer(tls=tls if secure else None,
                    default=Reply(status, body="x" * 2000, delay=delay)) as server:
        url = f"{server.url}/page"
        trust = ["--cacert", str(tls.ca_file)] if secure else []
        out = subprocess.run([curl, "-sS", "-o", "/dev/null", "--noproxy", "*", "--max-time",
                              "5", *trust, "-w", "%{http_code} %{time_total}", url],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        result = run(url=url, ca_file=str(tls.ca_file), expected_status="100-599")
    curl_code, curl_total = out.split()
    assert result.metrics["status_code"] == int(curl_code) == status
    ours = result.metrics["total_seconds"]
    # Same order, not a race: both include the server's delay, and on loopback neither
    # adds much to it (bounds loose enough for a busy 2-core machine).
    assert delay <= ours < delay + 1.0
    assert delay <= float(curl_total) < delay + 1.0
    assert abs(ours - float(curl_total)) < 0.5


# -- secrets -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("reply", "options", "shown"), [
    pytest.param(Reply(200, body=f"<p>debug: token={PASSWORD}</p>"),
                 {"body_not_matches": r"token=\S+"}, '"token=********</p>"', id="body-excerpt"),
    pytest.param(Reply(200, body="<p>" + "x" * 70 + f" {PASSWORD}</p>"),
                 {"body_not_matches": r"x+ \S+"}, '"' + "x" * 70 + ' ********<…"',
                 id="body-excerpt-cut-inside-the-secret"),
    pytest.param(Reply(302, headers={"Location": f"/login?token={PASSWORD}"}), {},
                 "→ /login?token=******** (not followed)", id="redirect-location"),
])
def test_a_secret_the_server_echoes_is_masked_in_the_message(
        server: HttpServer, reply: Reply, options: dict[str, Any], shown: str) -> None:
    server.respond(reply)
    check = HttpCheck("web", HttpCheck.Config.model_validate({"url": server.url, **options}),
                      timeout=5.0, context=CheckContext(clock=SystemClock(),
                                                        scrub=Redactor([PASSWORD])))

    [result] = check.execute()

    assert shown in result.message
    assert PASSWORD[:8] not in result.message


def test_the_password_never_reaches_a_message_a_repr_or_a_log(
        server: HttpServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server.respond(Reply(200), Reply(401, headers={"WWW-Authenticate": 'Basic realm="x"'}))
    check = make(url=server.url, username=USER, password=PASSWORD)
    ok, refused = check.execute() + check.execute()
    assert (ok.status, refused.status) == (Status.OK, Status.CRITICAL)
    assert "401 Unauthorized (expected 200–399)" in refused.message
    for text in (ok.message, refused.message, repr(check.config), caplog.text):
        assert PASSWORD not in text
