"""The contract as the agent applies it: calendar, clocks, maintenance, emergency gate.

:meth:`Contract.clocks` evaluates an incident's clocks from its timeline, the
calendar and the exclusions (maintenance windows of its target, the agent's
own downtime) — the same function serves ``kanshi incidents show``, the
at-risk escalation and the reports, so they never disagree.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from agent.config import Config
from agent.config.policy_models import BusinessHoursSettings, ClockSettings
from agent.incidents import PROBLEM_NOTICES
from agent.policy.calendar import BusinessCalendar
from agent.policy.clocks import Budget, ClockMath, ClockResult, Interval, clock, days_clock
from agent.policy.maintenance import MaintenanceSchedule
from agent.store import Store
from agent.store.incidents import Event, Incident
from agent.store.runs import AgentRun

#: Future maintenance shifts deadlines; look this far ahead for it.
LOOKAHEAD = timedelta(days=31)


def calendar_from(settings: BusinessHoursSettings) -> BusinessCalendar:
    return BusinessCalendar(settings.timezone, frozenset(settings.days), settings.start,
                            settings.end, settings.japanese_holidays, settings.year_end_break,
                            frozenset(settings.closed), settings.always)


class Contract:
    def __init__(self, config: Config, store: Store) -> None:
        root = config.root
        self.config = config
        self.store = store
        self.calendar = calendar_from(root.business_hours)
        self.maintenance = MaintenanceSchedule(root.maintenance, root.business_hours.timezone,
                                               store.maintenance)
        self.settings = root.clocks
        self.cloud_checks = {c.name for c in config.checks if getattr(c.cls, "cloud", False)}

    # -- clocks ------------------------------------------------------------------

    def clocks(self, incident: Incident, events: Sequence[Event],
               now: datetime) -> list[ClockResult]:
        """Every clock of ``incident`` as of ``now``."""
        math = ClockMath(self.calendar, self.exclusions(incident, now))
        risk = self.settings.at_risk
        notified = _first(events, "notified", lambda e: e.data.get("kind") in PROBLEM_NOTICES
                          and e.data.get("audience", "customer") == "customer")
        recovered = _last(events, "recovered") if not incident.is_open else None
        results = [self._budgeted("first_notice", self.settings.first_notice,
                                  incident.opened_at, notified, now, math, risk),
                   self._budgeted("failure_report", self.settings.failure_report, notified,
                                  _report(events), now, math, risk),
                   self._first_response(incident, events, now, math, risk)]
        post = self.settings.post_incident_report
        if post.enabled:
            due = self.calendar.add_business_days(recovered, post.business_days) \
                if recovered else None
            results.append(days_clock("post_incident_report", recovered,
                                      _report(events, "post_incident"), now, due, risk))
        return results

    def _budgeted(self, name: str, settings: ClockSettings, started: datetime | None,
                  stopped: datetime | None, now: datetime, math: ClockMath,
                  risk: float) -> ClockResult:
        if not settings.enabled:
            return ClockResult(name, None, None, (), timedelta(0), ())
        if started is not None and settings.starts == "next_business_time":
            started = self.calendar.next_open(started)
        business = settings.basis == "business"
        budgets = [(label, Budget(timedelta(seconds=amount), business))
                   for label, amount in (("SLO", settings.slo), ("SLA", settings.sla))
                   if amount is not None]
        return clock(name, started, stopped, now, budgets, math, risk)

    def _first_response(self, incident: Incident, events: Sequence[Event], now: datetime,
                        math: ClockMath, risk: float) -> ClockResult:
        """The severity's first-response target, with the severity in force over time
        (from the timeline): lowering it after the target was missed cannot unmiss it."""
        acked = _first(events, "acknowledged")
        severity = self._initial_severity(incident, events)
        for change in (e for e in events if e.kind == "severity_changed"):
            if acked is not None and acked <= change.at:
                break
            before = self._response_clock(incident, severity, acked, change.at, math, risk)
            if before.state == "breached":
                return before
            severity = str(change.data.get("to", severity))
        return self._response_clock(incident, severity, acked, now, math, risk)

    def _response_clock(self, incident: Incident, severity: str, acked: datetime | None,
                        now: datetime, math: ClockMath, risk: float) -> ClockResult:
        target = self.config.root.severities.get(severity)  # type: ignore[call-overload]
        if target is None:
            return ClockResult("first_response", None, None, (), timedelta(0), ())
        amount = target.first_response
        if incident.check in self.cloud_checks and target.cloud_first_response is not None:
            amount = target.cloud_first_response
        budget = Budget(timedelta(seconds=amount), business=target.worked == "business")
        return clock("first_response", incident.opened_at, acked, now,
                     [(f"severity {severity}", budget)], math, risk)

    @staticmethod
    def _initial_severity(incident: Incident, events: Sequence[Event]) -> str:
        for event in events:
            if event.kind in ("confirmed", "flapping_started") and "severity" in event.data:
                return str(event.data["severity"])
        changes = [e for e in events if e.kind == "severity_changed"]
        return str(changes[0].data.get("from")) if changes else incident.severity

    # -- exclusions ----------------------------------------------------------------

    def exclusions(self, incident: Incident, now: datetime) -> list[Interval]:
        """Time the clocks of ``incident`` do not count."""
        start, end = incident.opened_at, now + LOOKAHEAD
        found: list[Interval] = []
        if self.settings.exclude_maintenance:
            found += self.maintenance.intervals(incident.check, incident.target, start, end)
        if self.settings.exclude_agent_downtime:
            found += agent_downtime(self.store.runs.between(start, now), now, self.stale_after)
        return found

    @property
    def stale_after(self) -> timedelta:
        """How long without a heartbeat before a run that never recorded its stop is
        taken for dead (a crash, kill -9, a power cut): three missed heartbeats."""
        return timedelta(seconds=3 * self.config.root.agent.heartbeat)

    # -- gates -------------------------------------------------------------------------

    def needs_emergency_ack(self, incident: Incident, events: Sequence[Event],
                            at: datetime) -> bool:
        """Outside business hours an action on a target waits for the emergency
        contact's acknowledgement (SkyArch §3) — unless the plan says otherwise."""
        if not self.config.root.plan.emergency_ack_outside_hours or self.calendar.is_open(at):
            return False
        emergency = {c.name for c in self.config.root.contacts if c.emergency}
        return not any(e.kind == "acknowledged" and e.actor in emergency for e in events)


