"""Runbooks: list, show, run (now, at a time, or dry), approve, cancel, run logs.

A run asked for here is a row in the store (``scheduled``) that the agent's own
RunbookService claims within a second — as ``kanshi runbook run --at`` does —
so a run survives the request, and a restart, and is never run twice.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from agent.api.deps import (
    AgentDep,
    IdPath,
    IdQuery,
    RunbookOperator,
    Viewer,
    aware,
    not_found,
    scrub,
)
from agent.policy.contract import calendar_from
from agent.service import Agent
from agent.store.runbooks import ACTIVE, FINAL, Run, StepRecord
from runbooks.params import ParameterError, resolve
from runbooks.schema import Runbook

router = APIRouter(prefix="/api/v1", tags=["runbooks"])

MASK = "********"


class ParameterOut(BaseModel):
    name: str
    type: str
    required: bool
    default: Any
    choices: list[Any] | None
    description: str


class LevelOut(BaseModel):
    name: str
    kind: str                  # steps | run | escalate
    steps: list[str]           # "id (action)"
    verify: str | None
    hands_over_to: str | None


class RunbookOut(BaseModel):
    name: str
    category: str
    target: str
    description: str


class RunbookDetail(RunbookOut):
    parameters: list[ParameterOut]
    levels: list[LevelOut]
    allowed_by_plan: bool


class RunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str = Field(min_length=1, max_length=500,
                        description="what it acts on (host, instance id…)")
    params: dict[str, str | int | float | bool | list[str]] = Field(default_factory=dict)
    dry_run: bool = Field(False, description="plan only, change nothing")
    at: datetime | None = Field(None, description="run at this time (contract time zone "
                                                  "if no offset); default now")
    earliest_business_days: int | None = Field(
        None, ge=0, le=60, description="run at the start of the N-th business day from now")


class RunOut(BaseModel):
    id: int
    runbook: str
    target: str
    params: dict[str, Any]
    trigger: str
    incident_id: int | None
    requested_by: str
    dry_run: bool
    state: str
    level: int
    scheduled_for: datetime
    started_at: datetime | None
    ended_at: datetime | None
    outcome: str
    parent_id: int | None


class StepOut(BaseModel):
    id: int
    run_id: int
    level: int
    step: str
    action: str
    attempt: int
    state: str
    started_at: datetime
    ended_at: datetime | None
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    changed: bool
    summary: str
    error: str | None
    approval: str | None
    approval_by: str | None


class RunDetail(RunOut):
    steps: list[StepOut]
    children: list[RunOut]


class RunLog(BaseModel):
    run: RunOut
    done: bool
    steps: list[StepOut]
    next_after: int   # pass as ``after``: steps still running are sent again


class ApproveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reject: bool = False
    comment: str = Field("", max_length=2000)


@router.get("/runbooks", response_model=list[RunbookOut])
def list_runbooks(agent: AgentDep, principal: Viewer) -> list[RunbookOut]:
    """The runbooks this agent knows (shipped and the customer's)."""
    library = agent.runbooks.library
    return [RunbookOut(name=b.name, category=b.category, target=b.target,
                       description=b.description) for b in map(library.get, library.names())]


@router.get("/runbooks/{name}", response_model=RunbookDetail)
def show_runbook(name: str, agent: AgentDep, principal: Viewer) -> RunbookDetail:
    """A runbook's parameters and levels."""
    book = _book(agent, name)
    return RunbookDetail(
        name=book.name, category=book.category, target=book.target,
        description=book.description, allowed_by_plan=_plan_refusal(agent, book) is None,
        parameters=[ParameterOut(name=n, type=p.type, required=p.required,
                                 default=None if p.type == "secret" else p.default,
                                 choices=list(p.choices) if p.choices else None,
                                 description=p.description)
                    for n, p in book.parameters.items()],
        levels=[_level(lv) for lv in book.levels])


@router.post("/runbooks/{name}/runs", response_model=RunOut, status_code=202)
def start_run(name: str, body: RunIn, agent: AgentDep, principal: RunbookOperator) -> RunOut:
    """Run now, at a time, or as a dry run; the agent carries it out (follow its log)."""
    book = _book(agent, name)
    refusal = _plan_refusal(agent, book)
    if refusal:
        raise HTTPException(409, refusal)
    try:
        params = resolve(book, body.params)
    except ParameterError as exc:
        raise HTTPException(422, "; ".join(f"params.{p}" for p in exc.problems)) from exc
    now = agent.clock.now()
    when = None if body.dry_run else _when(agent, body, now)
    action = "runbook.dry_run" if body.dry_run else \
        "runbook.schedule" if when is not None else "runbook.run"
    with agent.store.db.tx():
        run_id = agent.store.runbooks.create(
            runbook=book.name, target=body.target, params=params,
            trigger="scheduled" if when is not None else "manual", incident_id=None,
            requested_by=principal.name, dry_run=body.dry_run, state="scheduled",
            scheduled_for=when or now, now=now)
        agent.store.audit.write(now, principal.name, action, f"runbook-run/{run_id}",
                                {"runbook": book.name, "target": body.target, "via": "api",
                                 "at": (when or now).isoformat()})
    return run_out(agent, _run(agent, run_id))


@router.get("/runbook-runs", response_model=list[RunOut])
def list_runs(agent: AgentDep, principal: Viewer,
              active: bool = False, before_id: IdQuery = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[RunOut]:
    """Recent runs, newest first (``active``: those not finished)."""
    clauses: list[str] = []
    args: list[Any] = []
    if active:
        clauses.append(f"state IN ({','.join('?' * len(ACTIVE))}, 'scheduled')")
        args.extend(ACTIVE)
    if before_id is not None:
        clauses.append("id < ?")
        args.append(before_id)
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    with agent.store.db.read() as conn:
        ids = [r[0] for r in conn.execute(f"SELECT id FROM runbook_runs{where} ORDER BY id DESC"
                                          f" LIMIT ?", (*args, limit)).fetchall()]
    return [run_out(agent, _run(agent, i)) for i in ids]


@router.get("/runbook-runs/{run_id}", response_model=RunDetail)
def show_run(run_id: IdPath, agent: AgentDep, principal: Viewer) -> RunDetail:
    """A run with its steps and the runs its levels handed over to."""
    run = _run(agent, run_id)
    secrets = _secret_values(agent, run)
    return RunDetail(**run_out(agent, run).model_dump(),
                     steps=[step_out(agent, s, secrets)
                            for s in agent.store.runbooks.steps(run.id)],
                     children=[run_out(agent, c) for c in agent.store.runbooks.children(run.id)])


@router.get("/runbook-runs/{run_id}/log", response_model=RunLog)
def run_log(run_id: IdPath, agent: AgentDep, principal: Viewer,
            after: IdQuery = None) -> RunLog:
    """Steps (of the run and its hand-overs) with an id above ``after``; poll with
    ``next_after`` until ``done``."""
    run = _run(agent, run_id)
    return _log(agent, run, after or 0)


@router.get("/runbook-runs/{run_id}/stream", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
def run_stream(run_id: IdPath, agent: AgentDep, principal: Viewer) -> StreamingResponse:
    """The run's log as server-sent events (``step`` events, then one ``end``)."""
    run = _run(agent, run_id)
    return StreamingResponse(_events(agent, run.id), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store"})


@router.post("/runbook-runs/{run_id}/approve", response_model=RunOut)
def approve(run_id: IdPath, body: ApproveIn, agent: AgentDep,
            principal: RunbookOperator) -> RunOut:
    """Approve (or reject) the step a run waits on."""
    run = _run(agent, run_id)
    waiting = [s for s in agent.store.runbooks.steps(run.id)
               if s.state == "waiting_approval" and s.approval is None]
    if not waiting:
        raise HTTPException(409, f"run #{run.id} is not waiting for an approval "
                                 f"(state: {run.state})")
    decision = "rejected" if body.reject else "approved"
    now = agent.clock.now()
    with agent.store.db.tx():
        if not agent.store.runbooks.decide(waiting[-1].id, decision, principal.name):
            raise HTTPException(409, f"run #{run.id}: the step was decided meanwhile")
        agent.store.audit.write(now, principal.name, f"runbook.{decision}",
                                f"runbook-run/{run.id}", {"step": waiting[-1].step,
                                                          "comment": body.comment, "via": "api"})
    return run_out(agent, _run(agent, run_id))


@router.post("/runbook-runs/{run_id}/cancel", response_model=RunOut)
def cancel(run_id: IdPath, agent: AgentDep, principal: RunbookOperator) -> RunOut:
    """Cancel a run: a scheduled one at once, a running one before its next step."""
    run = _run(agent, run_id)
    now = agent.clock.now()
    with agent.store.db.tx():
        if run.state == "scheduled" and run.owner is None:
            agent.store.runbooks.set_state(run.id, "cancelled", now,
                                           outcome=f"cancelled by {principal.name}")
        elif not agent.store.runbooks.request_cancel(run.id):
            raise HTTPException(409, f"run #{run.id} has already ended ({run.state})")
        agent.store.audit.write(now, principal.name, "runbook.cancel", f"runbook-run/{run.id}",
                                {"via": "api"})
    return run_out(agent, _run(agent, run_id))


# -- helpers ------------------------------------------------------------------------------

def _book(agent: Agent, name: str) -> Runbook:
    try:
        return agent.runbooks.library.get(name)
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from exc


def _run(agent: Agent, run_id: int) -> Run:
    run = agent.store.runbooks.get(run_id)
    if run is None:
        raise not_found(f"runbook run #{run_id}")
    return run


def _plan_refusal(agent: Agent, book: Runbook) -> str | None:
    """Why the contract's plan refuses ``book`` (as ``kanshi runbook run``), or None."""
    plan = agent.config.root.plan
    if book.category == "operation" and not plan.operations:
        return f"the plan ({plan.name}) does not include operations on request"
    if book.category == "recovery" and not plan.automatic_recovery:
        return f"the plan ({plan.name}) has no failure response: notify only"
    return None


def _when(agent: Agent, body: RunIn, now: datetime) -> datetime | None:
    if body.at is not None and body.earliest_business_days is not None:
        raise HTTPException(422, "give at most one of at and earliest_business_days")
    if body.at is not None:
        return max(aware(body.at, agent, "at"), now)
    if body.earliest_business_days is None:
        return None
    calendar = calendar_from(agent.config.root.business_hours)
    day = now.astimezone(calendar.zone).date()
    for _ in range(body.earliest_business_days):
        day = calendar.next_business_day(day)
    span = calendar.open_span(day)
    if span is None:
        raise HTTPException(422, f"{day} has no business hours")
    return span[0]


def _level(level: Any) -> LevelOut:
    kind = "steps" if level.steps else "run" if level.run else "escalate"
    return LevelOut(name=level.name, kind=kind,
                    steps=[f"{s.id} ({s.action})" for s in level.steps],
                    verify=level.verify.action if level.verify else None,
                    hands_over_to=level.run)


def _secret_values(agent: Agent, run: Run) -> set[str]:
    try:
        names = agent.runbooks.library.get(run.runbook).secret_parameters
    except LookupError:
        return set()
    return {str(run.params[n]) for n in names if run.params.get(n) not in (None, "")}


def _mask(value: Any, secrets: set[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {k: _mask(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(v, secrets) for v in value]
    return value


def run_out(agent: Agent, run: Run) -> RunOut:
    secrets = _secret_values(agent, run)
    return RunOut(id=run.id, runbook=run.runbook, target=run.target,
                  params=scrub(agent, _mask(run.params, secrets)), trigger=run.trigger,
                  incident_id=run.incident_id, requested_by=run.requested_by,
                  dry_run=run.dry_run, state=run.state, level=run.level,
                  scheduled_for=run.scheduled_for, started_at=run.started_at,
                  ended_at=run.ended_at, outcome=scrub(agent, _mask(run.outcome, secrets)),
                  parent_id=run.parent_id)


def step_out(agent: Agent, s: StepRecord, secrets: set[str]) -> StepOut:
    def clean(value: Any) -> Any:
        return scrub(agent, _mask(value, secrets))

    return StepOut(id=s.id, run_id=s.run_id, level=s.level, step=s.step, action=s.action,
                   attempt=s.attempt, state=s.state, started_at=s.started_at,
                   ended_at=s.ended_at, inputs=clean(s.inputs), outputs=clean(s.outputs),
                   changed=s.changed, summary=clean(s.summary), error=clean(s.error),
                   approval=s.approval, approval_by=s.approval_by)


def _family(agent: Agent, run: Run) -> list[Run]:
    """The run and, depth first, the runs its levels handed over to (bounded)."""
    found: list[Run] = []
    queue = [run]
    while queue and len(found) < 50:
        current = queue.pop(0)
        found.append(current)
        queue.extend(agent.store.runbooks.children(current.id))
    return found


def _log(agent: Agent, run: Run, after: int) -> RunLog:
    steps: list[StepOut] = []
    for member in _family(agent, run):
        secrets = _secret_values(agent, member)
        steps.extend(step_out(agent, s, secrets) for s in agent.store.runbooks.steps(member.id)
                     if s.id > after)
    steps.sort(key=lambda s: s.id)
    next_after = after
    for step in steps:  # up to the first step still under way: it is sent again
        if step.ended_at is None:
            break
        next_after = step.id
    done = run.state in FINAL
    return RunLog(run=run_out(agent, run), done=done, steps=steps, next_after=next_after)


async def _events(agent: Agent, run_id: int, poll: float = 0.5,
                  limit: float = 6 * 3600) -> AsyncIterator[str]:
    after, waited = 0, 0.0
    sent: dict[int, str] = {}
    while True:
        run = await asyncio.to_thread(_run, agent, run_id)
        log = await asyncio.to_thread(_log, agent, run, after)
        for step in log.steps:
            if sent.get(step.id) != step.state:
                sent[step.id] = step.state
                yield f"event: step\ndata: {step.model_dump_json()}\n\n"
        after = log.next_after
        if log.done or waited >= limit:
            yield f"event: end\ndata: {json.dumps(log.run.model_dump(mode='json'))}\n\n"
            return
        await asyncio.sleep(poll)
        waited += poll
