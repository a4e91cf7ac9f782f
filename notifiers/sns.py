"""Amazon SNS: publish each alert to a topic (e-mail, SMS, SQS, Lambda subscribers).

``Subject`` is the rendered subject (e-mail subscribers see it), ``Message`` the
rendered body; message attributes (kind, status, severity, check, target, host,
dedup_key) let subscriptions filter, e.g. only severity 1/A to an SMS topic.
A FIFO topic gets the incident's dedup key as message group (its notices stay
in order) and a deduplication id per notice, so a retried publish is dropped.

Credentials come from the usual AWS chain (instance role, environment,
``profile``) unless keys are configured; keys are secrets and are scrubbed
from errors and from botocore's debug log. boto3 makes exactly one attempt
per call: the outbox owns retries.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from functools import cached_property
from typing import Any, ClassVar

import boto3
import botocore.config
import botocore.exceptions as aws
from botocore.parsers import ResponseParserError
from pydantic import SecretStr, field_validator, model_validator

from notifiers.base import Alert, Notifier, NotifierConfig, NotifierError
from notifiers.http import TRANSIENT_4XX, HttpConfig, Scrubber, redact_url

logger = logging.getLogger(__name__)

_TOPIC_ARN = re.compile(
    r"^arn:aws[a-z-]*:sns:(?P<region>[a-z0-9-]+):\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$")
SUBJECT_CHARS = 99            # "less than 100 characters" (SNS Publish API reference)
MESSAGE_BYTES = 200 * 1024    # under the 256 KiB limit, leaving room for the attributes
#: What botocore raises for an answer that is not SNS's (a proxy's page): seen with
#: botocore 1.44, a 200 HTML body gives KeyError('PublishResult'), a bodiless 429
#: ResponseParserError — neither a BotoCoreError.
_NOT_SNS = (ResponseParserError, KeyError, ValueError, TypeError)
_FIFO_ID = re.compile(r"^[!-~]{1,128}$")  # printable ASCII, no spaces (Publish reference)

#: Error codes worth retrying: botocore's own standard-mode lists
#: (botocore.retries.standard, Throttled/TransientRetryableChecker) plus KMS throttling.
RETRYABLE_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "RequestLimitExceeded", "RequestThrottled", "SlowDown",
    "PriorRequestNotComplete", "RequestTimeout", "RequestTimeoutException",
    "KMSThrottling", "InternalError", "InternalFailure", "ServiceUnavailable",
})
_HINTS = {
    "NotFound": "the topic does not exist in that account and region; check topic_arn",
    "AuthorizationError": "the credentials may not publish to this topic; allow sns:Publish "
                          "on topic_arn in the IAM or topic policy",
    "AccessDenied": "the credentials may not publish to this topic; allow sns:Publish",
    "InvalidClientTokenId": "AWS does not know the access key; check the credentials",
    "UnrecognizedClientException": "AWS does not know the access key; check the credentials",
    "SignatureDoesNotMatch": "the secret access key is wrong; check the credentials",
    "ExpiredToken": "the session token has expired; renew the credentials",
    "InvalidParameter": "SNS refused the message",
    "InvalidParameterValue": "SNS refused the message",
}


class SnsConfig(HttpConfig):
    """One topic; credentials from the AWS chain unless keys are given."""

    topic_arn: str
    region: str | None = None
    """Defaults to the topic's region (from the ARN)."""
    endpoint_url: str | None = None
    """A VPC endpoint or another SNS-compatible endpoint."""
    profile: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None

    @field_validator("topic_arn")
    @classmethod
    def _arn(cls, arn: str) -> str:
        if not _TOPIC_ARN.match(arn):
            raise ValueError("expected a topic ARN such as "
                             "arn:aws:sns:ap-northeast-1:123456789012:kanshi-alerts")
        return arn

    @field_validator("endpoint_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and (not url.startswith(("http://", "https://"))
                                or redact_url(url) == "<invalid url>"):
            raise ValueError("expected an http:// or https:// URL with a host")
        return url

    @model_validator(mode="after")
    def _keys_together(self) -> SnsConfig:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("expected access_key_id and secret_access_key together")
        if self.session_token is not None and self.access_key_id is None:
            raise ValueError("session_token needs access_key_id and secret_access_key")
        if self.profile is not None and self.access_key_id is not None:
            raise ValueError("expected either profile or access keys, not both")
        return self

    @property
    def region_name(self) -> str:
        match = _TOPIC_ARN.match(self.topic_arn)
        return self.region or (match["region"] if match else "us-east-1")

    def secrets(self) -> list[str]:
        keys = (self.access_key_id, self.secret_access_key, self.session_token)
        return [key.get_secret_value() for key in keys if key is not None]


