"""E-mail over SMTP (stdlib ``smtplib``): one session per alert, no retries here.

A retried notice is byte-for-byte the same message with the same
``Message-ID``, so receivers (and people) can recognise a duplicate.
"""

from __future__ import annotations

import hashlib
import logging
import re
import smtplib
import socket
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formatdate, getaddresses, parseaddr
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, ConfigDict, Field, FilePath, SecretStr, model_validator

from checks.types import Duration
from notifiers.base import Alert, Notifier, NotifierConfig, NotifierError

logger = logging.getLogger(__name__)

Security = Literal["none", "starttls", "ssl"]
DEFAULT_PORTS: dict[str, int] = {"none": 25, "starttls": 587, "ssl": 465}
_ADDRESS = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+$")


def _one_address(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("expected one e-mail address, got a line break")
    parsed = getaddresses([value])
    if len(parsed) != 1 or not _ADDRESS.match(parsed[0][1]):
        raise ValueError(f"expected an e-mail address such as ops@example.com, got {value!r}")
    return value


Address = Annotated[str, AfterValidator(_one_address)]


class EmailConfig(NotifierConfig):
    """SMTP delivery options; ``port`` defaults by ``security`` (25 / 587 / 465)."""

    # pydantic would echo a rejected password in its error text.
    model_config = ConfigDict(hide_input_in_errors=True)

    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    security: Security = "none"
    username: str | None = None
    password: SecretStr | None = None
    sender: Address = Field(alias="from")
    to: tuple[Address, ...] = Field(min_length=1)
    timeout: Duration = 10.0
    """Seconds to wait for the connection and for each server reply."""
    verify_tls: bool = True
    ca_file: FilePath | None = None
    """Trust only this CA bundle (PEM) instead of the system store."""

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("port") is None:
            data["port"] = DEFAULT_PORTS.get(data.get("security", "none"), 25)
        if isinstance(data.get("to"), str):  # a single recipient needs no list
            data["to"] = [data["to"]]
        return data

    @model_validator(mode="after")
    def _credentials_paired(self) -> EmailConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("expected username and password together")
        return self


class EmailNotifier(Notifier):
    """Sends each alert as a UTF-8 e-mail through one SMTP server."""

    type_name: ClassVar[str] = "email"
    Config: ClassVar[type[NotifierConfig]] = EmailConfig
    config: EmailConfig

    def __init__(self, name: str, config: NotifierConfig) -> None:
        super().__init__(name, config)
        cfg = self.config
        if cfg.password is not None and cfg.security == "none":
            logger.warning("notifier %s: AUTH without TLS sends the password in clear; "
                           "set security: starttls or ssl", name)

    def __repr__(self) -> str:
        cfg = self.config
        return (f"EmailNotifier(name={self.name!r}, host={cfg.host!r}, port={cfg.port}, "
                f"security={cfg.security!r})")

    def send(self, alert: Alert) -> None:
        """Deliver ``alert`` in one SMTP session or raise :class:`NotifierError`."""
        message = build_message(alert, self.config)
        try:
            refused = self._deliver(message)
        except OSError as exc:  # smtplib.SMTPException and ssl.SSLError are OSErrors
            raise self._error(exc) from exc
        if refused:
            raise self._partly_refused(refused)
        logger.debug("notifier %s: %s accepted notification %d", self.name,
                     self._where(), alert.notification_id)

    # -- the session -------------------------------------------------------

    def _deliver(self, message: EmailMessage) -> dict[str, tuple[int, bytes]]:
        smtp = self._connect()
        try:
            self._secure_and_login(smtp)
            refused = smtp.send_message(message, from_addr=self._envelope_from(),
                                        to_addrs=self._envelope_to())
        except BaseException:
            smtp.close()
            raise
        _quit_quietly(smtp)
        return refused

    def _connect(self) -> smtplib.SMTP:
        cfg = self.config
        # gethostname, not smtplib's default getfqdn: a reverse DNS lookup has
        # no timeout and DNS trouble is exactly when alerts must still go out.
        helo = socket.gethostname() or "localhost"
        if cfg.security == "ssl":
            return smtplib.SMTP_SSL(cfg.host, cfg.port, local_hostname=helo,
                                    timeout=cfg.timeout, context=self._tls_context())
        return smtplib.SMTP(cfg.host, cfg.port, local_hostname=helo, timeout=cfg.timeout)

    def _secure_and_login(self, smtp: smtplib.SMTP) -> None:
        cfg = self.config
        smtp.ehlo_or_helo_if_needed()
        if cfg.security == "starttls":
            smtp.starttls(context=self._tls_context())
            smtp.ehlo()
        if cfg.username is not None and cfg.password is not None:
            smtp.login(cfg.username, cfg.password.get_secret_value())

    def _tls_context(self) -> ssl.SSLContext:
        cfg = self.config
        if not cfg.verify_tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        try:
            return ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
        except (OSError, ValueError) as exc:
            raise NotifierError(
                f"cannot load the CA bundle {cfg.ca_file} ({exc}) — check "
                f"{self._setting('ca_file')}", permanent=True) from exc

    def _envelope_from(self) -> str:
        return parseaddr(self.config.sender)[1]

    def _envelope_to(self) -> list[str]:
        return [parseaddr(address)[1] for address in self.config.to]

    # -- errors ------------------------------------------------------------

    def _where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    def _setting(self, names: str) -> str:
        return f'{names} of notifier "{self.name}"'

    def _fail(self, message: str, *, permanent: bool) -> NotifierError:
        password = self.config.password
        if password is not None and len(secret := password.get_secret_value()) >= 3:
            message = message.replace(secret, "***")  # in case a server echoes it
        return NotifierError(message, permanent=permanent)

    def _error(self, exc: OSError) -> NotifierError:
        if isinstance(exc, smtplib.SMTPException):
            return self._smtp_error(exc)
        return self._network_error(exc)

    def _smtp_error(self, exc: smtplib.SMTPException) -> NotifierError:
        where, cfg = self._where(), self.config
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return self._fail(
                f"SMTP AUTH failed for user {cfg.username} at {where} ({_reply(exc)}) — "
                f"check {self._setting('username/password')}",
                permanent=not _is_4xx(exc.smtp_code))
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            return self._refused(exc.recipients, delivered=0)
        if isinstance(exc, smtplib.SMTPSenderRefused) and exc.smtp_code == 530:
            # RFC 4954: 530 5.7.0 "Authentication required", answered to MAIL.
            return self._fail(
                f"{where} requires SMTP AUTH ({_reply(exc)}) — set "
                f"{self._setting('username/password')}", permanent=True)
        if isinstance(exc, smtplib.SMTPSenderRefused):
            return self._fail(
                f"{where} refused the sender {exc.sender} ({_reply(exc)}) — check "
                f"{self._setting('from')}", permanent=not _is_4xx(exc.smtp_code))
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            return self._fail(self._unsupported(str(exc)), permanent=True)
        if isinstance(exc, smtplib.SMTPServerDisconnected) and isinstance(
                exc.__context__, OSError):
            # smtplib reports a read timeout as "Connection unexpectedly closed".
            return self._network_error(exc.__context__)
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            return self._fail(
                f"{where} closed the connection ({exc or 'no reason given'}) — check "
                f"{self._setting('port/security')} if this persists", permanent=False)
        if isinstance(exc, smtplib.SMTPResponseException):
            return self._fail(f"{where} {_refusal(exc)} ({_reply(exc)})",
                              permanent=not _is_4xx(exc.smtp_code))
        return self._fail(f"SMTP with {where} failed: {exc}", permanent=False)

    def _unsupported(self, text: str) -> str:
        where = self._where()
        if "STARTTLS" in text:
            return (f"{where} does not offer STARTTLS — set {self._setting('security')} "
                    "to ssl or none")
        return (f"{where} does not offer SMTP AUTH on this connection — set "
                f"{self._setting('security')} to starttls or ssl, or remove username/password")

    def _network_error(self, exc: OSError) -> NotifierError:
        where, cfg = self._where(), self.config
        if isinstance(exc, ssl.SSLCertVerificationError):
            message = (f"the TLS certificate of {where} could not be verified "
                       f"({exc.verify_message}) — set {self._setting('ca_file')} to the CA "
                       "that signed it, or verify_tls: false")
        elif isinstance(exc, ssl.SSLError):
            message = (f"TLS handshake with {where} failed ({exc.reason or exc}) — check "
                       f"{self._setting('security/port')} (465 usually means ssl, "
                       "587 starttls)")
        elif isinstance(exc, ConnectionRefusedError):
            message = (f"connection to {where} refused — is the SMTP server running, and "
                       f"are {self._setting('host/port')} right?")
        elif isinstance(exc, TimeoutError):
            message = (f"no reply from {where} within {cfg.timeout:g} s — raise "
                       f"{self._setting('timeout')}, or check port/security (a plain "
                       "connection to an SSL port waits forever)")
        elif isinstance(exc, socket.gaierror):
            message = (f"cannot resolve {cfg.host} ({exc.strerror}) — check "
                       f"{self._setting('host')} and DNS")
        else:
            message = f"cannot talk to {where}: {exc.strerror or exc}"
        return self._fail(message, permanent=False)

    def _refused(self, recipients: dict[str, tuple[int, bytes]], *,
                 delivered: int) -> NotifierError:
        listed = ", ".join(f"{rcpt} ({code} {_text(text)})"
                           for rcpt, (code, text) in recipients.items())
        total = delivered + len(recipients)
        return self._fail(
            f"{self._where()} refused {len(recipients)} of {total} recipients: {listed} — "
            f"check {self._setting('to')}",
            permanent=all(not _is_4xx(code) for code, _ in recipients.values()))

    def _partly_refused(self, refused: dict[str, tuple[int, bytes]]) -> NotifierError:
        # A notice that missed someone is not delivered. A retry reaches the
        # others again, but with the same Message-ID, so they can drop it; a
        # duplicate is cheaper than a missed page.
        return self._refused(refused, delivered=len(self.config.to) - len(refused))


# -- the message ---------------------------------------------------------------

def build_message(alert: Alert, config: EmailConfig) -> EmailMessage:
    """The e-mail for ``alert``: the same alert always gives the same message."""
    message = EmailMessage()
    message["Subject"] = _one_line(alert.subject)
    message["From"] = config.sender
    message["To"] = ", ".join(config.to)
    message["Date"] = _date(alert.at)
    message["Message-ID"] = message_id(alert)
    # RFC 3834: stops vacation auto-replies from answering the monitor.
    message["Auto-Submitted"] = "auto-generated"
    message["X-Kanshi-Incident"] = str(alert.incident_id)
    message["X-Kanshi-Dedup-Key"] = _one_line(alert.dedup_key)
    # base64 for non-ASCII: an old relay without 8BITMIME would mangle 8bit text.
    message.set_content(alert.body, charset="utf-8",
                        cte=None if alert.body.isascii() else "base64")
    return message


def message_id(alert: Alert) -> str:
    """A ``Message-ID`` stable across retries of this notice.

    The notification id alone could repeat after a store is reset, and mail
    systems drop a second message with a known id, so a digest of the notice's
    identity is part of it too.
    """
    identity = f"{alert.notification_id}|{alert.incident_id}|{alert.dedup_key}|{alert.kind}|" \
               f"{alert.at}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    domain = re.sub(r"[^A-Za-z0-9.-]", "-", alert.host).strip(".-") or "kanshi.invalid"
    return f"<kanshi.{alert.notification_id}.{digest}@{domain}>"


def _date(at: str) -> str:
    """The transition time, so a retried notice keeps its ``Date``."""
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        return formatdate(usegmt=True)
    return format_datetime(when if when.tzinfo else when.replace(tzinfo=UTC))


def _one_line(text: str) -> str:
    return re.sub(r"[\r\n]+", " ", text).strip()


def _is_4xx(code: int) -> bool:
    return 400 <= code < 500


def _text(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return re.sub(r"\s+", " ", text).strip()


def _reply(exc: smtplib.SMTPResponseException) -> str:
    return f"{exc.smtp_code} {_text(exc.smtp_error)}".strip()


def _refusal(exc: smtplib.SMTPResponseException) -> str:
    if isinstance(exc, smtplib.SMTPDataError):
        return "refused the message"
    if isinstance(exc, smtplib.SMTPConnectError):
        return "refused the session on connect"
    if isinstance(exc, smtplib.SMTPHeloError):
        return "refused EHLO/HELO"
    return "answered with an error"


def _quit_quietly(smtp: smtplib.SMTP) -> None:
    """End the session; the message is already accepted, so errors don't matter."""
    try:
        smtp.quit()
    except OSError:
        smtp.close()
