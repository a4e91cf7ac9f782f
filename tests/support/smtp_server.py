"""A real SMTP server on 127.0.0.1 for tests, built on aiosmtpd's ``Controller``.

::

    with SmtpServer(security="starttls", auth=True) as smtp:
        ...send to smtp.host:smtp.port, trusting smtp.ca_file,
        as SmtpServer.USER / SmtpServer.PASSWORD...
        [received] = smtp.messages
        assert received.message["Subject"] == "…"

It keeps its port across :meth:`SmtpServer.stop` / :meth:`SmtpServer.start`
("the mail server was down for a while, then back"), and :meth:`SmtpServer.reject`
makes it answer an error to MAIL, RCPT or DATA.
"""

from __future__ import annotations

import email
import email.policy
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.support.http_server import HOST, LoopbackTLS, free_port

Security = Literal["none", "starttls", "ssl"]
Command = Literal["MAIL", "RCPT", "DATA"]


@dataclass(frozen=True)
class ReceivedMessage:
    """One accepted message: envelope, parsed message and how the session looked."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    raw: bytes
    user: str | None  # the AUTH login, if the client authenticated
    tls: bool         # whether the session was encrypted (implicit SSL or STARTTLS)


class _Handler:
    """aiosmtpd hooks: record messages, or answer the programmed rejection."""

    def __init__(self, owner: SmtpServer) -> None:
        self.owner = owner

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        if reply := self.owner._rejection("MAIL", address):
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if reply := self.owner._rejection("RCPT", address):
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if reply := self.owner._rejection("DATA", None):
            return reply
        self.owner._record(_received(server, session, envelope))
        return "250 Message accepted for delivery"


def _received(server: SMTP, session: Session, envelope: Envelope) -> ReceivedMessage:
    raw = cast(bytes, envelope.original_content)
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    login = getattr(session.auth_data, "login", None)
    transport = server.transport
    encrypted = session.ssl is not None or (
        transport is not None and transport.get_extra_info("sslcontext") is not None)
    return ReceivedMessage(
        mail_from=envelope.mail_from or "", rcpt_tos=tuple(envelope.rcpt_tos),
        message=parsed, raw=raw,
        user=login.decode() if isinstance(login, bytes) else login, tls=encrypted)


class SmtpServer:
    """aiosmtpd on 127.0.0.1 with optional STARTTLS / implicit SSL and AUTH.

    ``security``: ``"none"``, ``"starttls"`` (advertised and, by default,
    required before MAIL) or ``"ssl"`` (TLS from the first byte). With
    ``auth=True`` it offers AUTH PLAIN/LOGIN for :attr:`USER` / :attr:`PASSWORD`;
    with STARTTLS only after it, and then AUTH is required before MAIL.
    Certificates come from ``tls`` (a :class:`LoopbackTLS`, made if needed).
    """

    USER = "kanshi-ops"
    PASSWORD = "pa55-Secret-Word"

    def __init__(self, *, security: Security = "none", auth: bool = False,
                 require_starttls: bool = True, tls: LoopbackTLS | None = None,
                 port: int = 0) -> None:
        self.security = security
        self.auth = auth
        self.require_starttls = require_starttls
        self._own_tls = tls is None and security != "none"
        self.tls = LoopbackTLS() if self._own_tls else tls
        self.host = HOST
        self.port = port
        self._messages: list[ReceivedMessage] = []
        self._rejections: list[tuple[Command, str | None, str]] = []
        self._changed = threading.Condition()
        self._controller: Controller | None = None

    @property
    def ca_file(self) -> Path:
        """The CA (PEM) that signed this server's certificate."""
        if self.tls is None:
            raise AttributeError("this SmtpServer has no TLS (security='none')")
        return self.tls.ca_file

    # -- what arrived ------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._changed:
            return list(self._messages)

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[ReceivedMessage]:
        """The messages once at least ``count`` have arrived (``AssertionError`` if not)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} message(s) within {timeout} s, "
                                         f"got {len(self._messages)}")
                self._changed.wait(left)
            return list(self._messages)

    def _record(self, message: ReceivedMessage) -> None:
        with self._changed:
            self._messages.append(message)
            self._changed.notify_all()

    # -- failures on demand --------------------------------------------------

    def reject(self, command: Command, reply: str, *, address: str | None = None) -> None:
        """Answer ``reply`` (e.g. ``"550 5.1.1 no such user"``) to ``command``.

        ``address`` limits a MAIL/RCPT rejection to that address. Lasts until
        :meth:`accept_all`.
        """
        with self._changed:
            self._rejections.append((command, address, reply))

    def accept_all(self) -> None:
        """Forget every :meth:`reject`."""
        with self._changed:
            self._rejections.clear()

    def _rejection(self, command: Command, address: str | None) -> str | None:
        with self._changed:
            for cmd, only, reply in self._rejections:
                if cmd == command and only in (None, address):
                    return reply
        return None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> SmtpServer:
        """Listen; after :meth:`stop` it listens on the same port again."""
        if self.port == 0:
            self.port = free_port()
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port,
                                      server_hostname="localhost", **self._smtp_options())
        self._controller.start()
        return self

    def _smtp_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.security == "ssl" and self.tls is not None:
            options["ssl_context"] = self.tls.server_context()
        if self.security == "starttls" and self.tls is not None:
            options["tls_context"] = self.tls.server_context()
            options["require_starttls"] = self.require_starttls
        if self.auth:
            # aiosmtpd only counts STARTTLS as TLS (it offers no AUTH at all on an
            # implicit-SSL session unless told TLS is not required), and warns
            # when AUTH is required without TLS; so AUTH is required only with
            # STARTTLS and merely offered otherwise.
            starttls = self.security == "starttls"
            options.update(authenticator=self._authenticate, auth_require_tls=starttls,
                           auth_required=starttls)
        return options

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope,
                      mechanism: str, auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword)
              and auth_data.login == self.USER.encode()
              and auth_data.password == self.PASSWORD.encode())
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    def stop(self) -> None:
        """Stop listening; :meth:`start` reuses the port (nothing else should take it)."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._own_tls and self.tls is not None:
            self.tls.cleanup()
