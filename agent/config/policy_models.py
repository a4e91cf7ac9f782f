"""Config models of the contract: business hours, clocks, severities, contacts,
escalation, maintenance windows and the plan. Defaults are SPEC §3–§5's."""

from __future__ import annotations

import re
from datetime import date, datetime, time
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from agent.config.base import Model, Severity
from checks.types import Duration, OptionalDuration, expected_error

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_CLOCK = re.compile(r"^([01]?\d|2[0-4]):([0-5]\d)$")


def _time_of_day(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 10:00 as the sexagesimal number 600.
        value = f"{value // 60}:{value % 60:02d}"
    if isinstance(value, time):
        return value
    match = _CLOCK.match(value) if isinstance(value, str) else None
    if not match or (match.group(1) == "24" and match.group(2) != "00"):
        raise expected_error("a time of day such as 09:30 or 24:00", value)
    hour, minute = int(match.group(1)), int(match.group(2))
    return time(0) if hour == 24 else time(hour, minute)


TimeOfDay = Annotated[time, BeforeValidator(_time_of_day)]


class BusinessHoursSettings(Model):
    """When the provider is open (SPEC §3: Mon–Fri, holidays and 12/30–1/3 closed)."""

    timezone: str = "Asia/Tokyo"
    days: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri")
    start: TimeOfDay = time(9, 0)
    end: TimeOfDay = time(17, 30)       # 24:00 for "until midnight"
    japanese_holidays: bool = True
    year_end_break: bool = True
    closed: tuple[date, ...] = ()
    always: bool = False                # 24/365

    @model_validator(mode="after")
    def _span(self) -> BusinessHoursSettings:
        if not self.always and self.end != time(0) and self.end <= self.start:
            raise PydanticCustomError("kanshi", "expected end after start")
        if not self.always and not self.days:
            raise PydanticCustomError("kanshi", "expected at least one business day")
        return self


Basis = Literal["wall", "business"]
Starts = Literal["immediately", "next_business_time"]


class ClockSettings(Model):
    """One contractual deadline: an objective (SLO) and a commitment (SLA)."""

    slo: OptionalDuration = None
    sla: OptionalDuration = None
    basis: Basis = "wall"                  # count every minute, or business hours only
    starts: Starts = "immediately"         # OZ MODE: outside hours count from the next open
    enabled: bool = True


class ReportClockSettings(Model):
    """A report due a number of business days after an event (SkyArch: 2)."""

    business_days: int = Field(2, ge=1, le=60)
    enabled: bool = True


class ClocksSettings(Model):
    at_risk: float = Field(80.0, gt=0, lt=100)   # % of a clock elapsed → at risk, escalate
    first_notice: ClockSettings = ClockSettings(slo=1800.0, sla=3600.0)       # OZ MODE §4
    failure_report: ClockSettings = ClockSettings(slo=3600.0, sla=10800.0)    # OZ MODE §4
    post_incident_report: ReportClockSettings = ReportClockSettings()         # SkyArch §3
    #: agent downtime and maintenance windows do not count (SPEC §4)
    exclude_maintenance: bool = True
    exclude_agent_downtime: bool = True


class SeverityTarget(Model):
    """First-response target of a severity (Microsoft, SPEC §5)."""

    first_response: Duration
    cloud_first_response: OptionalDuration = None   # severity 1 on cloud components: 15 min
    worked: Literal["24x7", "business"] = "24x7"


def default_severities() -> dict[Literal["1", "A", "B", "C"], SeverityTarget]:
    return {
        "1": SeverityTarget(first_response=3600.0, cloud_first_response=900.0),
        "A": SeverityTarget(first_response=3600.0),
        "B": SeverityTarget(first_response=7200.0, worked="business"),
        "C": SeverityTarget(first_response=14400.0, worked="business"),
    }


class ContactSettings(Model):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")
    notify: tuple[str, ...] = Field(min_length=1)          # notifier names that reach this person
    reachable: Literal["always", "business"] = "always"
    emergency: bool = False     # SkyArch §3: called first outside business hours


class EscalationLevel(Model):
    contacts: tuple[str, ...] = Field(min_length=1)
    repeat: OptionalDuration = None   # remind this often while unacknowledged…
    times: int = Field(1, ge=0, le=100)   # …this many times, then go to the next level


class EscalationChain(Model):
    severities: tuple[Severity, ...] = ("1", "A", "B", "C")
    levels: tuple[EscalationLevel, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _reachable(self) -> EscalationChain:
        if any(level.repeat is None for level in self.levels[:-1]):
            raise PydanticCustomError("kanshi", "expected repeat on every level but the last "
                                                "(it says when to go to the next level)")
        return self


class RecurringWindow(Model):
    """A weekly window: these weekdays, from a time of day, for a duration."""

    days: tuple[Weekday, ...] = Field(min_length=1)
    start: TimeOfDay
    duration: Duration


class MaintenanceSettings(Model):
    """A maintenance window: one-off (start/end), weekly (every) or cron + duration."""

    name: str = Field(min_length=1)
    targets: tuple[str, ...] = ("*",)   # check names or check/target globs
    reason: str = ""
    start: datetime | None = None  # without an offset: in business_hours.timezone
    end: datetime | None = None
    every: RecurringWindow | None = None
    cron: str | None = None        # crontab syntax (minute hour day month weekday)
    duration: OptionalDuration = None
    timezone: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> MaintenanceSettings:
        kinds = [self.start is not None or self.end is not None, self.every is not None,
                 self.cron is not None]
        if sum(kinds) != 1:
            raise PydanticCustomError("kanshi", "expected exactly one of start/end, every, "
                                                "or cron with duration")
        if kinds[0] and (self.start is None or self.end is None or self.end <= self.start):
            raise PydanticCustomError("kanshi", "expected start and end, end after start")
        if self.cron is not None and self.duration is None:
            raise PydanticCustomError("kanshi", "expected a duration with cron")
        if self.cron is not None:
            _check_cron(self.cron)
        return self


def _check_cron(expression: str) -> None:
    from croniter import croniter

    try:
        croniter(expression)
    except (ValueError, KeyError) as exc:
        raise PydanticCustomError("kanshi", "expected a crontab expression such as "
                                            "'0 2 * * sun', got \"{v}\" ({e})",
                                  {"v": expression, "e": str(exc)}) from None


class PlanSettings(Model):
    """What the contract switches on (SPEC §2 plans, §3 failure response)."""

    name: str = "custom"
    automatic_recovery: bool = False   # failure response by runbooks (NTT Standard+, SkyArch)
    operations: bool = False           # operations catalogue on request (NTT Advanced)
    operations_hours: Literal["business", "24x7"] = "business"
    #: an action on a target outside business hours first asks the emergency contact
    emergency_ack_outside_hours: bool = True
