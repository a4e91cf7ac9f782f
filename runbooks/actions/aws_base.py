"""What every AWS action shares: which account, region and resource a step acts on,
one session per account, calls explained for a person, ``DryRun``, and waiting that
keeps to the step's deadline and stops on a cancel.

The account comes from, in order: the step's ``role_arn`` (with ``external_id`` — a
``secret`` runbook parameter, masked in the audit log), the step's ``account`` or the
target's account part naming an account configured for the AWS checks
(``accounts:``), else the agent's own credentials. A target reads
``account/region/resource`` — the target of an ``ec2_status`` result — or
``region/resource`` or just ``resource``; step arguments win over it.

Sessions come from ``ctx.resources["aws"]`` (an :class:`AwsSessions` the agent
makes once, so a role is assumed once and refreshed by botocore); without it a
step makes its own. boto3 is imported only inside functions.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator, Field, SecretStr, ValidationError

from checks.aws.session import AccountSession, AwsAccount, AwsError, ClientHook, explain
from checks.types import Duration, OptionalDuration, parse_duration
from runbooks.actions.base import ActionContext, ActionError, Args

if TYPE_CHECKING:
    import boto3
    from botocore.client import BaseClient

#: ``ctx.resources`` key of the agent's :class:`AwsSessions`.
RESOURCE = "aws"
#: Read timeout of one AWS API call (the step's own timeout bounds the whole step).
CALL_TIMEOUT = 60.0
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$")


def _pause(value: Any) -> float:
    return 0.0 if value in (0, "0", "") else parse_duration(value)


#: A duration that may be 0 (no pause).
Pause = Annotated[float, BeforeValidator(_pause)]


class AwsSessions:
    """The AWS sessions of one agent's runbooks, keyed by account.

    ``accounts`` are the accounts configured for the AWS checks (by name);
    ``allowed_calls`` replaces the ``aws.call`` allow-list
    (``service:Operation`` items); ``hooks`` are called for every client made
    (tests record calls with them).
    """

    def __init__(self, accounts: Iterable[AwsAccount] = (), *,
                 base: Callable[[], boto3.Session] | None = None,
                 hooks: tuple[ClientHook, ...] = (),
                 allowed_calls: Iterable[str] | None = None) -> None:
        self.accounts: dict[str, AwsAccount] = {}
        for account in accounts:
            self.accounts.setdefault(account.name, account)
        self.allowed_calls = frozenset(allowed_calls) if allowed_calls is not None else None
        self._base = base
        self._hooks = hooks
        self._lock = threading.Lock()
        self._sessions: dict[str, AccountSession] = {}
        self._clients: dict[tuple[str, str, str], BaseClient] = {}

    def client(self, account: AwsAccount, service: str, region: str) -> BaseClient:
        """One shared client per account, region and service."""
        key = (account.fingerprint(), region, service)
        with self._lock:
            if key not in self._clients:
                session = self._sessions.get(key[0])
                if session is None:
                    session = AccountSession(account, base=self._base, hooks=self._hooks)
                    self._sessions[key[0]] = session
                self._clients[key] = session.client(service, region, CALL_TIMEOUT)
            return self._clients[key]


def sessions_of(ctx: ActionContext) -> AwsSessions:
    found = ctx.resources.get(RESOURCE)
    return found if isinstance(found, AwsSessions) else AwsSessions()


class AwsArgs(Args):
    """Where an AWS step acts (every field optional: the target says the rest)."""

    account: str = ""          # a configured account's name (default: the target's)
    region: str = ""           # default: the target's, else the account's first region
    role_arn: str = ""         # assume this role instead of a configured account
    external_id: str = ""      # with role_arn; pass a `secret` parameter
    session_name: str = Field("kanshi-runbook", pattern=r"^[\w+=,.@-]{2,64}$")


class WaitArgs(Args):
    """How an action waits for AWS to reach a state."""

    wait: bool = True
    within: OptionalDuration = None    # default: until the step's timeout
    every: Duration = 15.0


@dataclass(frozen=True)
class Located:
    """The account, region and resource a step acts on, and a client maker."""

    account: AwsAccount
    region: str
    resource: str
    sessions: AwsSessions

    def client(self, service: str) -> BaseClient:
        return self.sessions.client(self.account, service, self.region)

    def __str__(self) -> str:
        return f"{self.resource} ({self.account.name}, {self.region})"


def split_target(target: str) -> tuple[str, str, str]:
    """``(account, region, resource)`` from ``account/region/resource[/…]`` and shorter."""
    parts = target.split("/")
    if len(parts) >= 3:
        return parts[0], parts[1], parts[2]
    if len(parts) == 2:
        if _REGION.match(parts[0]):
            return "", parts[0], parts[1]
        return parts[0], "", parts[1]
    return "", "", target


def locate(args: AwsArgs, ctx: ActionContext, resource: str = "",
           kind: str = "resource") -> Located:
    """The account, region and resource of this step, or an error saying what is missing."""
    t_account, t_region, t_resource = split_target(ctx.target)
    sessions = sessions_of(ctx)
    name = args.account or t_account
    known = sessions.accounts.get(name) if name else None
    region = args.region or t_region or (known.regions[0] if known else "")
    if not region:
        raise ActionError("no region: give the step a region, or a target such as "
                          "account/ap-northeast-1/" + (resource or t_resource or kind))
    target_resource = resource or t_resource
    if not target_resource:
        raise ActionError(f"no {kind}: give it as an argument or as the run's target")
    account = _account(args, name, known, region, sessions)
    return Located(account, region, target_resource, sessions)


def _account(args: AwsArgs, name: str, known: AwsAccount | None, region: str,
             sessions: AwsSessions) -> AwsAccount:
    try:
        if args.role_arn:
            return AwsAccount(name=name or "runbook", role_arn=args.role_arn,
                              external_id=SecretStr(args.external_id) if args.external_id
                              else None, session_name=args.session_name, regions=(region,))
        if known is not None:
            return known if region in known.regions else known.model_copy(
                update={"regions": (*known.regions, region)})
        if name and sessions.accounts:
            raise ActionError(f"unknown AWS account {name!r}: configured are "
                              f"{', '.join(sorted(sessions.accounts))} (the AWS checks' "
                              "accounts), or give the step a role_arn")
        return AwsAccount(name=name or "default", regions=(region,))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors())
        raise ActionError(f"bad AWS account settings: {problems}") from None


# -- calls --------------------------------------------------------------------------------

def call(client: BaseClient, operation: str, where: Located | str, **params: Any) -> Any:
    """``client.<operation>(**params)``; trouble raised as :class:`ActionError`."""
    from botocore import xform_name
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return getattr(client, xform_name(operation))(**params)
    except (ClientError, BotoCoreError) as exc:
        raise _action_error(client, operation, exc, where) from exc


def error_code(exc: BaseException) -> str:
    """The AWS error code of a failed call (``""`` if it is not an AWS error)."""
    cause = exc.__cause__ if isinstance(exc, ActionError) else exc
    response = getattr(cause, "response", None)
    return str((response or {}).get("Error", {}).get("Code", ""))


def dry_run(client: BaseClient, operation: str, where: Located, **params: Any) -> str:
    """Ask AWS whether ``operation`` would succeed (``DryRun=True``); change nothing.

    ``DryRunOperation`` means it would; ``UnauthorizedOperation`` is a plan error
    naming the permission to add (EC2 API reference, "DryRun").
    """
    from botocore import xform_name
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        getattr(client, xform_name(operation))(DryRun=True, **params)
    except ClientError as exc:
        code = error_code(exc)
        if code == "DryRunOperation":
            return f"{operation} would succeed (DryRun)"
        if code == "UnauthorizedOperation":
            raise ActionError(f"plan error: {operation} on {where} would be refused: the "
                              f"identity lacks {_iam(client, operation)} (DryRun answered "
                              "UnauthorizedOperation) — add it to the role's policy") from exc
        raise _action_error(client, operation, exc, where) from exc
    except BotoCoreError as exc:
        raise _action_error(client, operation, exc, where) from exc
    raise ActionError(f"{operation} with DryRun=True answered as if it acted on {where}: "
                      "refusing to go on")


def _action_error(client: BaseClient, operation: str, exc: Exception,
                  where: Located | str) -> ActionError:
    attempts = int((client.meta.config.retries or {}).get("total_max_attempts") or 1)
    found: AwsError = explain(exc, _iam(client, operation), attempts, str(where))
    return ActionError(found.reason)


def _iam(client: BaseClient, operation: str) -> str:
    from checks.aws.session import iam_action

    return iam_action(client, operation)


def plain(value: Any) -> Any:
    """An AWS response as JSON-able data (dates as ISO text, no ResponseMetadata)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


