"""The monthly service report: incidents, clocks, availability, the agent's downtime.

Availability per target is the share of the month (maintenance windows left
out) without an open incident. The agent's own downtime is listed with the
number of full 24-hour periods in each gap: NTT's service level (SPEC §2)
refunds per full 24 h of unavailability.
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
from agent.store.incidents import Incident


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
    gaps = [c for g in agent_downtime(runs, until) if (c := _clip(g, first, until))]
    return {
        "month": month, "first": first, "until": until, "host": config.root.agent.name,
        "plan": config.root.plan.name, "now": now,
        "by_severity": Counter(i.severity for i in opened), "opened": opened,
        "clocks": _clock_summary(contract, store, opened, now),
        "availability": _availability(contract, store, incidents, first, until),
        "downtime": gaps,
        "downtime_total": sum((g.end - g.start).total_seconds() for g in gaps),
        "full_days": sum(int((g.end - g.start) / timedelta(hours=24)) for g in gaps),
    }


def _clock_summary(contract: Contract, store: Store, opened: list[Incident],
                   now: datetime) -> dict[str, Counter[str]]:
    summary: dict[str, Counter[str]] = {}
    for incident in opened:
        for result in contract.clocks(incident, store.incidents.events(incident.id), now):
            summary.setdefault(result.name, Counter())[result.state] += 1
    return summary


def _availability(contract: Contract, store: Store, incidents: list[Incident],
                  first: datetime, until: datetime) -> list[Availability]:
    keys = {(r.check, r.target) for r in store.checks.latest()}
    keys |= {(i.check, i.target) for i in incidents}
    rows = []
    for check, target in sorted(keys):
        windows = contract.maintenance.intervals(check, target, first, until)
        counted = (until - first).total_seconds() - _covered(windows, first, until)
        mine = [i for i in incidents if (i.check, i.target) == (check, target)]
        outage = sum(_outage(i, windows, first, until) for i in mine)
        rows.append(Availability(check, target, outage, counted, len(mine)))
    return rows


def _outage(incident: Incident, windows: list[Interval], first: datetime,
            until: datetime) -> float:
    span = _clip(Interval(incident.opened_at, incident.resolved_at or until, ""), first, until)
    if span is None:
        return 0.0
    return (span.end - span.start).total_seconds() - _covered(windows, span.start, span.end)


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
