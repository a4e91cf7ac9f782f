"""Accounts, sessions and clients, and AWS errors explained for a person.

An account is watched with the container's own credentials (ECS task role,
instance profile, ``AWS_*`` variables) or through STS AssumeRole with an
external ID and a session name. Assumed credentials are botocore
*refreshable* credentials: botocore renews them 15 minutes before they expire
(10 minutes at the latest, blocking), so a long-running agent never sends a
request with an expired token.

Sessions and clients are shared between the checks of one agent through
``CheckContext.shared`` — keyed by account (credentials are assumed once) and
by account + region + service (one client, one adaptive rate limiter). Every
client retries in botocore's *adaptive* mode, which also slows down the client
side when AWS throttles.

boto3 is imported only inside functions: this module is imported by config
validation (the :class:`AwsAccount` model), which must stay boto3-free.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_core import PydanticCustomError

from checks.aws.cost import install_meter
from checks.base import SharedResources
from checks.types import Duration, expected_error

if TYPE_CHECKING:
    import boto3
    from botocore.client import BaseClient

logger = logging.getLogger(__name__)

#: Check and account names: as the agent's check names (agent/config/base.py).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$"
_ROLE_ARN = re.compile(r"^arn:aws(-cn|-us-gov)?:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$")
# IAM's patterns for RoleSessionName and ExternalId (STS AssumeRole API reference).
_SESSION_NAME = re.compile(r"^[\w+=,.@-]{2,64}$")
_EXTERNAL_ID = re.compile(r"^[\w+=,.@:/-]{2,1224}$")
#: STS AssumeRole DurationSeconds bounds (the role's maximum may be lower).
_MIN_SESSION, _MAX_SESSION = 900.0, 43200.0
#: The IAM policy shipped for monitoring; denied-access messages point to it.
POLICY_FILE = "config/iam/kanshi-monitoring.json"


class AwsAccount(BaseModel):
    """One AWS account as an AWS check watches it (``accounts:`` list item)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    role_arn: str | None = None
    external_id: SecretStr | None = None
    session_name: str = "kanshi"
    regions: tuple[str, ...] = Field(min_length=1)
    session_duration: Duration = 3600.0
    api_attempts: int = Field(5, ge=1, le=20)

    @field_validator("role_arn")
    @classmethod
    def _role(cls, value: str | None) -> str | None:
        if value is not None and not _ROLE_ARN.match(value):
            raise expected_error("an IAM role ARN such as "
                                 "arn:aws:iam::123456789012:role/kanshi-monitoring", value)
        return value

    @field_validator("external_id")
    @classmethod
    def _external(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _EXTERNAL_ID.match(value.get_secret_value()):
            raise PydanticCustomError("kanshi", "expected 2–1224 characters of letters, "
                                                "digits and +=,.@:/-")
        return value

    @field_validator("session_name")
    @classmethod
    def _session(cls, value: str) -> str:
        if not _SESSION_NAME.match(value):
            raise expected_error("2–64 characters of letters, digits and +=,.@_-", value)
        return value

    @field_validator("regions", mode="before")
    @classmethod
    def _regions(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise expected_error("a list of region codes such as [ap-northeast-1]", value)
        for region in value:
            if not isinstance(region, str) or not _REGION.match(region):
                raise expected_error("a region code such as ap-northeast-1", region)
        if len(set(value)) != len(value):
            raise PydanticCustomError("kanshi", "expected each region once")
        return value

    @field_validator("session_duration")
    @classmethod
    def _duration(cls, value: float) -> float:
        if not _MIN_SESSION <= value <= _MAX_SESSION:
            raise expected_error("a role session of 15m to 12h", value)
        return value

    def fingerprint(self) -> str:
        """A stable key for sharing this account's session (secrets hashed, not shown)."""
        external = self.external_id.get_secret_value() if self.external_id else ""
        text = "\0".join([self.name, self.role_arn or "", external, self.session_name,
                          f"{self.session_duration:g}", str(self.api_attempts)])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> str:
        """``prod (role arn:…)`` or ``prod (the container's own credentials)``."""
        how = f"role {self.role_arn}" if self.role_arn else "the container's own credentials"
        return f"account {self.name} ({how})"


def unique_accounts(accounts: tuple[AwsAccount, ...]) -> tuple[AwsAccount, ...]:
    """Refuse two accounts with one name (they name targets and messages)."""
    names = [a.name for a in accounts]
    for name in names:
        if names.count(name) > 1:
            raise PydanticCustomError("kanshi", "expected each account name once, got "
                                                "\"{name}\" twice", {"name": name})
    return accounts


# -- errors -------------------------------------------------------------------------------

#: botocore's throttling codes (botocore/retries/standard.py) plus EC2's own.
THROTTLING = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException",
    "RequestLimitExceeded", "BandwidthLimitExceeded", "RequestThrottled", "SlowDown",
    "PriorRequestNotComplete", "EC2ThrottledException"})
