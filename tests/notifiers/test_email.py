"""The e-mail notifier against a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from notifiers.base import Alert, NotifierError
from notifiers.email import EmailConfig, EmailNotifier, message_id
from tests.support.http_server import LoopbackTLS, RawTcpServer, free_port
from tests.support.smtp_server import SmtpServer

SUBJECT = "【障害】web01 の監視: CRITICAL（ディスク使用率 95%）"
BODY = "web01 のディスク使用率が 95% に達しました。\n対応をお願いします。\n"


def make_alert(**changes: Any) -> Alert:
    fields: dict[str, Any] = {
        "kind": "problem", "notification_id": 42, "incident_id": 7,
        "dedup_key": "disk:web01:/", "host": "kanshi01.example.jp", "check": "disk",
        "target": "web01:/", "status": "CRITICAL", "previous_status": "OK",
        "severity": "critical", "message": "95% used", "detected_at": "2024-05-01T01:02:03+00:00",
        "at": "2024-05-01T01:04:03+00:00", "outage_seconds": None, "locale": "ja",
        "subject": SUBJECT, "body": BODY,
    }
    return Alert(**{**fields, **changes})


def make_notifier(server: SmtpServer | None = None, **options: Any) -> EmailNotifier:
    settings: dict[str, Any] = {
        "from": "監視 <kanshi@example.jp>", "to": ["ops@example.jp"], "timeout": "5s"}
    if server is not None:
        settings |= {"host": server.host, "port": server.port, "security": server.security}
        if server.tls is not None:
            settings["ca_file"] = str(server.ca_file)
    return EmailNotifier("ops-mail", EmailConfig.model_validate(settings | options))


def failure(notifier: EmailNotifier, alert: Alert | None = None) -> NotifierError:
    with pytest.raises(NotifierError) as caught:
        notifier.send(alert or make_alert())
    return caught.value


def everything_said(err: BaseException, notifier: EmailNotifier,
                    caplog: pytest.LogCaptureFixture) -> str:
    """All text a secret could leak into: the error, its traceback, reprs, logs."""
    return "\n".join([str(err), repr(err), "".join(traceback.format_exception(err)),
                      repr(notifier), repr(notifier.config), str(notifier.config),
                      caplog.text])


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


@pytest.fixture
def starttls_auth() -> Iterator[SmtpServer]:
    with SmtpServer(security="starttls", auth=True) as server:
        yield server


# -- delivery ---------------------------------------------------------------

def test_a_japanese_alert_arrives_intact_with_its_headers(smtp: SmtpServer) -> None:
    make_notifier(smtp).send(make_alert())

    [received] = smtp.wait_for(1)
    message = received.message
    assert message["Subject"] == SUBJECT
    assert message.get_content() == BODY
    assert message["From"] == "監視 <kanshi@example.jp>"
    assert received.mail_from == "kanshi@example.jp"
    assert received.rcpt_tos == ("ops@example.jp",)
    assert message["X-Kanshi-Incident"] == "7"
    assert message["X-Kanshi-Dedup-Key"] == "disk:web01:/"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Message-ID"] == message_id(make_alert())


def test_every_recipient_gets_the_same_message(smtp: SmtpServer) -> None:
    make_notifier(smtp, to=["ops@example.jp", "当番 <oncall@example.jp>"]).send(make_alert())

    [received] = smtp.wait_for(1)
    assert received.rcpt_tos == ("ops@example.jp", "oncall@example.jp")


def test_a_retried_notice_keeps_its_message_id(smtp: SmtpServer) -> None:
    notifier = make_notifier(smtp)
    notifier.send(make_alert())
    notifier.send(make_alert())
    notifier.send(make_alert(notification_id=43))

    first, retry, other = (m.message["Message-ID"] for m in smtp.wait_for(3))
    assert first == retry
    assert other != first
    assert first.endswith("@kanshi01.example.jp>")


def test_it_sends_over_starttls_verified_against_the_ca() -> None:
    with SmtpServer(security="starttls") as server:
        make_notifier(server).send(make_alert())
        [received] = server.wait_for(1)
    assert received.tls


def test_it_sends_over_implicit_ssl() -> None:
    with SmtpServer(security="ssl") as server:
        make_notifier(server).send(make_alert())
        [received] = server.wait_for(1)
    assert received.tls
    assert received.message["Subject"] == SUBJECT


def test_it_logs_in_after_starttls(starttls_auth: SmtpServer) -> None:
    make_notifier(starttls_auth, username=SmtpServer.USER,
                  password=SmtpServer.PASSWORD).send(make_alert())

    [received] = starttls_auth.wait_for(1)
    assert received.user == SmtpServer.USER
    assert received.tls


def test_it_logs_in_over_implicit_ssl() -> None:
    with SmtpServer(security="ssl", auth=True) as server:
        make_notifier(server, username=SmtpServer.USER,
                      password=SmtpServer.PASSWORD).send(make_alert())
        [received] = server.wait_for(1)
    assert received.user == SmtpServer.USER


def test_verify_tls_false_accepts_an_untrusted_certificate() -> None:
    with SmtpServer(security="starttls") as server:
        make_notifier(server, ca_file=None, verify_tls=False).send(make_alert())
        server.wait_for(1)


def test_it_delivers_again_once_the_server_is_back(smtp: SmtpServer) -> None:
    notifier = make_notifier(smtp)
    smtp.stop()
    assert not failure(notifier).permanent

    smtp.start()
    notifier.send(make_alert())
    smtp.wait_for(1)


# -- failure modes ------------------------------------------------------------

@pytest.mark.parametrize(("command", "reply", "permanent", "says"), [
    pytest.param("RCPT", "550 5.1.1 no such user", True, "check to of notifier",
                 id="a recipient refused with 550 is permanent"),
    pytest.param("RCPT", "451 4.3.0 try again later", False, "451 4.3.0",
                 id="a recipient deferred with 451 is transient"),
    pytest.param("MAIL", "553 5.7.1 sender not allowed", True, "check from of notifier",
                 id="a sender refused with 553 is permanent"),
    pytest.param("MAIL", "421 4.7.0 too busy", False, "421 4.7.0",
                 id="a sender deferred with 421 is transient"),
    pytest.param("DATA", "554 5.6.0 message rejected", True, "refused the message",
                 id="a message refused with 554 is permanent"),
    pytest.param("DATA", "452 4.3.1 mailbox full", False, "refused the message",
                 id="a message deferred with 452 is transient"),
])
def test_smtp_replies_are_judged_by_their_code(
        smtp: SmtpServer, command: Any, reply: str, permanent: bool, says: str) -> None:
    smtp.reject(command, reply)

    err = failure(make_notifier(smtp))

    assert err.permanent is permanent
    assert says in str(err)
    assert f"127.0.0.1:{smtp.port}" in str(err)
    assert smtp.messages == []


def test_one_refused_recipient_of_two_is_reported_by_address(smtp: SmtpServer) -> None:
    smtp.reject("RCPT", "550 5.1.1 no such user", address="gone@example.jp")

    err = failure(make_notifier(smtp, to=["ops@example.jp", "gone@example.jp"]))

    assert err.permanent
    assert "refused 1 of 2 recipients: gone@example.jp (550" in str(err)
    [received] = smtp.wait_for(1)
    assert received.rcpt_tos == ("ops@example.jp",)


def test_a_wrong_password_is_permanent_and_never_shown(
        starttls_auth: SmtpServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-Passw0rd-123"
    notifier = make_notifier(starttls_auth, username=SmtpServer.USER, password=wrong)

    err = failure(notifier)

    assert err.permanent
    assert (f"SMTP AUTH failed for user {SmtpServer.USER} at 127.0.0.1:{starttls_auth.port}"
            in str(err))
    assert 'check username/password of notifier "ops-mail"' in str(err)
    assert wrong not in everything_said(err, notifier, caplog)


def test_a_server_requiring_auth_says_to_set_credentials(starttls_auth: SmtpServer) -> None:
    err = failure(make_notifier(starttls_auth))

    assert err.permanent
    assert "username/password" in str(err)


def test_a_wrong_ca_is_a_transient_tls_error_naming_ca_file_and_verify_tls() -> None:
    other_ca = LoopbackTLS()
    with SmtpServer(security="starttls") as server:
        err = failure(make_notifier(server, ca_file=str(other_ca.ca_file)))
    other_ca.cleanup()

    assert not err.permanent
    assert "could not be verified" in str(err)
    assert "ca_file" in str(err)
    assert "verify_tls" in str(err)


def test_ssl_against_a_plain_server_is_a_transient_tls_error(smtp: SmtpServer) -> None:
    err = failure(make_notifier(smtp, security="ssl"))

    assert not err.permanent
    assert "TLS handshake" in str(err)
    assert "security/port" in str(err)


def test_starttls_against_a_server_without_it_is_permanent(smtp: SmtpServer) -> None:
    err = failure(make_notifier(smtp, security="starttls"))

    assert err.permanent
    assert "does not offer STARTTLS" in str(err)


def test_a_closed_port_is_a_transient_connection_refused() -> None:
    port = free_port()
    err = failure(make_notifier(host="127.0.0.1", port=port))

    assert not err.permanent
    assert f"connection to 127.0.0.1:{port} refused" in str(err)


def test_a_server_that_never_speaks_times_out_transiently() -> None:
    with RawTcpServer(reply=None) as silent:
        notifier = make_notifier(host="127.0.0.1", port=silent.port, timeout="0.5s")
        started = time.monotonic()
        err = failure(notifier)

    assert time.monotonic() - started < 10
    assert not err.permanent
    assert "no reply from" in str(err)
    assert 'raise timeout of notifier "ops-mail"' in str(err)


def test_the_password_never_appears_in_an_error_or_repr(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # A plain server offers AUTH here, so the password really goes on the wire.
    with SmtpServer(auth=True) as server:
        server.reject("RCPT", "550 5.1.1 no such user")
        notifier = make_notifier(server, username=SmtpServer.USER, password=SmtpServer.PASSWORD)
        err = failure(notifier)

    assert err.permanent
    assert SmtpServer.PASSWORD not in everything_said(err, notifier, caplog)


# -- configuration --------------------------------------------------------------

@pytest.mark.parametrize(("security", "port"), [
    pytest.param("none", 25, id="plain defaults to 25"),
    pytest.param("starttls", 587, id="starttls defaults to 587"),
    pytest.param("ssl", 465, id="ssl defaults to 465"),
])
def test_the_port_defaults_by_security(security: str, port: int) -> None:
    assert make_notifier(host="mail.example.jp", security=security).config.port == port


def test_a_single_recipient_needs_no_list() -> None:
    assert make_notifier(host="mail.example.jp", to="ops@example.jp").config.to == (
        "ops@example.jp",)


@pytest.mark.parametrize(("options", "says"), [
    pytest.param({"to": []}, "at least 1", id="no recipients"),
    pytest.param({"to": ["not-an-address"]}, "expected an e-mail address",
                 id="a recipient without @"),
    pytest.param({"to": ["a@example.jp, b@example.jp"]}, "expected an e-mail address",
                 id="two addresses in one entry"),
    pytest.param({"from": "kanshi@example.jp\r\nBcc: x@example.jp"}, "line break",
                 id="a header injection in from"),
    pytest.param({"username": "ops"}, "username and password together",
                 id="a username without a password"),
    pytest.param({"security": "tls"}, "security", id="an unknown security"),
    pytest.param({"port": 70000}, "port", id="a port out of range"),
    pytest.param({"timeout": "soon"}, "expected a duration", id="a timeout that is no duration"),
    pytest.param({"smtp_host": "x"}, "smtp_host", id="an unknown key"),
])
def test_bad_settings_are_refused_at_load(options: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        make_notifier(host="mail.example.jp", **options)
    assert says in str(caught.value)


def test_a_rejected_password_is_not_echoed_by_validation() -> None:
    with pytest.raises(ValidationError) as caught:
        make_notifier(host="mail.example.jp", username="ops", password=["hunter2-secret"])
    assert "hunter2-secret" not in str(caught.value)
