"""The contract's business calendar: when the provider is "open".

Business days are the contract's weekdays minus Japanese national holidays
(substitute and "sandwiched" holidays included, from ``jpholiday``), the
year-end break 12/30–1/3 and any extra closed days (SPEC §3: "Monday–Friday,
excluding Saturdays, Sundays, national holidays and the year-end break").
Business hours are one span per business day (SkyArch 10:00–18:00, Microsoft
9:00–17:30, OZ MODE 9:30–18:30, NTT Entry 9:00–21:00 every day); a 24/365
contract is open always.

All arithmetic happens in the contract's time zone; instants go in and come out
timezone-aware.
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class BusinessCalendar:
    """Open hours of a contract. ``end`` may be ``time(0)`` meaning midnight (24:00)."""

    timezone: str = "Asia/Tokyo"
    days: frozenset[str] = frozenset(WEEKDAYS[:5])
    start: time = time(9, 0)
    end: time = time(17, 30)
    japanese_holidays: bool = True
    year_end_break: bool = True          # 12/30–1/3
    closed: frozenset[date] = field(default_factory=frozenset)
    always: bool = False                 # 24/365

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    # -- days ------------------------------------------------------------------

    def is_business_day(self, day: date) -> bool:
        """Open at all on ``day``?"""
        if self.always:
            return True
        if WEEKDAYS[day.weekday()] not in self.days or day in self.closed:
            return False
        if self.year_end_break and ((day.month, day.day) >= (12, 30) or
                                    (day.month, day.day) <= (1, 3)):
            return False
        return not (self.japanese_holidays and _is_japanese_holiday(day))

    def next_business_day(self, day: date) -> date:
        """The first business day after ``day``."""
        day += timedelta(days=1)
        for _ in range(3660):  # ten years: a calendar with no open day is a config error
            if self.is_business_day(day):
                return day
            day += timedelta(days=1)
        raise ValueError("the business calendar has no business day in ten years")

    # -- hours -------------------------------------------------------------------

    def open_span(self, day: date) -> tuple[datetime, datetime] | None:
        """``day``'s business hours as aware instants, or None if closed."""
        if not self.is_business_day(day):
            return None
        if self.always:
            return self._at(day, time(0)), self._at(day + timedelta(days=1), time(0))
        end_day = day + timedelta(days=1) if self.end == time(0) else day
        return self._at(day, self.start), self._at(end_day, self.end)

    def is_open(self, moment: datetime) -> bool:
        """Is ``moment`` inside business hours?"""
        local = moment.astimezone(self.zone)
        for day in (local.date() - timedelta(days=1), local.date()):
            span = self.open_span(day)
            if span and span[0] <= moment < span[1]:
                return True
        return False

    def next_open(self, moment: datetime) -> datetime:
        """``moment`` if open, else when business hours next begin."""
        for start, end in self.spans_from(moment):
            return max(start, moment) if moment < end else start
        raise ValueError("the business calendar is never open")  # pragma: no cover

    def spans_from(self, moment: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Open spans that end after ``moment``, in order."""
        day = moment.astimezone(self.zone).date() - timedelta(days=1)
        for _ in range(3660):
            span = self.open_span(day)
            if span and span[1] > moment:
                yield span
            day += timedelta(days=1)

    # -- arithmetic ----------------------------------------------------------------

    def add_business_time(self, moment: datetime, amount: timedelta) -> datetime:
        """The instant ``amount`` of business hours after ``moment``."""
        left = amount
        for start, end in self.spans_from(moment):
            start = max(start, moment)
            if start + left <= end:
                return start + left
            left -= end - start
        raise ValueError("the business calendar is never open")  # pragma: no cover

    def business_time_between(self, first: datetime, last: datetime) -> timedelta:
        """Business hours inside ``[first, last)``."""
        total = timedelta(0)
        for start, end in self.spans_from(first):
            if start >= last:
                break
            total += min(end, last) - max(start, first)
        return total

    def add_business_days(self, moment: datetime, days: int) -> datetime:
        """End of business hours on the ``days``-th business day after ``moment``'s day.

        "Within 2 business days after recovery" (SkyArch §3): recovered on a Monday,
        due by the end of Wednesday's business hours; the day of the event itself is
        not counted, and an event on a closed day counts from the next business day.
        """
        day = moment.astimezone(self.zone).date()
        for _ in range(days):
            day = self.next_business_day(day)
        span = self.open_span(day)
        assert span is not None
        return span[1]

    def _at(self, day: date, at: time) -> datetime:
        return datetime.combine(day, at, tzinfo=self.zone)


@functools.lru_cache(maxsize=4096)
def _is_japanese_holiday(day: date) -> bool:
    import jpholiday  # imported on first use: the agent's hot path never needs it

    return bool(jpholiday.is_holiday(day))
