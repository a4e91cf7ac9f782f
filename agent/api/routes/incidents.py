"""Incidents: list with filters, show (timeline, notices, clocks, runs), acknowledge,
change severity, add a note — the same writes as ``kanshi incidents``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from agent.api.deps import AgentDep, IdPath, IdQuery, Operator, Viewer, iso, not_found, scrub
from agent.policy.clocks import ClockResult
from agent.service import Agent
from agent.store.incidents import _SELECT, Incident, _incident

router = APIRouter(prefix="/api/v1/incidents", tags=["incidents"])

SeverityName = Literal["1", "A", "B", "C"]


class IncidentOut(BaseModel):
    id: int
    check: str
    target: str
    status: str
    severity: str
    message: str
    opened_at: datetime
    resolved_at: datetime | None
    flapping: bool
    acknowledged_by: str | None


class IncidentPage(BaseModel):
    items: list[IncidentOut]
    next_before_id: int | None   # pass as ``before_id`` for the next (older) page


class EventOut(BaseModel):
    id: int
    at: datetime
    kind: str
    status: str | None
    message: str
    actor: str
    data: dict[str, Any]


class DeadlineOut(BaseModel):
    label: str
    due: datetime
    state: str


class IntervalOut(BaseModel):
    start: datetime
    end: datetime
    reason: str


class ClockOut(BaseModel):
    name: str
    state: str
    started: datetime | None
    stopped: datetime | None
    counted_seconds: float
    deadlines: list[DeadlineOut]
    excluded: list[IntervalOut]


class NoticeOut(BaseModel):
    id: int
    channel: str
    kind: str
    state: str
    attempts: int
    last_error: str | None


class RunRef(BaseModel):
    id: int
    runbook: str
    state: str
    dry_run: bool
    outcome: str


class IncidentDetail(IncidentOut):
    clocks: list[ClockOut]
    timeline: list[EventOut]
    notices: list[NoticeOut]
    runbook_runs: list[RunRef]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AckIn(Body):
    comment: str = Field("", max_length=2000)


class SeverityIn(Body):
    to: SeverityName
    reason: str = Field(min_length=1, max_length=2000)


class NoteIn(Body):
    text: str = Field(min_length=1, max_length=10_000)


@router.get("", response_model=IncidentPage)
def list_incidents(agent: AgentDep, principal: Viewer,
                   state: Literal["open", "resolved", "all"] = "open",
                   severity: Annotated[list[SeverityName] | None, Query()] = None,
                   check: Annotated[str | None, Query(max_length=200)] = None,
                   target: Annotated[str | None, Query(max_length=1000)] = None,
                   before_id: IdQuery = None,
                   limit: Annotated[int, Query(ge=1, le=500)] = 100) -> IncidentPage:
    """Incidents, newest first."""
    clauses = {"open": ["i.resolved_at IS NULL"], "resolved": ["i.resolved_at IS NOT NULL"],
               "all": []}[state]
    args: list[Any] = []
    for column, value in (("i.check_name", check), ("i.target", target)):
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    if severity:
        clauses.append(f"i.severity IN ({','.join('?' * len(severity))})")
        args.extend(severity)
    if before_id is not None:
        clauses.append("i.id < ?")
        args.append(before_id)
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    with agent.store.db.read() as conn:
        rows = conn.execute(f"{_SELECT}{where} ORDER BY i.id DESC LIMIT ?",
                            (*args, limit + 1)).fetchall()
    items = [incident_out(agent, _incident(r)) for r in rows[:limit]]
    return IncidentPage(items=items, next_before_id=items[-1].id if len(rows) > limit else None)


@router.get("/{incident_id}", response_model=IncidentDetail)
def show_incident(incident_id: IdPath, agent: AgentDep, principal: Viewer) -> IncidentDetail:
    """One incident with its timeline, notices, clocks and runbook runs."""
    incident = get_incident(agent, incident_id)
    events = agent.store.incidents.events(incident.id)
    clocks = agent.contract.clocks(incident, events, agent.clock.now())
    notices = agent.store.notifications.for_incident(incident.id)
    runs = agent.store.runbooks.for_incident(incident.id)
    return IncidentDetail(
        **incident_out(agent, incident).model_dump(),
        clocks=[clock_out(c) for c in clocks],
        timeline=[EventOut(id=e.id, at=e.at, kind=e.kind, message=scrub(agent, e.message),
                           status=e.status.name if e.status is not None else None,
                           actor=e.actor, data=scrub(agent, e.data)) for e in events],
        notices=[NoticeOut(id=n.id, channel=n.channel, kind=n.kind, state=n.state,
                           attempts=n.attempts, last_error=scrub(agent, n.last_error))
                 for n in notices],
        runbook_runs=[RunRef(id=r.id, runbook=r.runbook, state=r.state, dry_run=r.dry_run,
                             outcome=scrub(agent, r.outcome)) for r in runs])


@router.post("/{incident_id}/ack", response_model=IncidentOut)
def acknowledge(incident_id: IdPath, body: AckIn, agent: AgentDep,
                principal: Operator) -> IncidentOut:
    """Acknowledge an open incident (stops its first-response clock)."""
    incident = get_incident(agent, incident_id)
    if not incident.is_open:
        raise HTTPException(409, f"incident #{incident.id} is already resolved; nothing to "
                                 "acknowledge")
    now = agent.clock.now()
    with agent.store.db.tx():
        agent.store.incidents.add_event(incident.id, now, "acknowledged", actor=principal.name,
                                        message=body.comment)
        agent.store.audit.write(now, principal.name, "incident.acknowledge",
                                f"incident/{incident.id}", {"comment": body.comment, "via": "api"})
    return incident_out(agent, get_incident(agent, incident_id))


@router.post("/{incident_id}/severity", response_model=IncidentOut)
def change_severity(incident_id: IdPath, body: SeverityIn, agent: AgentDep,
                    principal: Operator) -> IncidentOut:
    """Raise or lower an open incident's severity, with the reason."""
    incident = get_incident(agent, incident_id)
    if not incident.is_open:
        raise HTTPException(409, f"incident #{incident.id} is resolved: its record is final")
    if incident.severity == body.to:
        raise HTTPException(409, f"incident #{incident.id} already has severity {body.to}")
    now = agent.clock.now()
    change = {"from": incident.severity, "to": body.to}
    with agent.store.db.tx():
        agent.store.incidents.add_event(incident.id, now, "severity_changed",
                                        actor=principal.name, message=body.reason, data=change)
        agent.store.incidents.update(incident.id, severity=body.to)
        agent.store.audit.write(now, principal.name, "incident.severity",
                                f"incident/{incident.id}",
                                {**change, "reason": body.reason, "via": "api"})
    return incident_out(agent, get_incident(agent, incident_id))


