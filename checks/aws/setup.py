"""The initial maintenance setup (NTT East 別紙4): an SNS topic and CloudWatch alarms.

``kanshi aws setup`` makes, in each region a cloudwatch check watches, an SNS
topic for alarm notification (with the configured subscriptions) and a
CloudWatch alarm for every discovered resource's catalogue items marked
``alarm: true`` — liveness/status check, CPU, EBS capacity (disk), memory … —
with the same thresholds, statistic, period and missing-data treatment kanshi
uses. Like an Ansible module it reads the current state, plans, applies unless
it is a dry run, and reports what changed: a second run changes nothing and
says so.

Alarms carry the critical threshold (the warning one where there is no
critical); items that aggregate several metrics or divide two need metric-math
alarms and are left to kanshi; Lightsail has its own alarm API and is left too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from checks.aws.catalogue import Item
from checks.aws.plan import Watch
from checks.aws.session import call, pages

logger = logging.getLogger(__name__)

#: What setup needs beyond the read-only monitoring policy.
SETUP_ACTIONS = ("sns:ListTopics", "sns:CreateTopic", "sns:ListSubscriptionsByTopic",
                 "sns:Subscribe", "cloudwatch:DescribeAlarms", "cloudwatch:PutMetricAlarm")
_OPERATOR = {">=": "GreaterThanOrEqualToThreshold", ">": "GreaterThanThreshold",
             "<=": "LessThanOrEqualToThreshold", "<": "LessThanThreshold"}
_MISSING = {"ok": "notBreaching", "unknown": "missing", "warning": "breaching",
            "critical": "breaching"}
_PLAIN_STATS = {"Average", "Sum", "Minimum", "Maximum", "SampleCount"}
#: The alarm fields setup owns; others (tags, extra actions) a person may add are kept.
_COMPARED = ("Namespace", "MetricName", "Dimensions", "Statistic", "ExtendedStatistic",
             "Period", "EvaluationPeriods", "DatapointsToAlarm", "Threshold",
             "ComparisonOperator", "TreatMissingData", "AlarmActions", "OKActions",
             "AlarmDescription", "ActionsEnabled")


class Subscription(BaseModel):
    """An SNS subscription of the alarm topic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: Literal["email", "email-json", "sms", "http", "https", "sqs", "lambda"]
    endpoint: str = Field(min_length=1)


class AlarmSetup(BaseModel):
    """``setup:`` of a cloudwatch check — what ``kanshi aws setup`` creates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str = Field("kanshi-alarms", pattern=r"^[A-Za-z0-9_-]{1,256}$")
    subscriptions: tuple[Subscription, ...] = ()
    prefix: str = Field("kanshi", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    #: Datapoints in a row that raise an alarm (kanshi's max_attempts, for alarms).
    evaluation_periods: int = Field(3, ge=1, le=100)


@dataclass(frozen=True)
class Change:
    """One thing setup did or would do."""

    region: str
    verb: Literal["create", "update", "subscribe", "skip"]
    what: str
    detail: str = ""

    def line(self, dry_run: bool) -> str:
        verb = {"create": "would create", "update": "would update",
                "subscribe": "would subscribe", "skip": "skip"}[self.verb] \
            if dry_run else {"create": "created", "update": "updated",
                             "subscribe": "subscribed", "skip": "skipped"}[self.verb]
        return f"{self.region}: {verb} {self.what}{f' — {self.detail}' if self.detail else ''}"


@dataclass
class Report:
    """What a setup run found and changed."""

    changes: list[Change] = field(default_factory=list)
    unchanged_alarms: int = 0
    unchanged_topics: int = 0
    unchanged_subscriptions: int = 0

    @property
    def changed(self) -> int:
        return sum(1 for c in self.changes if c.verb != "skip")


def alarm_name(prefix: str, watch: Watch) -> str:
    """``kanshi-ec2-i-0abc-cpu`` (alarm names are per region: the region is left out)."""
    path = watch.target.split("/", 1)[1]
    name = f"{prefix}-{path.replace('/', '-', 2)}".replace("[", "-").replace("]", "")
    return re.sub(r"[^\x20-\x7e]", "_", name)[:255]  # CloudWatch: 255 ASCII characters


def alarmable(watch: Watch) -> bool:
    """Whether setup makes an alarm of ``watch``: marked ``alarm``, one metric, a level."""
    item = watch.item
    return (item.alarm and item.source != "lightsail" and len(watch.dim_sets) == 1
            and not item.divide_by and (item.critical is not None or item.warning is not None))


def desired_alarm(watch: Watch, settings: AlarmSetup, topic_arn: str) -> dict[str, Any] | None:
    """The PutMetricAlarm request for a watch, or None when it cannot be one alarm."""
    item = watch.item
    level = item.critical if item.critical is not None else item.warning
    if level is None or not alarmable(watch):
        return None
    request: dict[str, Any] = {
        "AlarmName": alarm_name(settings.prefix, watch),
        "AlarmDescription": f"kanshi: {watch.subject}: {item.title} {item.comparison} "
                            f"{level:g} ({item.unit})",
        "ActionsEnabled": True, "AlarmActions": [topic_arn], "OKActions": [topic_arn],
        "Namespace": item.namespace, "MetricName": item.metric,
        "Dimensions": [{"Name": k, "Value": v} for k, v in watch.dim_sets[0]],
        "Period": int(item.period), "EvaluationPeriods": settings.evaluation_periods,
        "DatapointsToAlarm": settings.evaluation_periods,
        "Threshold": _raw_threshold(item, level),
        "ComparisonOperator": _OPERATOR[item.comparison],
        "TreatMissingData": _MISSING[item.missing]}
    stat_key = "Statistic" if item.stat in _PLAIN_STATS else "ExtendedStatistic"
    request[stat_key] = item.stat
    return request


def _raw_threshold(item: Item, level: float) -> float:
    """A kanshi threshold in the metric's own unit (undo scale and per-second)."""
    raw = level / item.scale
    return raw * item.period if item.per_second else raw


