"""Maintenance windows: from the config (one-off, weekly, cron) and from operators.

A window covers targets named by patterns: a check name (``disk``), a
check/target glob (``disk//var*``, ``ping/10.0.0.*``) or ``*``. During a window
results are still recorded but nothing is notified and no automatic runbook
runs for its targets; SLO clocks do not count it.
"""

from __future__ import annotations

import fnmatch
import zoneinfo
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from agent.config.policy_models import MaintenanceSettings
from agent.policy.clocks import Interval
from agent.store.maintenance import MaintenanceStore

WEEKDAY_NUMBERS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}


@dataclass(frozen=True)
class Window:
    name: str
    targets: tuple[str, ...]
    start: datetime
    end: datetime
    reason: str

    def covers(self, check: str, target: str) -> bool:
        return covers(self.targets, check, target)


def covers(patterns: Sequence[str], check: str, target: str) -> bool:
    """Does any pattern name this check (and target)?"""
    full = f"{check}/{target}" if target else check
    return any(fnmatch.fnmatchcase(full, p) or fnmatch.fnmatchcase(check, p) for p in patterns)


class MaintenanceSchedule:
    """Every window, expanded into instants, for one config and store."""

    def __init__(self, settings: Sequence[MaintenanceSettings], default_timezone: str,
                 stored: MaintenanceStore | None = None) -> None:
        self.settings = tuple(settings)
        self.default_zone = zoneinfo.ZoneInfo(default_timezone)
        self.stored = stored

    def windows(self, first: datetime, last: datetime) -> list[Window]:
        """Windows overlapping ``[first, last)``, sorted by start."""
        found = [w for s in self.settings for w in self._expand(s, first, last)]
        if self.stored is not None:
            found += [Window(f"#{w.id}", w.targets, w.starts_at, w.ends_at, w.reason)
                      for w in self.stored.overlapping(first, last)]
        return sorted((w for w in found if w.start < last and w.end > first),
                      key=lambda w: w.start)

    def active(self, check: str, target: str, at: datetime) -> Window | None:
        """The window covering (check, target) at ``at``, if any."""
        for window in self.windows(at, at + timedelta(microseconds=1)):
            if window.covers(check, target):
                return window
        return None

    def intervals(self, check: str, target: str, first: datetime,
                  last: datetime) -> list[Interval]:
        """The windows of (check, target) as clock exclusions."""
        return [Interval(w.start, w.end, f"maintenance: {w.name}" + (f" ({w.reason})"
                                                                       if w.reason else ""))
                for w in self.windows(first, last) if w.covers(check, target)]

    def _expand(self, s: MaintenanceSettings, first: datetime,
                last: datetime) -> Iterator[Window]:
        zone = zoneinfo.ZoneInfo(s.timezone) if s.timezone else self.default_zone
        if s.start is not None and s.end is not None:
            yield Window(s.name, s.targets, _aware(s.start, zone), _aware(s.end, zone), s.reason)
        elif s.every is not None:
            yield from self._weekly(s, zone, first, last)
        elif s.cron is not None and s.duration is not None:
            yield from self._cron(s, zone, first, last)

    @staticmethod
    def _weekly(s: MaintenanceSettings, zone: zoneinfo.ZoneInfo, first: datetime,
                last: datetime) -> Iterator[Window]:
        assert s.every is not None
        length = timedelta(seconds=s.every.duration)
        day = (first - length).astimezone(zone).date()
        days = {WEEKDAY_NUMBERS[d] for d in s.every.days}
        while datetime.combine(day, s.every.start, tzinfo=zone) < last:
            if day.weekday() in days:
                yield _window(s, datetime.combine(day, s.every.start, tzinfo=zone), length)
            day += timedelta(days=1)

    @staticmethod
    def _cron(s: MaintenanceSettings, zone: zoneinfo.ZoneInfo, first: datetime,
              last: datetime) -> Iterator[Window]:
        # croniter follows crontab(5): 0 and 7 are Sunday, and a day-of-month and a
        # day-of-week both given match either (APScheduler's from_crontab does neither).
        from croniter import croniter

        assert s.cron is not None and s.duration is not None
        length = timedelta(seconds=s.duration)
        schedule = croniter(s.cron, (first - length).astimezone(zone))
        while (moment := schedule.get_next(datetime)) < last:
            yield _window(s, moment, length)


def _window(s: MaintenanceSettings, start: datetime, length: timedelta) -> Window:
    """A window of real ``length``: added in UTC, so a DST change cannot stretch it."""
    begin = start.astimezone(UTC)
    return Window(s.name, s.targets, begin, begin + length, s.reason)


def _aware(moment: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)