class SnsNotifier(Notifier):
    """Publishes each alert to one SNS topic."""

    type_name: ClassVar[str] = "sns"
    Config: ClassVar[type[NotifierConfig]] = SnsConfig
    config: SnsConfig

    def __init__(self, name: str, config: NotifierConfig, *,
                 session: boto3.session.Session | None = None) -> None:
        super().__init__(name, config)
        self._given_session = session
        self._scrub = Scrubber(self.config.secrets())
        install_log_scrubbing(self.config.secrets())

    @cached_property
    def client(self) -> Any:
        """The SNS client, made on first use: a missing profile then fails a send
        (a NotifierError naming the fix), not the agent's start."""
        cfg = self.config
        return (self._given_session or self._session()).client(
            "sns", region_name=cfg.region_name, endpoint_url=cfg.endpoint_url,
            config=self._client_config(), verify=self._verify())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def _session(self) -> boto3.session.Session:
        cfg = self.config
        return boto3.session.Session(
            profile_name=cfg.profile,
            aws_access_key_id=_reveal(cfg.access_key_id),
            aws_secret_access_key=_reveal(cfg.secret_access_key),
            aws_session_token=_reveal(cfg.session_token))

    def _client_config(self) -> botocore.config.Config:
        cfg = self.config
        # total_max_attempts=1: botocore would otherwise retry up to 3-5 times
        # inside one send, hiding failures from the outbox and its records.
        return botocore.config.Config(
            connect_timeout=cfg.connect_timeout or cfg.timeout, read_timeout=cfg.timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
            user_agent_extra="kanshi-notifier/1")

    def _verify(self) -> bool | str:
        if not self.config.verify_tls:
            return False
        return str(self.config.ca_file) if self.config.ca_file else True

    def close(self) -> None:
        if "client" in self.__dict__:  # made already (cached_property)
            self.client.close()

    def send(self, alert: Alert) -> None:
        """Publish ``alert`` once (the outbox retries)."""
        try:
            answer = self.client.publish(**publish_arguments(self.config.topic_arn, alert))
        except (aws.ClientError, aws.BotoCoreError, *_NOT_SNS) as exc:
            raise self._error(exc) from None
        logger.debug("notifier %s: published to %s as %s", self.name, self.config.topic_arn,
                     answer.get("MessageId"))

    # -- errors ---------------------------------------------------------------------

    def _error(self, exc: Exception) -> NotifierError:
        if isinstance(exc, aws.ClientError):
            message, permanent = self._service_error(exc)
        else:
            message, permanent = self._transport_error(exc)
        return NotifierError(self._scrub(message), permanent=permanent)

    def _service_error(self, exc: aws.ClientError) -> tuple[str, bool]:
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "UnknownError")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        transient = code in RETRYABLE_CODES or status >= 500 or status in TRANSIENT_4XX
        said = " ".join(str(error.get("Message") or "").split())[:200]
        hint = ("transient; the outbox retries" if transient
                else _HINTS.get(code, f'check the settings of notifier "{self.name}"'))
        return (f"SNS answered {code} (HTTP {status}) publishing to {self.config.topic_arn}"
                + (f": {said}" if said else "") + f" — {hint}", not transient)

    def _transport_error(self, exc: Exception) -> tuple[str, bool]:
        cfg, where = self.config, self._where()
        if isinstance(exc, aws.ConnectTimeoutError):
            return (f"no connection to {where} within {cfg.connect_timeout or cfg.timeout:g} s "
                    "— check the network path to SNS, or raise connect_timeout", False)
        if isinstance(exc, aws.ReadTimeoutError):
            return (f"no answer from {where} within {cfg.timeout:g} s — raise timeout of "
                    f'notifier "{self.name}" if SNS is just slow', False)
        if isinstance(exc, aws.SSLError):
            return (f"TLS with {where} failed — check ca_file/verify_tls of notifier "
                    f'"{self.name}"', False)
        if isinstance(exc, aws.EndpointConnectionError | aws.ConnectionClosedError
                      | aws.ProxyConnectionError):
            return (f"cannot reach {where} ({type(exc).__name__}) — check endpoint_url/region "
                    "and the network path (proxy, VPC endpoint)", False)
        if isinstance(exc, aws.NoCredentialsError | aws.PartialCredentialsError
                      | aws.ProfileNotFound):
            return (f"no usable AWS credentials ({type(exc).__name__}) — give the agent a "
                    f'role, or set profile/access keys of notifier "{self.name}"', True)
        if isinstance(exc, _NOT_SNS):
            return f"{where} answered something that is not an SNS response", False
        if isinstance(exc, aws.ParamValidationError):
            return f"the publish request is invalid ({exc}) — a kanshi bug: please report", True
        return f"publishing via {where} failed ({type(exc).__name__})", False

    def _where(self) -> str:
        endpoint = self.config.endpoint_url
        return redact_url(endpoint) if endpoint else f"SNS in {self.config.region_name}"