def _same(existing: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The owned fields that differ."""
    def norm(key: str, value: Any) -> Any:
        if key == "Dimensions":
            return sorted((d["Name"], d["Value"]) for d in value or [])
        if key == "Threshold":
            return round(float(value), 9)
        return value
    return [k for k in _COMPARED if norm(k, existing.get(k)) != norm(k, wanted.get(k))]


Clients = Callable[[str], Any]  # service → client of this region


def setup_region(clients: Clients, region: str, watches: list[Watch], settings: AlarmSetup,
                 *, dry_run: bool, report: Report) -> None:
    """Make ``region``'s topic, subscriptions and alarms as planned."""
    topic_arn = _topic(clients, region, settings, dry_run, report)
    _subscriptions(clients, region, topic_arn, settings, dry_run, report)
    existing = _existing_alarms(clients("cloudwatch"), region, settings.prefix)
    for watch, wanted in _wanted(watches, settings, topic_arn, region, report):
        current = existing.get(wanted["AlarmName"])
        differs = [] if current is None else _same(current, wanted)
        if current is not None and not differs:
            report.unchanged_alarms += 1
            continue
        verb: Literal["create", "update"] = "create" if current is None else "update"
        detail = _summary(watch.item, wanted) if current is None \
            else f"{', '.join(differs)} changed"
        report.changes.append(Change(region, verb, f"alarm {wanted['AlarmName']}", detail))
        if not dry_run:
            call(clients("cloudwatch"), "PutMetricAlarm", where=region, **wanted)


def _wanted(watches: list[Watch], settings: AlarmSetup, topic_arn: str, region: str,
            report: Report) -> Iterator[tuple[Watch, dict[str, Any]]]:
    for watch in watches:
        if not watch.item.alarm:
            continue
        if watch.item.source == "lightsail":
            continue
        if not watch.dim_sets:
            report.changes.append(Change(region, "skip", f"alarm for {watch.subject} "
                                         f"{watch.item.title}", f"no {watch.item.metric} "
                                         "metric yet; run setup again once it is published"))
            continue
        wanted = desired_alarm(watch, settings, topic_arn)
        if wanted is not None:
            yield watch, wanted


def _summary(item: Item, wanted: dict[str, Any]) -> str:
    sign = {">=": "≥", ">": ">", "<=": "≤", "<": "<"}[item.comparison]
    stat = wanted.get("Statistic") or wanted.get("ExtendedStatistic")
    return (f"{item.metric} {stat} {int(item.period) // 60}m {sign} "
            f"{wanted['Threshold']:g} for {wanted['EvaluationPeriods']} periods, "
            f"missing data {wanted['TreatMissingData']}")


def _topic(clients: Clients, region: str, settings: AlarmSetup, dry_run: bool,
           report: Report) -> str:
    sns = clients("sns")
    suffix = f":{settings.topic}"
    for topic in pages(sns, "ListTopics", "Topics", where=region):
        if topic["TopicArn"].endswith(suffix):
            report.unchanged_topics += 1
            return str(topic["TopicArn"])
    report.changes.append(Change(region, "create", f"SNS topic {settings.topic}",
                                 "for alarm notification"))
    if dry_run:
        identity = call(clients("sts"), "GetCallerIdentity", where=region)
        partition = identity["Arn"].split(":")[1]
        return f"arn:{partition}:sns:{region}:{identity['Account']}:{settings.topic}"
    return str(call(sns, "CreateTopic", where=region, Name=settings.topic)["TopicArn"])


def _subscriptions(clients: Clients, region: str, topic_arn: str, settings: AlarmSetup,
                   dry_run: bool, report: Report) -> None:
    if not settings.subscriptions:
        return
    sns = clients("sns")
    have: set[tuple[str, str]] = set()
    if not (dry_run and any(c.what.startswith("SNS topic") and c.region == region
                            for c in report.changes)):
        have = {(s["Protocol"], s["Endpoint"]) for s in pages(
            sns, "ListSubscriptionsByTopic", "Subscriptions", where=region,
            TopicArn=topic_arn)}
    for sub in settings.subscriptions:
        if (sub.protocol, sub.endpoint) in have:
            report.unchanged_subscriptions += 1
            continue
        report.changes.append(Change(region, "subscribe", f"{sub.protocol} {sub.endpoint}",
                                     f"to {settings.topic} (email asks to confirm)"))
        if not dry_run:
            call(sns, "Subscribe", where=region, TopicArn=topic_arn, Protocol=sub.protocol,
                 Endpoint=sub.endpoint)


def _existing_alarms(cloudwatch: Any, region: str, prefix: str) -> dict[str, dict[str, Any]]:
    return {a["AlarmName"]: a for a in pages(cloudwatch, "DescribeAlarms", "MetricAlarms",
                                             where=region, AlarmNamePrefix=f"{prefix}-",
                                             AlarmTypes=["MetricAlarm"])}
