"""Mailbox service checks: ``pop3`` (RFC 1939, STLS: RFC 2595) and ``imap`` (RFC 9051).

POP3: ``+OK`` greeting, optional USER/PASS, QUIT. IMAP: ``* OK`` greeting,
optional LOGIN, LOGOUT. Both run plain, upgraded (``security: starttls`` — STLS
or STARTTLS before the login) or over implicit TLS (``security: ssl``, the pop3s
and imaps ports). One check watches one ``host:port``; ports default by
``security``: 110/995 and 143/993. See :mod:`checks.dialogue` for the session,
the failure reasons and the metrics.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from checks.base import CheckConfig
from checks.dialogue import (
    MAX_REPLY_LINES,
    Dialogue,
    DialogueCheck,
    LoginConfig,
    TlsDialogueConfig,
    login_rejected,
    quote,
    rejected,
    unavailable,
    unexpected,
)

logger = logging.getLogger(__name__)


class Pop3Config(TlsDialogueConfig, LoginConfig):
    """Options of a ``type: pop3`` check (documented in config/example.yaml)."""

    default_ports: ClassVar[dict[str, int]] = {"none": 110, "starttls": 110, "ssl": 995}


class ImapConfig(TlsDialogueConfig, LoginConfig):
    """Options of a ``type: imap`` check (documented in config/example.yaml)."""

    default_ports: ClassVar[dict[str, int]] = {"none": 143, "starttls": 143, "ssl": 993}


class Pop3Check(DialogueCheck):
    """Greeting, STLS when asked, USER/PASS when configured."""

    type_name: ClassVar[str] = "pop3"
    Config: ClassVar[type[CheckConfig]] = Pop3Config
    protocol: ClassVar[str] = "POP3"

    def converse(self, talk: Dialogue) -> list[str]:
        config: Pop3Config = self.config  # type: ignore[assignment]
        notes = [quote(pop3_greeting(talk))]
        if config.security == "starttls":
            pop3_command(talk, "STLS")
            talk.start_tls(self.tls())
            notes.append("STLS accepted")
        if config.username is not None and config.password is not None:
            for line, name in ((f"USER {config.username}", "USER"),
                               (f"PASS {config.password.get_secret_value()}", "PASS")):
                pop3_command(talk, line, name, user=config.username)
            notes.append(f"logged in as {config.username}")
        return notes


def pop3_greeting(talk: Dialogue) -> str:
    line = talk.read_line("greeting")
    if line.startswith("+OK"):
        return line
    if line.startswith("-ERR"):
        raise unavailable("greeting", line)
    raise unexpected("greeting", line, "+OK …")


def pop3_command(talk: Dialogue, line: str, name: str = "", user: str | None = None) -> None:
    """Send one command and insist on ``+OK``; ``user`` marks a login step."""
    name = name or line
    talk.send(line, name)
    reply = talk.read_line(f"reply to {name}")
    if not reply.startswith("+OK"):
        raise login_rejected(user, reply) if user is not None else rejected(name, reply)


class ImapCheck(DialogueCheck):
    """Greeting, STARTTLS when asked, LOGIN when configured."""

    type_name: ClassVar[str] = "imap"
    Config: ClassVar[type[CheckConfig]] = ImapConfig
    protocol: ClassVar[str] = "IMAP"
    goodbye_command: ClassVar[str] = "Z LOGOUT"

    def converse(self, talk: Dialogue) -> list[str]:
        config: ImapConfig = self.config  # type: ignore[assignment]
        first = imap_greeting(talk)
        notes = [quote(first)]
        if config.security == "starttls":
            imap_command(talk, "A1", "STARTTLS")
            talk.start_tls(self.tls())
            notes.append("STARTTLS accepted")
        if first.upper().startswith("* PREAUTH"):
            notes.append("pre-authenticated: no login needed")
        elif config.username is not None and config.password is not None:
            command = (f"LOGIN {imap_string(config.username)} "
                       f"{imap_string(config.password.get_secret_value())}")
            imap_command(talk, "A2", command, "LOGIN", user=config.username)
            notes.append(f"logged in as {config.username}")
        return notes


def imap_greeting(talk: Dialogue) -> str:
    line = talk.read_line("greeting")
    kind = line.upper()
    if kind.startswith(("* OK", "* PREAUTH")):
        return line
    if kind.startswith("* BYE"):
        raise unavailable("greeting", line)
    raise unexpected("greeting", line, "* OK …")


def imap_command(talk: Dialogue, tag: str, command: str, name: str = "",
                 user: str | None = None) -> None:
    """Send a tagged command and insist on a tagged ``OK`` (untagged lines are skipped)."""
    name = name or command
    talk.send(f"{tag} {command}", name)
    for _ in range(MAX_REPLY_LINES):
        reply = talk.read_line(f"reply to {name}")
        if reply.startswith(f"{tag} "):
            break
    else:
        raise unexpected(f"reply to {name}", reply, f"{tag} OK …")
    if not reply[len(tag) + 1:].upper().startswith("OK"):
        raise login_rejected(user, reply) if user is not None else rejected(name, reply)


def imap_string(value: str) -> str:
    """A quoted IMAP string (RFC 9051 §4.3); line breaks were refused at config load."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
