"""The ``smtp`` check against a real aiosmtpd server (plain, STARTTLS, implicit TLS).

Also home of :class:`Greeter`, the one fake peer of the service-port tests.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from agent.clock import SystemClock
from checks.base import CheckContext, Result, Status
from checks.smtp import SmtpCheck
from tests.support.dovecot import Dovecot
from tests.support.ftp_server import FtpServer
from tests.support.http_server import HOST, RawTcpServer, free_port
from tests.support.smtp_server import SmtpServer

SSH_BANNER = b"SSH-2.0-OpenSSH_9.2\r\n"


class Greeter:
    """A peer that speaks first: ``script`` is bytes or ``(pause, bytes)`` steps.

    A fake, used only where no real server here can be made to say it: an SSH
    banner (no sshd on this machine), a 554 or ``* BYE`` refusal, a greeting
    dripped byte by byte. After its script it stays silent until the client
    hangs up. (``RawTcpServer`` waits for the client to speak first, which a
    mail client never does.)
    """

    def __init__(self, *script: bytes | tuple[float, bytes]) -> None:
        self.script = [step if isinstance(step, tuple) else (0.0, step) for step in script]
        self._stop = threading.Event()
        self._listener = socket.create_server((HOST, 0))
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True,
                                        name=f"greeter-{self.port}")

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                self._speak(conn)

    def _speak(self, conn: socket.socket) -> None:
        for pause, data in self.script:
            if self._stop.wait(pause):
                return
            conn.sendall(data)
        conn.settimeout(0.2)
        while not self._stop.is_set():  # until the client hangs up
            try:
                if not conn.recv(4096):
                    return
            except TimeoutError:
                continue

    def __enter__(self) -> Greeter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=5)


def run(timeout: float = 5.0, **options: Any) -> Result:
    check = SmtpCheck("smtp", SmtpCheck.Config.model_validate(options), timeout=timeout,
                      context=CheckContext(clock=SystemClock()))
    [result] = check.execute()
    return result


@pytest.fixture(scope="module")
def plain() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


@pytest.fixture(scope="module")
def starttls() -> Iterator[SmtpServer]:
    with SmtpServer(security="starttls") as server:
        yield server


# -- config --------------------------------------------------------------------------------


@pytest.mark.parametrize(("security", "port"), [("none", 25), ("starttls", 587), ("ssl", 465)])
def test_the_port_defaults_by_security_as_for_the_email_notifier(security: str,
                                                                 port: int) -> None:
    config = SmtpCheck.Config.model_validate({"host": "mx1", "security": security})
    assert config.port == port  # type: ignore[attr-defined]


def test_defaults_follow_spec() -> None:
    config = SmtpCheck.Config.model_validate({"host": "mx1"})
    assert (SmtpCheck.type_name, SmtpCheck.default_interval, SmtpCheck.default_timeout) == \
        ("smtp", 600.0, 10.0)
    assert (config.security, config.verify_tls, config.helo_name) == ("none", True, None)  # type: ignore[attr-defined]
    assert config.response_time.warning == 5.0  # type: ignore[attr-defined]


@pytest.mark.parametrize(("options", "where", "says"), [
    pytest.param({"security": "tls"}, "security", "Input should be 'none', 'starttls' or 'ssl'",
                 id="unknown-security"),
    pytest.param({"helo_name": "a\r\nRSET"}, "helo_name", "one line without line breaks",
                 id="command-injection"),
    pytest.param({"username": "ops"}, "username", "Extra inputs are not permitted",
                 id="no-login-for-smtp"),
    pytest.param({"ca_file": "/nonexistent/ca.pem"}, "ca_file", "Path does not point to a file",
                 id="missing-ca-file"),
])
def test_bad_config_is_refused_with_its_path(options: dict[str, Any], where: str,
                                             says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        SmtpCheck.Config.model_validate({"host": "mx1", **options})
    errors = caught.value.errors()
    assert [".".join(map(str, e["loc"])) for e in errors] == [where]
    assert says in errors[0]["msg"]


# -- a real server -------------------------------------------------------------------------


def test_a_plain_server_answers_greeting_and_ehlo(plain: SmtpServer) -> None:
    result = run(host=plain.host, port=plain.port)
    target = f"{plain.host}:{plain.port}"
    assert (result.status, result.target) == (Status.OK, target)
    assert re.fullmatch(rf'{target} answers SMTP in [\d.]+ [µm]?s \(connect [\d.]+ [µm]?s\): '
                        r'"220 localhost Python SMTP [\d.]+"; EHLO accepted', result.message), \
        result.message
    metrics = result.metrics
    assert set(metrics) == {"connect_seconds", "response_seconds", "total_seconds"}
    assert 0 < metrics["connect_seconds"] < metrics["total_seconds"] < 1.0
    assert plain.messages == []  # a check sends no mail


def test_starttls_is_used_and_the_certificate_judged(starttls: SmtpServer) -> None:
    result = run(host=starttls.host, port=starttls.port, security="starttls",
                 ca_file=str(starttls.ca_file))
    assert result.status is Status.OK
    assert "; EHLO accepted; STARTTLS accepted; TLS certificate expires in " in result.message
    assert result.metrics["certificate_expires_in_seconds"] > 30 * 86400


def test_starttls_with_an_untrusted_certificate_is_critical(starttls: SmtpServer) -> None:
    result = run(host=starttls.host, port=starttls.port, security="starttls")
    assert result.status is Status.CRITICAL
    assert "SMTP: TLS certificate rejected: unable to get local issuer certificate" \
        in result.message
    unverified = run(host=starttls.host, port=starttls.port, security="starttls",
                     verify_tls=False)
    assert unverified.status is Status.OK


def test_starttls_asked_of_a_server_without_it_is_critical(plain: SmtpServer) -> None:
    result = run(host=plain.host, port=plain.port, security="starttls")
    assert result.status is Status.CRITICAL
    assert result.message == (f"{plain.host}:{plain.port} SMTP: STARTTLS not offered in the "
                              "EHLO reply — enable TLS on the server, or set security: none "
                              "if plain SMTP is intended")


def test_implicit_tls_counts_the_handshake_in_the_connect_time() -> None:
    with SmtpServer(security="ssl") as server:
        result = run(host=server.host, port=server.port, security="ssl",
                     ca_file=str(server.ca_file))
    assert result.status is Status.OK
    assert result.message.startswith(f"{server.host}:{server.port} answers SMTP over TLS in ")
    assert "certificate_expires_in_seconds" in result.metrics


def test_implicit_tls_against_a_plain_server_says_the_handshake_failed(
        plain: SmtpServer) -> None:
    result = run(host=plain.host, port=plain.port, security="ssl")
    assert result.status is Status.CRITICAL
    assert "SMTP over TLS: TLS handshake failed: WRONG_VERSION_NUMBER — is TLS spoken on " \
           "this port?" in result.message


def test_a_slow_answer_is_a_warning_naming_the_threshold(plain: SmtpServer) -> None:
    result = run(host=plain.host, port=plain.port, response_time={"warning": "0.001ms"})
    assert result.status is Status.WARNING
    assert "answers SMTP slowly in " in result.message
    assert "(warning at 1 µs; connect " in result.message


# -- three ways to fail, and more --------------------------------------------------------


def test_a_closed_port_is_critical_refused() -> None:
    port = free_port()
    result = run(host=HOST, port=port)
    assert result.status is Status.CRITICAL
    assert result.message == (f"{HOST}:{port} SMTP: refused — nothing listens on port "
                              f"{port}; is the service running?")


def test_a_hung_server_times_out_without_a_greeting() -> None:
    with RawTcpServer(None) as hung:
        started = time.monotonic()
        result = run(timeout=1.0, host=HOST, port=hung.port)
    assert time.monotonic() - started < 3.0
    assert result.status is Status.CRITICAL
    assert result.message.startswith(f"{HOST}:{hung.port} SMTP: timed out after 1 s "
                                     "(no greeting) — the port accepts connections but the "
                                     "server never answered")
    assert "connect_seconds" in result.metrics


def test_an_ssh_server_is_an_unexpected_greeting() -> None:
    with Greeter(SSH_BANNER) as ssh:
        result = run(host=HOST, port=ssh.port)
    assert result.status is Status.CRITICAL
    assert result.message == (f'{HOST}:{ssh.port} SMTP: unexpected greeting '
                              '"SSH-2.0-OpenSSH_9.2" — expected "220 …"; is another service '
                              "listening on this port?")


def test_an_ftp_server_greets_alike_but_refuses_ehlo() -> None:
    with FtpServer() as ftp:
        result = run(host=ftp.host, port=ftp.port)
    assert result.status is Status.CRITICAL
    assert 'SMTP: EHLO refused: "500 Command "EHLO" not understood." — after the greeting ' \
           '"220 pyftpdlib' in result.message


@pytest.mark.real
def test_a_pop3_server_is_an_unexpected_greeting() -> None:
    with Dovecot() as mail:
        result = run(host=mail.host, port=mail.pop3)
    assert result.status is Status.CRITICAL
    assert 'SMTP: unexpected greeting "+OK Dovecot (Debian) ready." — expected "220 …"' \
        in result.message


def test_a_server_that_hangs_up_at_once_is_critical() -> None:
    # RawTcpServer with a reply waits for the client to speak first, then gives up
    # after a second and closes: to a mail client, a server that hangs up unheard.
    with RawTcpServer(SSH_BANNER) as mute:
        result = run(host=HOST, port=mute.port)
    assert result.status is Status.CRITICAL
    assert "SMTP: connection closed by the server (no greeting)" in result.message


def test_a_554_greeting_says_the_service_turns_us_away() -> None:
    with Greeter(b"554 mx1.example.jp no SMTP service for you\r\n") as refusing:
        result = run(host=HOST, port=refusing.port)
    assert result.status is Status.CRITICAL
    assert 'SMTP: service refused in the greeting: "554 mx1.example.jp no SMTP service ' \
           'for you" — the server runs but turns clients away' in result.message


def test_a_greeting_dripped_slowly_still_times_out_on_time() -> None:
    drip = [(0.3, bytes([c])) for c in b"220 slow.example.jp ESMTP\r\n"]
    with Greeter(*drip) as slow:
        started = time.monotonic()
        result = run(timeout=1.0, host=HOST, port=slow.port)
    assert time.monotonic() - started < 2.0  # one deadline, not one per byte
    assert result.status is Status.CRITICAL
    assert "SMTP: timed out after 1 s (no greeting)" in result.message