EXPIRED = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired",
                     "TokenRefreshRequired"})
INVALID = frozenset({"InvalidClientTokenId", "UnrecognizedClientException",
                     "InvalidAccessKeyId", "SignatureDoesNotMatch", "AuthFailure",
                     "IncompleteSignature", "MissingAuthenticationToken"})
DENIED = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation",
                    "AuthorizationError", "UnauthorizedException", "NotAuthorized",
                    "AuthorizationErrorException", "Forbidden"})
#: IAM action prefixes that differ from the endpoint prefix.
_IAM_PREFIX = {"monitoring": "cloudwatch", "tagging": "tag"}


class AwsError(Exception):
    """A failed AWS call, explained for a person; ``kind`` says what went wrong."""

    def __init__(self, reason: str, kind: str = "error") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


def iam_action(client: BaseClient, operation: str) -> str:
    """The IAM action an operation needs, e.g. ``cloudwatch:GetMetricData``."""
    model = client.meta.service_model
    prefix = _IAM_PREFIX.get(model.endpoint_prefix, model.endpoint_prefix)
    if prefix == "apigateway":  # API Gateway's actions are HTTP verbs on resources
        return "apigateway:GET"
    return f"{prefix}:{operation}"


def explain(exc: Exception, action: str, attempts: int, where: str = "") -> AwsError:
    """An :class:`AwsError` naming what failed and what to change."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    place = f" in {where}" if where else ""
    if isinstance(exc, ClientError):
        return _explain_client_error(exc, action, attempts, place)
    if isinstance(exc, NoCredentialsError):
        return AwsError("no AWS credentials: give the container an IAM role (ECS task role "
                        "or instance profile) or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
                        "credentials")
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
        return AwsError(f"{action}{place} timed out ({exc}); raise the check's timeout "
                        "or look at the network path to AWS", "timeout")
    if isinstance(exc, EndpointConnectionError):
        return AwsError(f"cannot reach AWS for {action}{place}: {exc} (DNS, proxy, "
                        "firewall or VPC endpoint?)", "unreachable")
    return AwsError(f"{action}{place} failed: {type(exc).__name__}: {exc}")


def _explain_client_error(exc: Any, action: str, attempts: int, place: str) -> AwsError:
    error = exc.response.get("Error", {})
    code, text = str(error.get("Code", "")), str(error.get("Message", ""))
    if exc.operation_name == "AssumeRole":
        return _assume_role_error(code, text)
    if code in THROTTLING:
        return AwsError(f"throttled by AWS on {action}{place} ({code}), gave up after "
                        f"{attempts} attempts in adaptive retry mode: too many API calls "
                        "in this account and region — lengthen the interval or ask AWS to "
                        "raise the API rate quota", "throttled")
    if code in EXPIRED:
        return AwsError(f"the AWS credentials have expired ({code}) calling {action}"
                        f"{place}: renew the container's credentials (a role's are renewed "
                        "automatically; static keys are not)", "expired")
    if code in INVALID:
        return AwsError(f"AWS does not accept the credentials ({code}) calling {action}"
                        f"{place}: the access key is wrong, deleted or for another "
                        "partition", "credentials")
    if code in DENIED:
        return AwsError(f"access denied: the identity lacks {action}{place} — add it to "
                        f"its policy (see {POLICY_FILE}); AWS said: {text}", "denied")
    if code == "SubscriptionRequiredException":
        return AwsError(f"{action}{place} needs a Business, Enterprise On-Ramp or "
                        "Enterprise support plan on this account (AWS Health API)",
                        "subscription")
    return AwsError(f"{action}{place} failed: {code}: {text}")


def _assume_role_error(code: str, text: str) -> AwsError:
    if code in DENIED:
        return AwsError("cannot assume the role (sts:AssumeRole denied): the role's trust "
                        "policy must allow this container's identity, with the same "
                        f"external ID if it requires one; AWS said: {text}", "denied")
    if code in THROTTLING:
        return AwsError(f"throttled by STS assuming the role ({code}); it is retried on "
                        "the next run", "throttled")
    return AwsError(f"cannot assume the role: {code}: {text}", "credentials")


def call(client: BaseClient, operation: str, where: str = "", **params: Any) -> Any:
    """``client.<operation>(**params)``; AWS trouble raised as :class:`AwsError`."""
    from botocore import xform_name
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return getattr(client, xform_name(operation))(**params)
    except (ClientError, BotoCoreError) as exc:
        raise explain(exc, iam_action(client, operation), _attempts(client), where) \
            from exc


def pages(client: BaseClient, operation: str, key: str, where: str = "",
          **params: Any) -> Iterator[Any]:
    """Every item under ``key`` of every page of ``operation``."""
    from botocore import xform_name
    from botocore.exceptions import BotoCoreError, ClientError

    paginator = client.get_paginator(xform_name(operation))
    try:
        for page in paginator.paginate(**params):
            yield from page.get(key, [])
    except (ClientError, BotoCoreError) as exc:
        raise explain(exc, iam_action(client, operation), _attempts(client), where) \
            from exc


def _attempts(client: BaseClient) -> int:
    retries = client.meta.config.retries or {}
    return int(retries.get("total_max_attempts") or retries.get("max_attempts") or 1)


# -- sessions and clients -----------------------------------------------------------------

#: Called for every client made, e.g. to install counting hooks (checks.aws.cost).
ClientHook = Callable[["BaseClient"], None]


class AccountSession:
    """One account's boto3 session: credentials assumed once and refreshed by botocore.

    ``base`` makes the session holding the container's own credentials (default
    ``boto3.Session()``); ``time_fetcher`` is botocore's clock for refresh
    decisions (tests move it forward).
    """

    def __init__(self, account: AwsAccount, *, base: Callable[[], boto3.Session] | None = None,
                 time_fetcher: Callable[[], datetime] | None = None,
                 hooks: tuple[ClientHook, ...] = ()) -> None:
        self.account = account
        self._base = base
        self._time_fetcher = time_fetcher
        self._hooks = (install_meter, *hooks)  # every call is counted
        self._lock = threading.Lock()  # boto3 sessions are not thread-safe
        self._session: boto3.Session | None = None

    def client(self, service: str, region: str, timeout: float) -> BaseClient:
        """A new client; use :func:`shared_client` to share it."""
        from botocore.config import Config

        config = Config(retries={"mode": "adaptive",
                                 "total_max_attempts": self.account.api_attempts},
                        connect_timeout=min(10.0, timeout), read_timeout=timeout,
                        user_agent_extra="kanshi", max_pool_connections=20)
        with self._lock:
            client = self._boto_session().client(service, region_name=region, config=config)
        for hook in self._hooks:
            hook(client)
        return client

    def _boto_session(self) -> boto3.Session:
        if self._session is None:
            self._session = self._make_session()
        return self._session

    def _make_session(self) -> boto3.Session:
        import boto3

        base = self._base() if self._base else boto3.Session()
        if not self.account.role_arn:
            return base
        return _with_credentials(self._assumed_credentials(base))

    def _assumed_credentials(self, base: boto3.Session) -> Any:
        from botocore.config import Config
        from botocore.credentials import DeferredRefreshableCredentials

        region = self.account.regions[0]  # a regional STS endpoint, near the account
        sts = base.client("sts", region_name=region, config=Config(
            retries={"mode": "adaptive", "total_max_attempts": self.account.api_attempts},
            connect_timeout=10, read_timeout=20))
        for hook in self._hooks:
            hook(sts)
        extra = {"time_fetcher": self._time_fetcher} if self._time_fetcher else {}
        return DeferredRefreshableCredentials(refresh_using=lambda: self._assume(sts),
                                              method="kanshi-assume-role", **extra)

    def _assume(self, sts: Any) -> dict[str, Any]:
        account = self.account
        params: dict[str, Any] = {"RoleArn": account.role_arn,
                                  "RoleSessionName": account.session_name,
                                  "DurationSeconds": int(account.session_duration)}
        if account.external_id is not None:
            params["ExternalId"] = account.external_id.get_secret_value()
        found = sts.assume_role(**params)["Credentials"]
        logger.info("assumed %s for account %s until %s", account.role_arn, account.name,
                    found["Expiration"].isoformat())
        return {"access_key": found["AccessKeyId"], "secret_key": found["SecretAccessKey"],
                "token": found["SessionToken"], "expiry_time": found["Expiration"].isoformat()}


def _with_credentials(credentials: Any) -> boto3.Session:
    """A boto3 session that uses ``credentials`` before anything else it could find."""
    import boto3
    import botocore.credentials
    import botocore.session

    class _Assumed(botocore.credentials.CredentialProvider):  # type: ignore[misc]
        METHOD = CANONICAL_NAME = "kanshi-assume-role"

        def load(self) -> Any:
            return credentials

    core = botocore.session.get_session()
    core.get_component("credential_provider").insert_before("env", _Assumed())
    return boto3.Session(botocore_session=core)


def account_session(shared: SharedResources, account: AwsAccount,
                    hooks: tuple[ClientHook, ...] = ()) -> AccountSession:
    """The agent's one session for ``account``."""
    session: AccountSession = shared.get(session_key(account),
                                         lambda: AccountSession(account, hooks=hooks))
    return session