# -- waiting ------------------------------------------------------------------------------

def wait_until(ctx: ActionContext, what: str, probe: Callable[[], tuple[bool, str]],
               args: WaitArgs) -> tuple[str, float]:
    """Call ``probe`` every ``args.every`` until it says done; ``(last state, waited)``.

    Gives up at ``args.within`` or the step's deadline, whichever is first, and
    stops at once on a cancel. boto3's waiters are not used: they cannot be
    cancelled and do not know the step's deadline.
    """
    started = time.monotonic()
    within = args.within if args.within is not None else ctx.left()
    while True:
        ctx.check()
        done, state = probe()
        waited = time.monotonic() - started
        if done:
            return state, waited
        ctx.log(f"{what}: {state} (waited {waited:.0f} s)")
        if waited + args.every > within or ctx.left() < args.every:
            raise ActionError(f"{what}: still {state} after {waited:.0f} s (gave up at "
                              f"{min(within, waited + ctx.left()):g} s: raise the step's "
                              "timeout or `within` if this is normal here)",
                              {"state": state, "waited_seconds": waited})
        if ctx.cancelled.wait(args.every):
            raise ActionError("cancelled")


def pause(ctx: ActionContext, seconds: float) -> None:
    """Sleep ``seconds`` unless cancelled or past the deadline."""
    if seconds <= 0:
        return
    if ctx.cancelled.wait(min(seconds, ctx.left())):
        raise ActionError("cancelled")
    ctx.check()
