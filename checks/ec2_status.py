"""EC2 status checks (``ec2_status``) and scheduled events (``ec2_events``).

``ec2_status`` (SPEC §2 EC2 "status check", liveness): DescribeInstanceStatus for
the selected instances of every account and region — the system check (AWS's
hardware, network, power: fixed by a stop and start, which moves the instance),
the instance check (the guest OS: boot, network config, full disk) and, where
AWS reports it, the attached EBS check. One result per instance:
``prod/ap-northeast-1/i-0abc``.

``ec2_events``: scheduled events (instance-retirement, instance-stop,
system-reboot, instance-reboot, system-maintenance) — one result per event,
WARNING while it is ahead (CRITICAL within ``critical_within`` of its start),
OK once AWS marks it [Completed] or [Canceled]; a summary per account is always
reported. An event is a fact AWS already confirmed: one result raises it
(``default_max_attempts = 1``).

An account or region that cannot be read gives one whole-check UNKNOWN naming
it and why; its instances keep their last status. Both use free EC2 APIs.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from checks.aws.ec2 import Instance, instances
from checks.aws.session import AwsAccount, AwsError, per_account, shared_client, unique_accounts
from checks.base import Check, CheckConfig, Result, Status
from checks.types import OptionalDuration, expected_error

logger = logging.getLogger(__name__)

_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")
_TREATMENT = {"ok": Status.OK, "warning": Status.WARNING, "critical": Status.CRITICAL}
#: What to do about each scheduled event (EC2 User Guide, "Scheduled events").
EVENT_ADVICE = {
    "instance-retirement": "the host is degraded: stop and start the instance (EBS-backed) "
                           "before then to move it, or replace it",
    "instance-stop": "AWS will stop it: stop and start it yourself before then to move it",
    "system-reboot": "AWS will reboot the host; reschedule it in the console or "
                     "with ModifyInstanceEventStartTime if the time is bad",
    "instance-reboot": "AWS will reboot the instance; reboot it yourself earlier to "
                       "choose the time",
    "system-maintenance": "network or power maintenance on the host: the instance may be "
                          "unreachable for a short time",
}
AccountRegions = list[tuple[str, "list[Instance] | AwsError"]]


class Ec2SelectionConfig(CheckConfig):
    """Which instances: by id and/or tag filters in every account and region (all when
    neither)."""

    accounts: tuple[AwsAccount, ...] = Field(min_length=1)
    instances: tuple[str, ...] = ()
    tags: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    @field_validator("accounts")
    @classmethod
    def _unique(cls, value: tuple[AwsAccount, ...]) -> tuple[AwsAccount, ...]:
        return unique_accounts(value)

    @field_validator("instances", mode="before")
    @classmethod
    def _ids(cls, value: Any) -> Any:
        value = [value] if isinstance(value, str) else value
        for ident in value if isinstance(value, list | tuple) else ():
            if not isinstance(ident, str) or not _INSTANCE_ID.match(ident):
                raise expected_error("an instance id such as i-0123456789abcdef0", ident)
        return value

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: [v] if isinstance(v, str) else v for k, v in value.items()}
        return value


class Ec2StatusConfig(Ec2SelectionConfig):
    """Options of a ``type: ec2_status`` check."""

    stopped: Literal["ok", "warning", "critical"] = "critical"


class Ec2EventsConfig(Ec2SelectionConfig):
    """Options of a ``type: ec2_events`` check."""

    critical_within: OptionalDuration = None


class _Ec2Check(Check):
    """Instances of every account and region, judged by a subclass."""

    config: Ec2SelectionConfig
    include_all: ClassVar[bool] = True

    def run(self) -> list[Result]:
        config = self.config
        gathered = per_account(config.accounts, self._account)
        results: list[Result] = []
        trouble: list[str] = []
        for account, regions in zip(config.accounts, gathered, strict=True):
            seen: list[Instance] = []
            for region, got in regions:
                if isinstance(got, AwsError):
                    trouble.append(f"{account.name} {region}: {got.reason}")
                    continue
                seen += got
                results += [r for i in got for r in self.judge(account, region, i)]
            results += self.summary(account, seen, regions)
        if trouble:
            rest = " — the other accounts and regions were read, these keep their last " \
                   "status" if len(trouble) < self._places() else ""
            results.append(Result(Status.UNKNOWN, "cannot read EC2 for " + "; ".join(trouble)
                                  + rest))
        return results

    def _places(self) -> int:
        return sum(len(a.regions) for a in self.config.accounts)

    def _account(self, account: AwsAccount) -> AccountRegions:
        out: AccountRegions = []
        for region in account.regions:
            client = shared_client(self.context.shared, account, "ec2", region, self.timeout)
            try:
                out.append((region, instances(client, region, self.config.instances,
                                              self.config.tags, include_all=self.include_all)))
            except AwsError as exc:
                out.append((region, exc))
        return out

    def judge(self, account: AwsAccount, region: str, instance: Instance) -> list[Result]:
        raise NotImplementedError

    def summary(self, account: AwsAccount, seen: list[Instance],
                regions: AccountRegions) -> list[Result]:
        """Results about the account as a whole: explicit ids not found, nothing found."""
        if any(isinstance(got, AwsError) for _, got in regions):
            return []
        ids = {i.id for i in seen if i.state != "terminated"}
        missing = [i for i in self.config.instances if i not in ids]
        where = ", ".join(account.regions)
        return [Result(Status.CRITICAL, f"{ident} is named in the config but {account.name} "
                       f"has no such instance in {where} (terminated?): remove it from "
                       "instances", f"{account.name}/{ident}") for ident in missing]


class Ec2StatusCheck(_Ec2Check):
    """System, instance and EBS status checks of EC2 instances."""

    type_name: ClassVar[str] = "ec2_status"
    Config: ClassVar[type[CheckConfig]] = Ec2StatusConfig
    #: SPEC §1: liveness every 10 minutes (AWS runs the checks every minute).
    default_interval: ClassVar[float] = 600.0

    config: Ec2StatusConfig

    def judge(self, account: AwsAccount, region: str, instance: Instance) -> list[Result]:
        target = f"{account.name}/{region}/{instance.id}"
        if instance.state == "terminated":
            return []
        if instance.state != "running":
            return [_not_running(instance, target, self.config.stopped)]
        return [judge_status(instance, target)]

    def summary(self, account: AwsAccount, seen: list[Instance],
                regions: AccountRegions) -> list[Result]:
        out = super().summary(account, seen, regions)
        readable = not any(isinstance(got, AwsError) for _, got in regions)
        if readable and not any(i.state != "terminated" for i in seen) \
                and not self.config.instances:
            out.append(Result(Status.UNKNOWN, f"no instance in {account.name} "
                              f"({', '.join(account.regions)}) matches "
                              f"{_selection(self.config)}: nothing is watched", account.name))
        return out


def _not_running(instance: Instance, target: str, stopped: str) -> Result:
    if instance.state == "pending":
        return Result(Status.OK, f"{instance.title} is starting (pending)", target)
    status = _TREATMENT[stopped]
    advice = " — start it, or set stopped: ok if it is stopped on purpose" \
        if status is not Status.OK else ""
    return Result(status, f"{instance.title} is {instance.state}{advice}", target,
                  {"running": 0.0})


_CHECKS = (("SystemStatus", "system", "system status check",
            "AWS's side (host hardware, network, power): stop and start the instance to "
            "move it to healthy hardware — a reboot is not enough"),
           ("InstanceStatus", "instance", "instance status check",
            "the guest OS (boot, network configuration, full disk, kernel): look at the "
            "system log / screenshot, then reboot"),
           ("AttachedEbsStatus", "ebs", "attached EBS status check",
            "an attached EBS volume is unreachable or impaired: see the volume's status; "
            "stop and start or replace the volume"))


def judge_status(instance: Instance, target: str) -> Result:
    """The status checks of a running instance."""
    status = instance.status
    failed = [(name, advice, _since(status.get(key, {})))
              for key, _, name, advice in _CHECKS
              if status.get(key, {}).get("Status") == "impaired"]
    metrics = {f"{short}_check_failed": float(status[key].get("Status") == "impaired")
               for key, short, _, _ in _CHECKS if key in status}
    if failed:
        text = "; ".join(f"{name} failed{since}: {advice}" for name, advice, since in failed)
        return Result(Status.CRITICAL, f"{instance.title}: {text}", target, metrics)
    states = {status[k].get("Status") for k, _, _, _ in _CHECKS if k in status}
    if not status or "insufficient-data" in states:
        return Result(Status.UNKNOWN, f"{instance.title}: AWS has insufficient data for the "
                      "status checks yet", target, metrics)
    if "initializing" in states:
        return Result(Status.OK, f"{instance.title}: status checks initializing", target,
                      metrics)
    return Result(Status.OK, f"{instance.title}: status checks passed", target, metrics)


def _since(check: dict[str, Any]) -> str:
    times = [d["ImpairedSince"] for d in check.get("Details", []) if d.get("ImpairedSince")]
    return f" since {min(times):%Y-%m-%d %H:%M} UTC" if times else ""


def _selection(config: Ec2SelectionConfig) -> str:
    if not config.tags:
        return "any instance"
    return "tags " + ", ".join(f"{k}={'|'.join(v) or '*'}" for k, v in config.tags.items())


class Ec2EventsCheck(_Ec2Check):
    """Scheduled events of EC2 instances: retirement, stop, reboots, maintenance."""

    type_name: ClassVar[str] = "ec2_events"
    Config: ClassVar[type[CheckConfig]] = Ec2EventsConfig
    default_interval: ClassVar[float] = 3600.0
    #: AWS already confirmed the event: the first result opens the incident.
    default_max_attempts: ClassVar[int | None] = 1
    include_all: ClassVar[bool] = False

    config: Ec2EventsConfig

    def judge(self, account: AwsAccount, region: str, instance: Instance) -> list[Result]:
        now = self.context.clock.now()
        events = list(instance.status.get("Events", []))
        codes = [e.get("Code", "") for e in events]
        out = []
        for event in events:
            code = event.get("Code", "event")
            suffix = f"#{event.get('InstanceEventId', '')}" if codes.count(code) > 1 else ""
            target = f"{account.name}/{region}/{instance.id}/{code}{suffix}"
            out.append(judge_event(instance, event, target, now,
                                   self.config.critical_within))
        return out

    def summary(self, account: AwsAccount, seen: list[Instance],
                regions: AccountRegions) -> list[Result]:
        out = super().summary(account, seen, regions)
        if any(isinstance(got, AwsError) for _, got in regions):
            return out
        events = sum(len(i.status.get("Events", [])) for i in seen)
        running = sum(1 for i in seen if i.state == "running")
        out.append(Result(Status.OK, f"{account.name}: {events} scheduled event(s) on "
                          f"{running} running instance(s) in {', '.join(account.regions)}",
                          account.name, {"events": float(events)}))
        return out


def judge_event(instance: Instance, event: dict[str, Any], target: str, now: datetime,
                critical_within: float | None) -> Result:
    """WARNING while ahead, CRITICAL close to its start, OK once completed or canceled."""
    code = event.get("Code", "event")
    description = str(event.get("Description", "")).strip()
    when = _window(event)
    if description.startswith(("[Completed]", "[Canceled]")):
        return Result(Status.OK, f"{instance.title}: {code} {description}", target)
    start = event.get("NotBefore")
    status = Status.WARNING
    if critical_within is not None and isinstance(start, datetime) \
            and (start - now).total_seconds() <= critical_within:
        status = Status.CRITICAL
    advice = EVENT_ADVICE.get(code, "see the EC2 console's Events page")
    return Result(status, f"{instance.title}: {code} scheduled {when}: {description} — "
                  f"{advice}", target, _event_metrics(start, now))


def _window(event: dict[str, Any]) -> str:
    start, end = event.get("NotBefore"), event.get("NotAfter")
    deadline = event.get("NotBeforeDeadline")
    text = f"from {_utc(start)}" if start else "(no date yet)"
    text += f" to {_utc(end)}" if end else ""
    return text + (f" (can be moved until {_utc(deadline)})" if deadline else "")


def _utc(moment: Any) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") \
        if isinstance(moment, datetime) else str(moment)


def _event_metrics(start: Any, now: datetime) -> dict[str, float]:
    if not isinstance(start, datetime):
        return {}
    return {"starts_in_seconds": (start - now).total_seconds()}