def session_key(account: AwsAccount) -> str:
    """The key of an account's session in ``CheckContext.shared``."""
    return f"aws:{account.fingerprint()}"


def shared_client(shared: SharedResources, account: AwsAccount, service: str, region: str,
                  timeout: float, hooks: tuple[ClientHook, ...] = ()) -> BaseClient:
    """The agent's one client for ``service`` in ``account`` + ``region``."""
    session = account_session(shared, account, hooks)
    client: BaseClient = shared.get(client_key(account, service, region, timeout),
                                    lambda: session.client(service, region, timeout))
    return client


def client_key(account: AwsAccount, service: str, region: str, timeout: float) -> str:
    """The key of a shared client in ``CheckContext.shared``."""
    return f"aws:{account.fingerprint()}:{region}:{service}:{round(timeout)}"


# -- several accounts ---------------------------------------------------------------------


def per_account(accounts: tuple[AwsAccount, ...],
                work: Callable[[AwsAccount], list[Any]]) -> list[list[Any]]:
    """``work(account)`` for every account at once, so one slow account delays none.

    Each task runs in a copy of the caller's context (its AWS calls are counted
    for the caller's run, see checks.aws.cost).
    """
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, len(accounts))) as pool:
        futures = [pool.submit(contextvars.copy_context().run, work, a) for a in accounts]
        return [f.result() for f in futures]
