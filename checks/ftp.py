"""FTP service check: ``220`` greeting, optional USER/PASS login, QUIT (RFC 959).

One check watches one ``host:port`` (default port 21); see :mod:`checks.dialogue`
for the session, the failure reasons and the metrics. No data connection is
opened: the control connection is what "the FTP service answers" means.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from checks.base import CheckConfig
from checks.dialogue import (
    Dialogue,
    DialogueCheck,
    DialogueConfig,
    LoginConfig,
    login_rejected,
    quote,
    read_coded_reply,
    unavailable,
    unexpected,
)

logger = logging.getLogger(__name__)

#: "120 Service ready in nnn minutes" may come before the 220 (RFC 959 §5.4).
_MAX_PRELIMINARY = 3


class FtpConfig(DialogueConfig, LoginConfig):
    """Options of a ``type: ftp`` check (documented in config/example.yaml)."""

    default_ports: ClassVar[dict[str, int]] = {"none": 21}


class FtpCheck(DialogueCheck):
    """Greeting, then USER/PASS when configured."""

    type_name: ClassVar[str] = "ftp"
    Config: ClassVar[type[CheckConfig]] = FtpConfig
    protocol: ClassVar[str] = "FTP"

    def converse(self, talk: Dialogue) -> list[str]:
        config: FtpConfig = self.config  # type: ignore[assignment]
        notes = [quote(greeting(talk))]
        if config.username is not None and config.password is not None:
            login(talk, config.username, config.password.get_secret_value())
            notes.append(f"logged in as {config.username}")
        return notes


def greeting(talk: Dialogue) -> str:
    """The first line of the ``220`` greeting, after any ``120`` "wait" replies."""
    for _ in range(_MAX_PRELIMINARY):
        code, lines = read_coded_reply(talk, "greeting", "220 …")
        if code != 120:
            break
    if code == 220:
        return lines[0]
    if code >= 400:
        raise unavailable("greeting", lines[0])
    raise unexpected("greeting", lines[0], "220 …")


def login(talk: Dialogue, user: str, password: str) -> None:
    """USER, then PASS if asked (331); 230 means logged in (202: no login needed)."""
    talk.send(f"USER {user}", "USER")
    code, lines = read_coded_reply(talk, "reply to USER", "331 …")
    if code == 331:
        talk.send(f"PASS {password}", "PASS")
        code, lines = read_coded_reply(talk, "reply to PASS", "230 …")
    if code not in (230, 202):
        raise login_rejected(user, lines[-1])
