"""The monthly service report: incidents, clocks, availability, the agent's downtime.

Availability per target is the share of the month, maintenance windows and the
agent's own downtime left out (nobody was looking), during which the target's
incident timeline said CRITICAL — from the first CRITICAL result until the
status changed or recovery was confirmed. WARNING and UNKNOWN are not outage.
The agent's own downtime is listed with the number of full 24-hour periods in
each gap: NTT's service level (SPEC §2) refunds per full 24 h of
unavailability, counted over the whole gap and credited to the month in which
the gap ended (a gap still open at the month's end is credited when it ends).
"""

from __future__ import annotations

import zoneinfo
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from agent.config import Config
from agent.policy.clocks import Interval
from agent.policy.contract import Contract, agent_downtime
from agent.reports.render import render_report
from agent.store import Store
from agent.store.incidents import Event, Incident
from agent.store.runbooks import Run
from checks.base import Status


@dataclass(frozen=True)
class Availability:
    check: str
    target: str
    outage_seconds: float
    counted_seconds: float
    incidents: int

    @property
    def percent(self) -> float:
        if self.counted_seconds <= 0:
            return 100.0
        return 100.0 * (1 - self.outage_seconds / self.counted_seconds)


def month_bounds(month: date, timezone: str) -> tuple[datetime, datetime]:
    """The first instant of ``month`` and of the next, in the contract's zone."""
    zone = zoneinfo.ZoneInfo(timezone)
    first = datetime(month.year, month.month, 1, tzinfo=zone)
    nxt = datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=zone)
    return first, nxt


def monthly_report(config: Config, store: Store, month: date, now: datetime, lang: str,
                   fmt: str = "md") -> str:
    return render_report("month", monthly_context(config, store, month, now), lang, fmt,
                         config.root.business_hours.timezone)


def monthly_context(config: Config, store: Store, month: date, now: datetime) -> dict[str, Any]:
    first, last = month_bounds(month, config.root.business_hours.timezone)
    until = min(last, now)
    contract = Contract(config, store)
    incidents = store.incidents.overlapping(first, until)
    opened = [i for i in incidents if i.opened_at >= first]
    runs = store.runs.between(first, until)
    whole = agent_downtime(runs, until, contract.stale_after)
    gaps = [c for g in whole if (c := _clip(g, first, until))]
    ended_here = [g for g in whole if first < g.end <= until and not g.end == until == last]
    return {
        "month": month, "first": first, "until": until, "host": config.root.agent.name,
        "plan": config.root.plan.name, "now": now,
        "by_severity": Counter(i.severity for i in opened), "opened": opened,
        "clocks": _clock_summary(contract, store, opened, now),
        "availability": _availability(contract, store, incidents, gaps, first, until),
        "downtime": gaps,
        "downtime_total": sum((g.end - g.start).total_seconds() for g in gaps),
        "full_days": sum(int((g.end - g.start) / timedelta(hours=24)) for g in ended_here),
        "runbooks": _runbook_summary(store.runbooks.created_between(first, until)),
    }


def _runbook_summary(runs: list[Run]) -> list[tuple[str, str, Counter[str]]]:
    """Per runbook and trigger (auto / manual / scheduled; dry runs apart): the runs
    by final state."""
    summary: dict[tuple[str, str], Counter[str]] = {}
    for run in runs:
        trigger = "dry run" if run.dry_run else run.trigger
        summary.setdefault((run.runbook, trigger), Counter())[run.state] += 1
    return [(name, trigger, counts) for (name, trigger), counts in sorted(summary.items())]


def _clock_summary(contract: Contract, store: Store, opened: list[Incident],
                   now: datetime) -> dict[str, Counter[str]]:
    summary: dict[str, Counter[str]] = {}
    for incident in opened:
        for result in contract.clocks(incident, store.incidents.events(incident.id), now):
            summary.setdefault(result.name, Counter())[result.state] += 1
    return summary


def _availability(contract: Contract, store: Store, incidents: list[Incident],
                  downtime: list[Interval], first: datetime,
                  until: datetime) -> list[Availability]:
    keys = {(r.check, r.target) for r in store.checks.latest()}
    keys |= {(i.check, i.target) for i in incidents}
    rows = []
    for check, target in sorted(keys):
        excluded = contract.maintenance.intervals(check, target, first, until) + downtime
        counted = (until - first).total_seconds() - _covered(excluded, first, until)
        mine = [i for i in incidents if (i.check, i.target) == (check, target)]
        spans = [_clip(p, first, until) for i in mine
                 for p in critical_periods(store.incidents.events(i.id), until)]
        outage = sum(_covered_by(span, excluded) for span in spans if span is not None)
        rows.append(Availability(check, target, outage, counted, len(mine)))
    return rows


def critical_periods(events: list[Event], until: datetime) -> list[Interval]:
    """When the timeline said CRITICAL: from each event that set it to the next event
    that set another status (a change, or the confirmed recovery), else ``until``."""
    periods: list[Interval] = []
    since: datetime | None = None
    for event in events:
        if event.status is None:
            continue
        if event.status is Status.CRITICAL and since is None:
            since = event.at
        elif event.status is not Status.CRITICAL and since is not None:
            if event.at > since:
                periods.append(Interval(since, event.at, "critical"))
            since = None
    if since is not None and until > since:
        periods.append(Interval(since, until, "critical"))
    return periods


def _covered_by(span: Interval, excluded: list[Interval]) -> float:
    """Seconds of ``span`` outside every excluded interval."""
    total = (span.end - span.start).total_seconds()
    return total - _covered(excluded, span.start, span.end)


def _covered(windows: list[Interval], first: datetime, last: datetime) -> float:
    """Seconds of ``[first, last)`` inside the (merged) windows."""
    total, cursor = 0.0, first
    for w in sorted(windows, key=lambda w: w.start):
        start, end = max(w.start, cursor), min(w.end, last)
        if end > start:
            total += (end - start).total_seconds()
            cursor = end
    return total


def _clip(interval: Interval, first: datetime, last: datetime) -> Interval | None:
    start, end = max(interval.start, first), min(interval.end, last)
    return Interval(start, end, interval.reason) if end > start else None
