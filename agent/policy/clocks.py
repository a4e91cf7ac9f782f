"""SLO/SLA clocks of one incident, computed from its timeline and nothing else.

A clock runs from a start event to a stop event against a budget — wall time or
business hours — and skips excluded time: maintenance windows and the agent's
own downtime (SPEC §4: "monitoring-system faults and maintenance windows are
excluded"). It is *met* if it stopped within budget, *breached* if it stopped
late or is past due, *at risk* once a configured share of the budget is used,
else *running*. Nothing here is stored: the same timeline always gives the same
clocks, live or recomputed months later for a report.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from agent.policy.calendar import BusinessCalendar

#: Far enough ahead for any deadline we compute; keeps generators finite.
HORIZON = timedelta(days=400)


@dataclass(frozen=True)
class Interval:
    """A stretch of time a clock does not count, and why."""

    start: datetime
    end: datetime
    reason: str


@dataclass(frozen=True)
class Budget:
    """How long a clock may run, and how that time is counted."""

    amount: timedelta
    business: bool = False               # business hours only (else every minute)


@dataclass(frozen=True)
class Deadline:
    label: str                           # SLO | SLA | target | due
    due: datetime
    state: str                           # met | at_risk | breached | running


@dataclass(frozen=True)
class ClockResult:
    name: str
    started: datetime | None             # None: its start event has not happened yet
    stopped: datetime | None
    deadlines: tuple[Deadline, ...]
    elapsed: timedelta                   # counted time so far (exclusions left out)
    excluded: tuple[Interval, ...]       # what was left out, for the report

    @property
    def state(self) -> str:
        """The worst of its deadlines (or "not_started")."""
        if self.started is None:
            return "not_started"
        order = ("breached", "at_risk", "running", "met")
        return min((d.state for d in self.deadlines), key=order.index, default="met")


class ClockMath:
    """Counting and deadlines over a calendar with excluded intervals."""

    def __init__(self, calendar: BusinessCalendar, exclusions: Iterable[Interval]) -> None:
        self.calendar = calendar
        self.exclusions = tuple(_merge(sorted(exclusions, key=lambda i: i.start)))

    def deadline(self, start: datetime, budget: Budget) -> datetime:
        """When ``budget`` of countable time after ``start`` is used up."""
        left = budget.amount
        for seg_start, seg_end in self._countable(start, budget.business):
            if seg_start + left <= seg_end:
                return seg_start + left
            left -= seg_end - seg_start
        return start + HORIZON

    def counted(self, start: datetime, end: datetime, business: bool) -> timedelta:
        """Countable time inside ``[start, end)``."""
        total = timedelta(0)
        for seg_start, seg_end in self._countable(start, business):
            if seg_start >= end:
                break
            total += min(seg_end, end) - seg_start
        return total

    def until(self, moment: datetime) -> ClockMath:
        """The same, with exclusions after ``moment`` dropped."""
        kept = [Interval(i.start, min(i.end, moment), i.reason)
                for i in self.exclusions if i.start < moment]
        return ClockMath(self.calendar, kept)

    def excluded_between(self, start: datetime, end: datetime) -> tuple[Interval, ...]:
        return tuple(i for i in self.exclusions if i.start < end and i.end > start)

    def _countable(self, start: datetime, business: bool) -> Iterator[tuple[datetime, datetime]]:
        spans = (self.calendar.spans_from(start) if business
                 else iter([(start, start + HORIZON)]))
        for span_start, span_end in spans:
            if span_start >= start + HORIZON:
                return
            yield from _minus(max(span_start, start), span_end, self.exclusions)


def clock(name: str, started: datetime | None, stopped: datetime | None, now: datetime,
          budgets: Sequence[tuple[str, Budget]], math: ClockMath,
          at_risk: float) -> ClockResult:
    """Evaluate one clock with one or more budgets (e.g. SLO and SLA)."""
    if started is None:
        return ClockResult(name, None, None, (), timedelta(0), ())
    until = stopped or now
    if stopped is not None:  # what happened after it stopped cannot move its deadline
        math = math.until(stopped)
    deadlines = []
    for label, budget in budgets:
        due = math.deadline(started, budget)
        used = math.counted(started, until, budget.business)
        deadlines.append(Deadline(label, due, _state(until, due, stopped is not None,
                                                     used / budget.amount, at_risk)))
    business = any(b.business for _, b in budgets)
    return ClockResult(name, started, stopped, tuple(deadlines),
                       math.counted(started, until, business),
                       math.excluded_between(started, until))


def days_clock(name: str, started: datetime | None, stopped: datetime | None,
               now: datetime, due: datetime | None, at_risk: float) -> ClockResult:
    """A clock due at a fixed instant (e.g. the end of the 2nd business day)."""
    if started is None or due is None:
        return ClockResult(name, None, None, (), timedelta(0), ())
    until = stopped or now
    share = (until - started) / (due - started) if due > started else 1.0
    state = _state(until, due, stopped is not None, share, at_risk)
    return ClockResult(name, started, stopped, (Deadline("due", due, state),),
                       until - started, ())


def _state(until: datetime, due: datetime, stopped: bool, share: float,
           at_risk: float) -> str:
    if until > due:
        return "breached"
    if stopped:
        return "met"
    return "at_risk" if share * 100 >= at_risk else "running"


def _merge(intervals: Sequence[Interval]) -> Iterator[Interval]:
    """Overlapping exclusions as one (keeping the first reason)."""
    current: Interval | None = None
    for interval in intervals:
        if current is not None and interval.start <= current.end:
            current = Interval(current.start, max(current.end, interval.end), current.reason)
            continue
        if current is not None:
            yield current
        current = interval
    if current is not None:
        yield current


def _minus(start: datetime, end: datetime,
           exclusions: Sequence[Interval]) -> Iterator[tuple[datetime, datetime]]:
    """``[start, end)`` with the (sorted, merged) exclusions cut out."""
    cursor = start
    for interval in exclusions:
        if interval.end <= cursor or interval.start >= end:
            continue
        if interval.start > cursor:
            yield cursor, interval.start
        cursor = max(cursor, interval.end)
        if cursor >= end:
            return
    if cursor < end:
        yield cursor, end