def agent_downtime(runs: Sequence[AgentRun], now: datetime,
                   stale_after: timedelta = timedelta(minutes=3)) -> list[Interval]:
    """Gaps between agent runs: from a run's last sign of life to the next start, and
    after the last run — stopped, or silent for longer than ``stale_after`` (it died
    without recording a stop) — until ``now``."""
    ordered = sorted(runs, key=lambda r: r.started_at)
    gaps = [Interval(a.stopped_at or a.last_seen_at, b.started_at, "agent not running")
            for a, b in itertools.pairwise(ordered)
            if b.started_at > (a.stopped_at or a.last_seen_at)]
    if ordered:
        last = ordered[-1]
        if last.stopped_at is not None and last.stopped_at < now:
            gaps.append(Interval(last.stopped_at, now, "agent not running"))
        elif last.stopped_at is None and now - last.last_seen_at > stale_after:
            gaps.append(Interval(last.last_seen_at, now, "agent not answering (no heartbeat)"))
    return gaps


def _first(events: Sequence[Event], kind: str,
           test: Callable[[Event], bool] | None = None) -> datetime | None:
    for event in events:
        if event.kind == kind and (test is None or test(event)):
            return event.at
    return None


def _last(events: Sequence[Event], kind: str) -> datetime | None:
    found = [e.at for e in events if e.kind == kind]
    return found[-1] if found else None


def _report(events: Sequence[Event], report: str | None = None) -> datetime | None:
    """When a report (of kind ``report``; any kind when None) was first delivered. A
    post-incident report sent first also answers the failure report: it says more."""
    return _first(events, "report_sent",
                  lambda e: report is None or e.data.get("report") == report)
