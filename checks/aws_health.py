"""The ``aws_health`` check: AWS Health events of the watched accounts (SPEC §4, OZ MODE §7).

The provider's maintenance and incident information is forwarded to the
customer: every event of an account's regions (and global ones) last updated
within ``lookback`` is one result — an open issue CRITICAL, an upcoming or
ongoing scheduled change, an investigation or an account notification WARNING,
a closed event OK so its incident recovers. The agent notifies each incident
once and again when its status changes; an event is already confirmed by AWS,
so one result raises it (``default_max_attempts = 1``). A summary per account
is always reported.

The AWS Health API answers in us-east-1 for the whole account and needs a
Business, Enterprise On-Ramp or Enterprise support plan; without one the
check is UNKNOWN and says so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from checks.aws.session import (
    AwsAccount,
    AwsError,
    call,
    pages,
    per_account,
    shared_client,
    unique_accounts,
)
from checks.base import Check, CheckConfig, Result, Status
from checks.types import Duration

logger = logging.getLogger(__name__)

#: The AWS Health API's endpoint region (global endpoint, health.us-east-1.amazonaws.com).
HEALTH_REGION = "us-east-1"
#: Event ARNs per DescribeEventDetails / DescribeAffectedEntities filter (API limit).
_ARNS_PER_CALL = 10
#: Affected resources named in a message; the rest are counted.
_SHOWN_ENTITIES = 5
_DESCRIPTION_CHARS = 400
Category = Literal["issue", "scheduledChange", "accountNotification", "investigation"]
Level = Literal["ok", "warning", "critical"]
_LEVEL = {"ok": Status.OK, "warning": Status.WARNING, "critical": Status.CRITICAL}
_CATEGORY_TEXT = {"issue": "issue", "scheduledChange": "scheduled change",
                  "accountNotification": "account notification",
                  "investigation": "investigation"}


class HealthConfig(CheckConfig):
    """Options of a ``type: aws_health`` check."""

    accounts: tuple[AwsAccount, ...] = Field(min_length=1)
    lookback: Duration = 7 * 86400.0
    services: tuple[str, ...] = ()
    categories: tuple[Category, ...] = ("issue", "scheduledChange", "accountNotification",
                                        "investigation")
    include_global: bool = True
    issue: Level = "critical"
    scheduled_change: Level = "warning"
    notification: Level = "warning"
    investigation: Level = "warning"

    @field_validator("accounts")
    @classmethod
    def _unique(cls, value: tuple[AwsAccount, ...]) -> tuple[AwsAccount, ...]:
        return unique_accounts(value)

    def level(self, category: str) -> Status:
        return _LEVEL[{"issue": self.issue, "scheduledChange": self.scheduled_change,
                       "accountNotification": self.notification,
                       "investigation": self.investigation}.get(category, "warning")]


class AwsHealthCheck(Check):
    """AWS Health events, one result each, for every configured account."""

    type_name: ClassVar[str] = "aws_health"
    Config: ClassVar[type[CheckConfig]] = HealthConfig
    default_interval: ClassVar[float] = 600.0
    default_timeout: ClassVar[float] = 60.0
    #: AWS Health reports confirmed events: the first result opens the incident.
    default_max_attempts: ClassVar[int | None] = 1

    config: HealthConfig

    def run(self) -> list[Result]:
        gathered = per_account(self.config.accounts, self._account)
        results = [r for rs in gathered for r in rs if isinstance(r, Result)]
        trouble = [e for rs in gathered for e in rs if isinstance(e, str)]
        if trouble:
            rest = " — the other accounts were read" if len(trouble) < len(gathered) else ""
            results.append(Result(Status.UNKNOWN, "cannot read AWS Health for "
                                  + "; ".join(trouble) + rest))
        return results

    def _account(self, account: AwsAccount) -> list[Result | str]:
        client = shared_client(self.context.shared, account, "health", HEALTH_REGION,
                               self.timeout)
        now = self.context.clock.now()
        try:
            events = self._events(client, account, now)
            details = _details(client, events)
            entities = _entities(client, events)
        except AwsError as exc:
            return [f"{account.describe()}: {exc.reason}"]
        out: list[Result | str] = [self._judge(account, e, details.get(e["arn"], ""),
                                               entities.get(e["arn"], []), now)
                                   for e in events]
        opened = sum(1 for e in events if e.get("statusCode") != "closed")
        out.append(Result(Status.OK, f"{account.name}: {len(events)} AWS Health event(s) "
                          f"updated in the last {_days(self.config.lookback)}, {opened} not "
                          "closed", account.name, {"events": float(len(events)),
                                                   "open_events": float(opened)}))
        return out

    def _events(self, client: Any, account: AwsAccount, now: datetime) -> list[dict[str, Any]]:
        config = self.config
        since = now - timedelta(seconds=config.lookback)
        event_filter: dict[str, Any] = {
            "eventStatusCodes": ["open", "upcoming", "closed"],
            "lastUpdatedTimes": [{"from": since}],
            "eventTypeCategories": list(config.categories)}
        if config.services:
            event_filter["services"] = list(config.services)
        wanted = set(account.regions) | ({"global"} if config.include_global else set())
        # Regions are filtered here, not in the request: global events have no region code.
        return [e for e in pages(client, "DescribeEvents", "events", where=HEALTH_REGION,
                                 filter=event_filter, maxResults=100)
                if e.get("region", "global") in wanted]

    def _judge(self, account: AwsAccount, event: Mapping[str, Any], description: str,
               entities: list[str], now: datetime) -> Result:
        target = event_target(account.name, event)
        category, code = event.get("eventTypeCategory", ""), event.get("statusCode", "")
        status = Status.OK if code == "closed" else self.config.level(category)
        head = (f"AWS Health {event.get('service', '')} {_CATEGORY_TEXT.get(category, category)}"
                f" ({code}) in {event.get('region', 'global')}, {account.name}: "
                f"{event.get('eventTypeCode', '')}{_times(event)}")
        text = head + (f" — {_shorten(description)}" if description else "") \
            + _affected(entities)
        return Result(status, text, target, {"affected_entities": float(len(entities))})


def event_target(account: str, event: Mapping[str, Any]) -> str:
    """``prod/ap-northeast-1/EC2/AWS_EC2_OPERATIONAL_ISSUE_ABC123`` (from the event ARN)."""
    arn = str(event.get("arn", ""))
    tail = arn.rsplit("/", 1)[-1] or event.get("eventTypeCode", "event")
    return f"{account}/{event.get('region', 'global')}/{event.get('service', '')}/{tail}"


def _details(client: Any, events: list[dict[str, Any]]) -> dict[str, str]:
    """Latest description of each event (10 ARNs per call)."""
    out: dict[str, str] = {}
    for chunk in _chunks([e["arn"] for e in events]):
        answer = call(client, "DescribeEventDetails", where=HEALTH_REGION, eventArns=chunk)
        for item in answer.get("successfulSet", []):
            text = item.get("eventDescription", {}).get("latestDescription", "")
            out[item["event"]["arn"]] = str(text)
    return out


def _entities(client: Any, events: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Affected resources of each event (instance ids, volume ids, …)."""
    out: dict[str, list[str]] = {}
    for chunk in _chunks([e["arn"] for e in events if e.get("statusCode") != "closed"]):
        for entity in pages(client, "DescribeAffectedEntities", "entities",
                            where=HEALTH_REGION, filter={"eventArns": chunk}):
            value = entity.get("entityValue") or entity.get("entityArn", "")
            if value and value != "UNKNOWN":
                out.setdefault(entity["eventArn"], []).append(str(value))
    return out


def _chunks(items: list[str]) -> Iterable[list[str]]:
    return (items[i:i + _ARNS_PER_CALL] for i in range(0, len(items), _ARNS_PER_CALL))


def _times(event: Mapping[str, Any]) -> str:
    start, end = event.get("startTime"), event.get("endTime")
    parts = [f"from {_utc(start)}"] if isinstance(start, datetime) else []
    parts += [f"to {_utc(end)}"] if isinstance(end, datetime) else []
    return f" {' '.join(parts)}" if parts else ""


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _shorten(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _DESCRIPTION_CHARS else flat[:_DESCRIPTION_CHARS - 1] + "…"


def _affected(entities: list[str]) -> str:
    if not entities:
        return ""
    shown = ", ".join(entities[:_SHOWN_ENTITIES])
    more = len(entities) - _SHOWN_ENTITIES
    return f" — affected: {shown}" + (f" (+{more} more)" if more > 0 else "")


def _days(seconds: float) -> str:
    return f"{seconds / 86400:g} days" if seconds >= 86400 else f"{seconds / 3600:g} h"
