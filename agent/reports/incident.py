"""The failure report (障害報告) and post-incident report of one incident.

Everything in it comes from the incident's timeline: what was detected when,
which notices reached whom, status changes, acknowledgements, recovery, the
clocks (computed by the same code as ``kanshi incidents show``) and the
evidence (check messages). Cause, impact and prevention are left for a person
to write.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.config import Config
from agent.policy.contract import Contract
from agent.reports.render import render_report
from agent.store import Store
from agent.store.incidents import Event, Incident
from agent.store.runbooks import Run, StepRecord
from checks.base import Result

#: Timeline entries that tell the story (the rest stays in `incidents show`).
STORY = ("detected", "confirmed", "status_changed", "notified", "notice_suppressed",
         "escalated", "acknowledged", "severity_changed", "flapping_started",
         "flapping_stopped", "maintenance_over", "clock_at_risk", "clock_breached",
         "recovered", "closed", "report_sent")


@dataclass(frozen=True)
class Evidence:
    """Consecutive results that said the same thing, as one line."""

    first: datetime
    last: datetime
    status: str
    message: str
    count: int


def runs_of(results: Iterable[Result]) -> list[Evidence]:
    """Group consecutive results with the same status and message."""
    found: list[Evidence] = []
    for r in results:
        at = r.at or datetime.min
        if found and (found[-1].status, found[-1].message) == (r.status.name, r.message):
            last = found[-1]
            found[-1] = Evidence(last.first, at, last.status, last.message, last.count + 1)
        else:
            found.append(Evidence(at, at, r.status.name, r.message, 1))
    return found


@dataclass(frozen=True)
class IncidentReport:
    kind: str            # failure | post_incident
    text: str            # Markdown (or HTML)


def incident_report(config: Config, store: Store, incident: Incident, now: datetime,
                    lang: str, kind: str | None = None, fmt: str = "md") -> IncidentReport:
    """Render the report of ``incident`` (post-incident once it recovered)."""
    kind = kind or ("failure" if incident.is_open else "post_incident")
    events = store.incidents.events(incident.id)
    context = _context(config, store, incident, events, now, kind)
    return IncidentReport(kind, render_report("incident", context, lang, fmt,
                                              config.root.business_hours.timezone))


def _context(config: Config, store: Store, incident: Incident, events: list[Event],
             now: datetime, kind: str) -> dict[str, Any]:
    clocks = Contract(config, store).clocks(incident, events, now)
    recovered = recovery_time(incident, events)
    evidence = [r for r in store.checks.history(incident.check, incident.target,
                                                incident.opened_at)
                if incident.resolved_at is None or r.at is None or r.at <= incident.resolved_at]
    return {
        "kind": kind, "incident": incident, "events": [e for e in events if e.kind in STORY],
        "clocks": clocks, "host": config.root.agent.name, "plan": config.root.plan.name,
        "recovered": recovered, "now": now,
        "outage": ((recovered or now) - incident.opened_at).total_seconds(),
        "evidence": runs_of(r for r in evidence if r.status.is_problem)[:20],
        "notices": [n for n in store.notifications.for_incident(incident.id)
                    if n.state == "delivered"],
        "runbooks": _runbooks(store, incident),
    }


def _runbooks(store: Store, incident: Incident) -> list[tuple[Run, list[StepRecord]]]:
    """The runbook runs of ``incident`` (and the runs their levels handed over to),
    each with its steps."""
    found: list[tuple[Run, list[StepRecord]]] = []
    pending = list(store.runbooks.for_incident(incident.id))
    seen: set[int] = set()
    while pending:
        run = pending.pop(0)
        if run.id in seen:
            continue
        seen.add(run.id)
        found.append((run, store.runbooks.steps(run.id)))
        pending += store.runbooks.children(run.id)
    return found


def recovery_time(incident: Incident, events: list[Event]) -> datetime | None:
    """When the closed ``incident`` recovered: its last recovery that ended it — not
    one of the quiet recoveries while it was flapping, nor any while it is open."""
    if incident.is_open:
        return None
    return next((e.at for e in reversed(events)
                 if e.kind == "recovered" and e.data.get("notified") is not False), None)