@router.post("/{incident_id}/notes", response_model=EventOut, status_code=201)
def add_note(incident_id: IdPath, body: NoteIn, agent: AgentDep, principal: Operator) -> EventOut:
    """Add a note to an incident's timeline (resolved ones too: findings come later)."""
    incident = get_incident(agent, incident_id)
    now = agent.clock.now()
    with agent.store.db.tx():
        event_id = agent.store.incidents.add_event(incident.id, now, "note",
                                                   actor=principal.name, message=body.text)
        agent.store.audit.write(now, principal.name, "incident.note", f"incident/{incident.id}",
                                {"event": event_id, "via": "api"})
    return EventOut(id=event_id, at=now, kind="note", status=None, message=body.text,
                    actor=principal.name, data={})


def get_incident(agent: Agent, incident_id: int) -> Incident:
    incident = agent.store.incidents.get(incident_id)
    if incident is None:
        raise not_found(f"incident #{incident_id}")
    return incident


def incident_out(agent: Agent, i: Incident) -> IncidentOut:
    return IncidentOut(id=i.id, check=i.check, target=i.target, status=i.status.name,
                       severity=i.severity, message=scrub(agent, i.message),
                       opened_at=i.opened_at, resolved_at=i.resolved_at, flapping=i.flapping,
                       acknowledged_by=i.acknowledged_by)


def clock_out(c: ClockResult) -> ClockOut:
    return ClockOut(name=c.name, state=c.state, started=c.started, stopped=c.stopped,
                    counted_seconds=c.elapsed.total_seconds(),
                    deadlines=[DeadlineOut(label=d.label, due=d.due, state=d.state)
                               for d in c.deadlines],
                    excluded=[IntervalOut(start=i.start, end=i.end, reason=i.reason)
                              for i in c.excluded])


__all__ = ["get_incident", "incident_out", "iso", "router"]
