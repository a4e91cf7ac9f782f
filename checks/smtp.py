"""SMTP service check: ``220`` greeting, EHLO, optional STARTTLS, QUIT (RFC 5321, 3207).

One check watches one ``host:port``; the port defaults by ``security`` as for the
email notifier: 25 (none), 587 (starttls), 465 (ssl, TLS from the first byte).
See :mod:`checks.dialogue` for the session, the failure reasons and the metrics.
No mail is sent: MAIL/RCPT would leave traces in the server's queue and logs.
"""

from __future__ import annotations

import logging
import socket
from typing import ClassVar

from checks.base import CheckConfig
from checks.dialogue import (
    Dialogue,
    DialogueCheck,
    Failure,
    Line,
    TlsDialogueConfig,
    quote,
    read_coded_reply,
    rejected,
    unavailable,
    unexpected,
)

logger = logging.getLogger(__name__)


class SmtpConfig(TlsDialogueConfig):
    """Options of a ``type: smtp`` check (documented in config/example.yaml)."""

    default_ports: ClassVar[dict[str, int]] = {"none": 25, "starttls": 587, "ssl": 465}

    helo_name: Line | None = None
    """The name we give in EHLO; default: this host's name."""


class SmtpCheck(DialogueCheck):
    """Greeting, EHLO, and STARTTLS with a second EHLO when ``security: starttls``."""

    type_name: ClassVar[str] = "smtp"
    Config: ClassVar[type[CheckConfig]] = SmtpConfig
    protocol: ClassVar[str] = "SMTP"

    def converse(self, talk: Dialogue) -> list[str]:
        config: SmtpConfig = self.config  # type: ignore[assignment]
        hello = config.helo_name or socket.gethostname()  # no DNS: getfqdn() may block
        first = greeting(talk)
        keywords = ehlo(talk, hello, first)
        notes = [quote(first), "EHLO accepted"]
        if config.security == "starttls":
            starttls(talk, keywords, self)
            ehlo(talk, hello, first)  # RFC 3207 §4.2: what was said before TLS is void
            notes.append("STARTTLS accepted")
        return notes


def greeting(talk: Dialogue) -> str:
    """The first line of a ``220`` greeting (``554``/``421``: the server turns us away)."""
    code, lines = read_coded_reply(talk, "greeting", "220 …")
    if code == 220:
        return lines[0]
    if code >= 400:
        raise unavailable("greeting", lines[0])
    raise unexpected("greeting", lines[0], "220 …")


def ehlo(talk: Dialogue, hello: str, first: str) -> set[str]:
    """EHLO; the extension keywords the server lists (``STARTTLS``, ``SIZE``, …)."""
    talk.send(f"EHLO {hello}", "EHLO")
    code, lines = read_coded_reply(talk, "reply to EHLO", "250 …")
    if code != 250:
        raise rejected("EHLO", lines[-1], f"after the greeting {quote(first)}; is this "
                       "an SMTP server, and does it accept this host?")
    return {line[4:].split()[0].upper() for line in lines[1:] if line[4:].split()}


def starttls(talk: Dialogue, keywords: set[str], check: DialogueCheck) -> None:
    """STARTTLS and the handshake (the certificate is judged by the check)."""
    if "STARTTLS" not in keywords:
        raise Failure("STARTTLS not offered in the EHLO reply",
                      "enable TLS on the server, or set security: none if plain SMTP "
                      "is intended")
    talk.send("STARTTLS", "STARTTLS")
    code, lines = read_coded_reply(talk, "reply to STARTTLS", "220 …")
    if code != 220:
        raise rejected("STARTTLS", lines[-1])
    talk.start_tls(check.tls())
