"""What each page shows, read from the store (no HTML here)."""

from __future__ import annotations

import zoneinfo
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agent.policy.clocks import ClockResult
from agent.secrets import Redactor
from agent.store.checks import LatestResult
from agent.store.incidents import Event, Incident
from agent.store.notifications import Notification
from agent.store.runbooks import FINAL, Run, StepRecord
from agent.web.graphs import PERIODS, Chart, charts
from checks.base import Status, worst

if TYPE_CHECKING:
    from agent.service import Agent

STATUS_ORDER = (Status.CRITICAL, Status.UNKNOWN, Status.WARNING, Status.OK)


@dataclass
class CheckGroup:
    """One check on the overview: its targets' latest results and the worst of them."""

    name: str
    type_name: str
    rows: list[LatestResult] = field(default_factory=list)
    open_incidents: int = 0

    @property
    def worst(self) -> Status | None:
        return worst([r.status for r in self.rows]) if self.rows else None


@dataclass(frozen=True)
class Overview:
    groups: list[CheckGroup]
    open_incidents: list[Incident]
    resolved: list[Incident]
    counts: list[tuple[Status, int]]


def overview(agent: Agent) -> Overview:
    """Every check with its targets, those with open incidents first, then the worst."""
    store = agent.store
    opened = store.incidents.find(open_only=True, limit=500)
    groups: dict[str, CheckGroup] = {
        name: CheckGroup(name, spec.type_name) for name, spec in agent.specs.items()}
    for row in store.checks.latest():
        groups.setdefault(row.check, CheckGroup(row.check, "")).rows.append(row)
    for incident in opened:
        if incident.check in groups:
            groups[incident.check].open_incidents += 1
    ordered = sorted(groups.values(), key=lambda g: (
        -g.open_incidents, _rank(g.worst), g.name))
    counts = Counter(r.status for g in ordered for r in g.rows)
    resolved = [i for i in store.incidents.find(open_only=False, limit=20) if not i.is_open]
    return Overview(ordered, opened, resolved[:10], [(s, counts.get(s, 0))
                                                      for s in STATUS_ORDER])


def _rank(status: Status | None) -> int:
    return STATUS_ORDER.index(status) if status is not None else len(STATUS_ORDER)


@dataclass(frozen=True)
class TargetView:
    check: str
    type_name: str
    rows: list[LatestResult]
    charts: list[Chart]
    incidents: list[Incident]
    period: str


def target_view(agent: Agent, check: str, target: str | None, period: str) -> TargetView | None:
    """A check's targets (or one of them), their latest results and graphs."""
    spec = agent.specs.get(check)
    rows = [r for r in agent.store.checks.latest() if r.check == check
            and (target is None or r.target == target)]
    if spec is None and not rows:
        return None
    type_name = spec.type_name if spec is not None else ""
    end = agent.clock.now()
    start = end - PERIODS[period]
    zone = zoneinfo.ZoneInfo(agent.config.root.agent.timezone)
    drawn: list[Chart] = []
    for row in rows:
        history = agent.store.checks.history(check, row.target, start)
        drawn += charts(type_name, row.target, history, start, end, zone)
    incidents = [i for i in agent.store.incidents.find(open_only=False, limit=200)
                 if i.check == check and (target is None or i.target == target)][:20]
    return TargetView(check, type_name, rows, drawn, incidents, period)


@dataclass(frozen=True)
class RunView:
    run: Run
    steps: list[StepRecord]
    children: list[RunView]
    params: dict[str, Any]

    @property
    def active(self) -> bool:
        return self.run.state not in FINAL or any(c.active for c in self.children)

    @property
    def waiting(self) -> list[StepRecord]:
        return [s for s in self.steps if s.state == "waiting_approval" and s.approval is None]


def run_view(agent: Agent, run: Run, depth: int = 0) -> RunView:
    """A run with its steps and the runs its levels handed over to, secrets masked."""
    scrub = run_redactor(agent, run)
    steps = [_scrubbed_step(s, scrub) for s in agent.store.runbooks.steps(run.id)]
    children = [run_view(agent, c, depth + 1) for c in agent.store.runbooks.children(run.id)] \
        if depth < 5 else []
    return RunView(run, steps, children, _shown_params(agent, run, scrub))


def run_redactor(agent: Agent, run: Run) -> Redactor:
    """The config's secrets plus the run's parameters of type ``secret``."""
    found = set(agent.config.secrets())
    try:
        book = agent.runbooks.library.get(run.runbook)
    except LookupError:
        return Redactor(found)
    found |= {str(run.params[n]) for n, p in book.parameters.items()
              if p.type == "secret" and run.params.get(n) not in (None, "")}
    return Redactor(found)


def _shown_params(agent: Agent, run: Run, scrub: Redactor) -> dict[str, Any]:
    try:
        secret = {n for n, p in agent.runbooks.library.get(run.runbook).parameters.items()
                  if p.type == "secret"}
    except LookupError:
        secret = set()
    return {k: "********" if k in secret else scrub(str(v)) for k, v in run.params.items()}


def _scrubbed_step(step: StepRecord, scrub: Redactor) -> StepRecord:
    from dataclasses import replace

    return replace(step, summary=scrub(step.summary),
                   error=scrub(step.error) if step.error else step.error,
                   outputs={k: scrub(str(v)) for k, v in step.outputs.items()},
                   inputs={k: scrub(str(v)) for k, v in step.inputs.items()})


@dataclass(frozen=True)
class IncidentView:
    incident: Incident
    events: list[Event]
    clocks: list[ClockResult]
    notices: list[Notification]
    runs: list[RunView]
    severities: list[str]


def incident_view(agent: Agent, incident_id: int, now: datetime) -> IncidentView | None:
    """An incident as ``kanshi incidents show`` sees it, plus its runbook runs."""
    incident = agent.store.incidents.get(incident_id)
    if incident is None:
        return None
    events = agent.store.incidents.events(incident.id)
    clocks = agent.contract.clocks(incident, events, now)
    notices = agent.store.notifications.for_incident(incident.id)
    runs = [run_view(agent, r) for r in agent.store.runbooks.for_incident(incident.id)
            if r.parent_id is None]
    return IncidentView(incident, events, clocks, notices, runs,
                        [str(s) for s in agent.config.root.severities])