# -- the message -------------------------------------------------------------------

def publish_arguments(topic_arn: str, alert: Alert) -> dict[str, Any]:
    """The ``Publish`` call for ``alert``."""
    arguments: dict[str, Any] = {
        "TopicArn": topic_arn, "Message": _message(alert),
        "MessageAttributes": attributes(alert)}
    if subject := _subject(alert.subject):
        arguments["Subject"] = subject
    if topic_arn.endswith(".fifo"):
        arguments["MessageGroupId"] = _fifo_id(alert.dedup_key or alert.check)
        arguments["MessageDeduplicationId"] = _fifo_id(
            f"{alert.host}|{alert.notification_id}|{alert.kind}|{alert.dedup_key}|{alert.at}",
            always_hash=True)
    return arguments


def attributes(alert: Alert) -> dict[str, dict[str, str]]:
    """String message attributes for subscription filter policies (empty ones left out:
    SNS refuses an empty value)."""
    values = {"kind": alert.kind, "status": alert.status, "severity": alert.severity,
              "check": alert.check, "target": alert.target, "host": alert.host,
              "dedup_key": alert.dedup_key}
    return {name: {"DataType": "String", "StringValue": value}
            for name, value in values.items() if value}


def _subject(subject: str) -> str:
    # No line breaks or control characters (Publish API reference).
    cleaned = " ".join("".join(c if c.isprintable() else " " for c in subject).split())
    return cleaned if len(cleaned) <= SUBJECT_CHARS else cleaned[:SUBJECT_CHARS - 1] + "…"


def _message(alert: Alert) -> str:
    text = alert.body if alert.body.strip() else alert.subject or alert.message
    data = text.encode()
    if len(data) <= MESSAGE_BYTES:
        return text
    return data[:MESSAGE_BYTES].decode(errors="ignore") + "\n…"


def _fifo_id(text: str, *, always_hash: bool = False) -> str:
    if not always_hash and _FIFO_ID.match(text):
        return text
    return hashlib.sha256(text.encode()).hexdigest()


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


# -- keeping keys out of botocore's debug log ----------------------------------------

#: The botocore loggers seen (botocore 1.44, DEBUG) to print signed requests: the
#: access key id in ``Authorization: … Credential=<id>/…`` and the session token
#: in ``X-Amz-Security-Token``, also inside the canonical request.
BOTOCORE_SECRET_LOGGERS = ("botocore.endpoint", "botocore.auth", "botocore.parsers",
                           "botocore.httpsession")
_SIGNED = re.compile(r"(?i)(credential=|x-amz-security-token['\"]?\s*[:=]\s*b?['\"]?)"
                     r"[^'\"\s,/}]+")


class ScrubSecrets(logging.Filter):
    """Masks credentials in log records: every signed header, plus configured keys
    (role credentials rotate, so only the pattern catches those)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = Scrubber(self.secrets)(_SIGNED.sub(r"\1***", message))
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


def install_log_scrubbing(secrets: Iterable[str]) -> None:
    """Attach one shared :class:`ScrubSecrets` to botocore's loggers; add ``secrets``."""
    for name in BOTOCORE_SECRET_LOGGERS:
        target = logging.getLogger(name)
        found = next((f for f in target.filters if isinstance(f, ScrubSecrets)), None)
        if found is None:
            found = ScrubSecrets()
            target.addFilter(found)
        found.secrets.update(s for s in secrets if s)
