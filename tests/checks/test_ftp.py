"""The ``ftp`` check against a real pyftpdlib server with a user."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from agent.clock import SystemClock
from checks.base import CheckContext, Result, Status
from checks.ftp import FtpCheck
from tests.checks.test_smtp_check import SSH_BANNER, Greeter
from tests.support.dovecot import Dovecot
from tests.support.ftp_server import FtpServer
from tests.support.http_server import HOST, RawTcpServer, free_port


def make(timeout: float = 5.0, **options: Any) -> FtpCheck:
    return FtpCheck("ftp", FtpCheck.Config.model_validate(options), timeout=timeout,
                    context=CheckContext(clock=SystemClock()))


def run(timeout: float = 5.0, **options: Any) -> Result:
    [result] = make(timeout, **options).execute()
    return result


@pytest.fixture(scope="module")
def ftp() -> Iterator[FtpServer]:
    with FtpServer() as server:
        yield server


# -- config --------------------------------------------------------------------------------


def test_defaults_follow_spec() -> None:
    config = FtpCheck.Config.model_validate({"host": "files1"})
    assert (FtpCheck.type_name, FtpCheck.default_interval, FtpCheck.default_timeout) == \
        ("ftp", 600.0, 10.0)
    assert (config.port, config.username, config.password) == (21, None, None)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("options", "where", "says"), [
    pytest.param({"username": "ops"}, "", "expected username and password together",
                 id="user-without-password"),
    pytest.param({"username": "ops\r\nDELE x", "password": "pw"}, "username",
                 "one line without line breaks", id="command-injection"),
    pytest.param({"username": "ops", "password": "pw\nSITE x"}, "password",
                 "one line without line breaks", id="injection-in-password"),
    pytest.param({"security": "ssl"}, "security", "Extra inputs are not permitted",
                 id="no-tls-for-ftp"),
])
def test_bad_config_is_refused_with_its_path(options: dict[str, Any], where: str,
                                             says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        FtpCheck.Config.model_validate({"host": "files1", **options})
    errors = caught.value.errors()
    assert [".".join(map(str, e["loc"])) for e in errors] == [where]
    assert says in errors[0]["msg"]
    assert "SITE" not in str(caught.value)  # a rejected password is not echoed


# -- a real server -------------------------------------------------------------------------


def test_the_greeting_alone_is_ok(ftp: FtpServer) -> None:
    result = run(host=ftp.host, port=ftp.port)
    target = f"{ftp.host}:{ftp.port}"
    assert (result.status, result.target) == (Status.OK, target)
    assert re.fullmatch(rf'{target} answers FTP in [\d.]+ [µm]?s \(connect [\d.]+ [µm]?s\): '
                        r'"220 pyftpdlib [\d.]+ ready\."', result.message), result.message
    assert 0 < result.metrics["connect_seconds"] < result.metrics["total_seconds"] < 1.0


def test_a_login_is_ok(ftp: FtpServer) -> None:
    result = run(host=ftp.host, port=ftp.port, username=ftp.USER, password=ftp.PASSWORD)
    assert result.status is Status.OK
    assert result.message.endswith(f"; logged in as {ftp.USER}")


@pytest.mark.parametrize(("user", "password"), [
    pytest.param(FtpServer.USER, "wrong-Secret-Pass", id="wrong-password"),
    pytest.param("nobody-here", "wrong-Secret-Pass", id="unknown-user"),
])
def test_a_rejected_login_is_critical_without_the_password(
        ftp: FtpServer, user: str, password: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    check = make(host=ftp.host, port=ftp.port, username=user, password=password)
    [result] = check.execute()
    assert result.status is Status.CRITICAL
    assert result.message == (f'{ftp.host}:{ftp.port} FTP: login as {user} rejected: "530 '
                              'Authentication failed." — check username and password in the '
                              "config, and whether the account is locked")
    for text in (result.message, repr(check.config), caplog.text):
        assert password not in text


def test_a_multi_line_greeting_is_read_to_its_end() -> None:
    banner = "Welcome to the kanshi test FTP service; all transfers are logged and audited."
    with FtpServer(banner=banner) as server:  # over 75 characters: "220-…" then "220 "
        result = run(host=server.host, port=server.port, username=server.USER,
                     password=server.PASSWORD)
    assert result.status is Status.OK
    assert '"220-Welcome to the kanshi test FTP service' in result.message
    assert result.message.endswith(f"; logged in as {server.USER}")


def test_a_slow_answer_is_a_warning(ftp: FtpServer) -> None:
    result = run(host=ftp.host, port=ftp.port, response_time={"warning": "0.001ms"})
    assert result.status is Status.WARNING
    assert "answers FTP slowly in " in result.message


# -- three ways to fail --------------------------------------------------------------------


def test_a_closed_port_is_critical_refused() -> None:
    port = free_port()
    result = run(host=HOST, port=port)
    assert result.status is Status.CRITICAL
    assert result.message == (f"{HOST}:{port} FTP: refused — nothing listens on port {port}; "
                              "is the service running?")


def test_a_hung_server_times_out_without_a_greeting() -> None:
    with RawTcpServer(None) as hung:
        result = run(timeout=1.0, host=HOST, port=hung.port)
    assert result.status is Status.CRITICAL
    assert result.message.startswith(f"{HOST}:{hung.port} FTP: timed out after 1 s "
                                     "(no greeting) — ")


def test_an_ssh_server_is_an_unexpected_greeting() -> None:
    with Greeter(SSH_BANNER) as ssh:
        result = run(host=HOST, port=ssh.port)
    assert result.status is Status.CRITICAL
    assert result.message == (f'{HOST}:{ssh.port} FTP: unexpected greeting '
                              '"SSH-2.0-OpenSSH_9.2" — expected "220 …"; is another service '
                              "listening on this port?")


@pytest.mark.real
def test_an_imap_server_is_an_unexpected_greeting() -> None:
    with Dovecot() as mail:
        result = run(host=mail.host, port=mail.imap)
    assert result.status is Status.CRITICAL
    assert 'FTP: unexpected greeting "* OK [CAPABILITY IMAP4rev1' in result.message


def test_a_421_greeting_says_the_service_turns_us_away() -> None:
    with Greeter(b"421 Too many connections (8) from this IP\r\n") as busy:
        result = run(host=HOST, port=busy.port)
    assert result.status is Status.CRITICAL
    assert 'FTP: service refused in the greeting: "421 Too many connections (8) from this ' \
           'IP"' in result.message
