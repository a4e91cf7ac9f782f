"""The ``pop3`` and ``imap`` checks against a real Dovecot: plain, STARTTLS, implicit TLS."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import ValidationError

from agent.clock import SystemClock
from checks.base import CheckContext, Result, Status
from checks.dialogue import DialogueCheck
from checks.mailbox import ImapCheck, Pop3Check
from tests.checks.test_smtp_check import SSH_BANNER, Greeter
from tests.support.dovecot import Dovecot
from tests.support.http_server import HOST, RawTcpServer, free_port


@dataclass(frozen=True)
class Kind:
    """What differs between the two protocols in these tests."""

    cls: type[DialogueCheck]
    name: str
    greeting: str      # the start of Dovecot's greeting
    expected: str      # what the check says it expected instead
    upgrade: str       # the STARTTLS command's name in the message

    def plain(self, mail: Dovecot) -> int:
        return mail.pop3 if self.cls is Pop3Check else mail.imap

    def tls(self, mail: Dovecot) -> int:
        return mail.pop3s if self.cls is Pop3Check else mail.imaps

    def other(self, mail: Dovecot) -> int:
        """The plain port of the other protocol: a real server speaking the wrong one."""
        return mail.imap if self.cls is Pop3Check else mail.pop3


POP3 = Kind(Pop3Check, "POP3", '"+OK Dovecot (Debian) ready."', "+OK …", "STLS")
IMAP = Kind(ImapCheck, "IMAP", '"* OK [CAPABILITY IMAP4rev1', "* OK …", "STARTTLS")
KINDS = [pytest.param(POP3, id="pop3"), pytest.param(IMAP, id="imap")]


def make(kind: Kind, timeout: float = 5.0, **options: Any) -> DialogueCheck:
    return kind.cls(kind.name.lower(), kind.cls.Config.model_validate(options),
                    timeout=timeout, context=CheckContext(clock=SystemClock()))


def run(kind: Kind, timeout: float = 5.0, **options: Any) -> Result:
    [result] = make(kind, timeout, **options).execute()
    return result


@pytest.fixture(scope="module")
def mail() -> Iterator[Dovecot]:
    with Dovecot() as server:
        yield server


def login(mail: Dovecot) -> dict[str, Any]:
    return {"username": mail.USER, "password": mail.PASSWORD}


# -- config --------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "ports"), [
    pytest.param(POP3, (110, 110, 995), id="pop3"),
    pytest.param(IMAP, (143, 143, 993), id="imap"),
])
def test_ports_default_by_security(kind: Kind, ports: tuple[int, int, int]) -> None:
    found = tuple(kind.cls.Config.model_validate({"host": "mail1", "security": s}).port  # type: ignore[attr-defined]
                  for s in ("none", "starttls", "ssl"))
    assert found == ports
    assert (kind.cls.default_interval, kind.cls.default_timeout) == (600.0, 10.0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("options", "where", "says"), [
    pytest.param({"password": "pw"}, "", "expected username and password together",
                 id="password-without-user"),
    pytest.param({"username": "ops", "password": "pw\r\nDELE 1"}, "password",
                 "one line without line breaks", id="command-injection"),
    pytest.param({"security": "imaps"}, "security", "Input should be", id="unknown-security"),
])
def test_bad_config_is_refused_with_its_path(kind: Kind, options: dict[str, Any], where: str,
                                             says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        kind.cls.Config.model_validate({"host": "mail1", **options})
    errors = caught.value.errors()
    assert [".".join(map(str, e["loc"])) for e in errors] == [where]
    assert says in errors[0]["msg"]
    assert "DELE" not in str(caught.value)


# -- a real server -------------------------------------------------------------------------


@pytest.mark.real
@pytest.mark.parametrize("kind", KINDS)
def test_the_greeting_alone_is_ok(mail: Dovecot, kind: Kind) -> None:
    port = kind.plain(mail)
    result = run(kind, host=mail.host, port=port)
    target = f"{mail.host}:{port}"
    assert (result.status, result.target) == (Status.OK, target)
    assert result.message.startswith(f"{target} answers {kind.name} in ")
    assert f"): {kind.greeting}" in result.message
    assert 0 < result.metrics["connect_seconds"] < result.metrics["total_seconds"] < 1.0


@pytest.mark.real
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("security", "notes"), [
    pytest.param("none", "", id="plain"),
    pytest.param("starttls", "{upgrade} accepted; ", id="starttls"),
    pytest.param("ssl", "", id="implicit-tls"),
])
def test_a_login_is_ok_in_every_security_mode(mail: Dovecot, kind: Kind, security: str,
                                              notes: str) -> None:
    port = kind.tls(mail) if security == "ssl" else kind.plain(mail)
    result = run(kind, host=mail.host, port=port, security=security,
                 ca_file=str(mail.ca_file), **login(mail))
    assert result.status is Status.OK, result.message
    assert f"; {notes.format(upgrade=kind.upgrade)}logged in as {mail.USER}" in result.message
    over_tls = " over TLS" if security == "ssl" else ""
    assert result.message.startswith(f"{mail.host}:{port} answers {kind.name}{over_tls} in ")
    assert ("certificate_expires_in_seconds" in result.metrics) is (security != "none")


@pytest.mark.real
@pytest.mark.parametrize("kind", KINDS)
def test_a_wrong_password_is_critical_and_never_shown(
        mail: Dovecot, kind: Kind, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "n0t-The-Secret-Pass"
    check = make(kind, host=mail.host, port=kind.plain(mail), username=mail.USER,
                 password=wrong)
    [result] = check.execute()
    assert result.status is Status.CRITICAL
    assert f"{kind.name}: login as {mail.USER} rejected: " in result.message
    assert "Authentication failed" in result.message
    assert "— check username and password in the config" in result.message
    for text in (result.message, repr(check.config), caplog.text):
        assert wrong not in text


@pytest.mark.real
@pytest.mark.parametrize("kind", KINDS)
def test_an_untrusted_certificate_is_critical(mail: Dovecot, kind: Kind) -> None:
    result = run(kind, host=mail.host, port=kind.tls(mail), security="ssl")
    assert result.status is Status.CRITICAL
    assert f"{kind.name} over TLS: TLS certificate rejected: unable to get local issuer " \
           "certificate" in result.message


@pytest.mark.real
@pytest.mark.parametrize("kind", KINDS)
def test_implicit_tls_against_a_plain_port_says_the_handshake_failed(mail: Dovecot,
                                                                     kind: Kind) -> None:
    result = run(kind, host=mail.host, port=kind.plain(mail), security="ssl")
    assert result.status is Status.CRITICAL
    assert "TLS handshake failed: WRONG_VERSION_NUMBER — is TLS spoken on this port?" \
        in result.message


# -- three ways to fail, and more --------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_closed_port_is_critical_refused(kind: Kind) -> None:
    port = free_port()
    result = run(kind, host=HOST, port=port)
    assert result.status is Status.CRITICAL
    assert result.message == (f"{HOST}:{port} {kind.name}: refused — nothing listens on port "
                              f"{port}; is the service running?")


@pytest.mark.parametrize("kind", KINDS)
def test_a_hung_server_times_out_without_a_greeting(kind: Kind) -> None:
    with RawTcpServer(None) as hung:
        result = run(kind, timeout=1.0, host=HOST, port=hung.port)
    assert result.status is Status.CRITICAL
    assert result.message.startswith(f"{HOST}:{hung.port} {kind.name}: timed out after 1 s "
                                     "(no greeting) — ")


@pytest.mark.parametrize("kind", KINDS)
def test_an_ssh_server_is_an_unexpected_greeting(kind: Kind) -> None:
    with Greeter(SSH_BANNER) as ssh:
        result = run(kind, host=HOST, port=ssh.port)
    assert result.status is Status.CRITICAL
    assert result.message == (f'{HOST}:{ssh.port} {kind.name}: unexpected greeting '
                              f'"SSH-2.0-OpenSSH_9.2" — expected "{kind.expected}"; is another '
                              "service listening on this port?")


@pytest.mark.real
@pytest.mark.parametrize("kind", KINDS)
def test_the_other_mailbox_protocol_is_an_unexpected_greeting(mail: Dovecot,
                                                              kind: Kind) -> None:
    result = run(kind, host=mail.host, port=kind.other(mail))
    assert result.status is Status.CRITICAL
    other = IMAP if kind is POP3 else POP3
    assert re.search(f"{kind.name}: unexpected greeting {re.escape(other.greeting)}.*"
                     f'— expected "{re.escape(kind.expected)}"', result.message)


@pytest.mark.parametrize(("kind", "refusal"), [
    pytest.param(POP3, b"-ERR [SYS/TEMP] Maximum number of connections reached\r\n",
                 id="pop3-err"),
    pytest.param(IMAP, b"* BYE Too many connections, try again later\r\n", id="imap-bye"),
])
def test_a_refusing_greeting_says_the_service_turns_us_away(kind: Kind,
                                                            refusal: bytes) -> None:
    with Greeter(refusal) as busy:
        result = run(kind, host=HOST, port=busy.port)
    assert result.status is Status.CRITICAL
    assert f'{kind.name}: service refused in the greeting: "{refusal.decode().strip()}"' \
        in result.message


def test_a_preauthenticated_imap_session_skips_the_login() -> None:
    # No server here can be made to greet a TCP client with PREAUTH; fake it.
    with Greeter(b"* PREAUTH [CAPABILITY IMAP4rev1] ready\r\n", b"* BYE bye\r\n") as preauth:
        result = run(IMAP, host=HOST, port=preauth.port, username="u", password="p4ss-word")
    assert result.status is Status.OK
    assert result.message.endswith("; pre-authenticated: no login needed")


def test_a_hung_server_under_implicit_tls_times_out_in_the_handshake() -> None:
    with RawTcpServer(None) as hung:
        result = run(POP3, timeout=1.0, host=HOST, port=hung.port, security="ssl")
    assert result.status is Status.CRITICAL
    assert result.message == (f"{HOST}:{hung.port} POP3 over TLS: timed out after 1 s (TLS "
                              "handshake) — the server never completed the handshake")
