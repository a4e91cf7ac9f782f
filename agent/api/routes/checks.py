"""Checks, their latest results per target, and result history (paged, bounded)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from agent.api.deps import AgentDep, SettingsDep, Viewer, aware, not_found, scrub
from agent.service import Agent
from agent.store.db import parse_ts, ts
from checks.base import Status

router = APIRouter(prefix="/api/v1", tags=["checks"])

StatusName = Literal["OK", "WARNING", "CRITICAL", "UNKNOWN"]


class CheckOut(BaseModel):
    name: str
    type: str
    enabled: bool
    interval_seconds: float
    severity: str
    description: str
    runbook: str | None
    targets_by_status: dict[str, int]
    last_run_at: datetime | None


class ResultOut(BaseModel):
    check: str
    target: str
    status: StatusName
    message: str
    metrics: dict[str, float]
    at: datetime
    duration_seconds: float


class LatestOut(ResultOut):
    confirmed_status: StatusName
    confirmed_since: datetime
    flapping: bool


class ResultPage(BaseModel):
    total: int
    items: list[LatestOut]


class HistoryPage(BaseModel):
    items: list[ResultOut]
    next_before: datetime | None   # pass as ``before`` for the next (older) page


@router.get("/checks", response_model=list[CheckOut])
def list_checks(agent: AgentDep, principal: Viewer) -> list[CheckOut]:
    """Every configured check with its targets counted by status."""
    with agent.store.db.read() as conn:
        rows = conn.execute("SELECT check_name, status, COUNT(*), MAX(last_run_at)"
                            " FROM check_state GROUP BY check_name, status").fetchall()
    counts: dict[str, dict[str, int]] = {}
    last: dict[str, str] = {}
    for name, status, count, at in rows:
        counts.setdefault(name, {})[Status(status).name] = count
        last[name] = max(last.get(name, ""), at)
    return [CheckOut(name=s.name, type=s.type_name, enabled=s.enabled,
                     interval_seconds=s.interval, severity=s.severity,
                     description=s.description,
                     runbook=s.runbook.name if s.runbook else None,
                     targets_by_status=counts.get(s.name, {}),
                     last_run_at=parse_ts(last[s.name]) if s.name in last else None)
            for s in agent.config.checks]


@router.get("/results", response_model=ResultPage)
def latest_results(agent: AgentDep, principal: Viewer,
                   check: Annotated[str | None, Query(max_length=200)] = None,
                   status: Annotated[list[StatusName] | None, Query()] = None,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                   offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> ResultPage:
    """The latest result of each (check, target), worst first; filter by check/status."""
    where, args = _filters(check, status)
    with agent.store.db.read() as conn:
        total = conn.execute(f"SELECT COUNT(*) FROM check_state{where}", args).fetchone()[0]
        rows = conn.execute(
            f"SELECT * FROM check_state{where} ORDER BY CASE status WHEN 2 THEN 0 WHEN 3"
            f" THEN 1 WHEN 1 THEN 2 ELSE 3 END, check_name, target LIMIT ? OFFSET ?",
            (*args, limit, offset)).fetchall()
    return ResultPage(total=int(total), items=[_latest(agent, r) for r in rows])


@router.get("/checks/{name}", response_model=ResultPage)
def check_results(name: str, agent: AgentDep, principal: Viewer,
                  status: Annotated[list[StatusName] | None, Query()] = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                  offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> ResultPage:
    """The latest result of each target of one check."""
    _known(agent, name)
    return latest_results(agent, principal, name, status, limit, offset)


@router.get("/checks/{name}/history", response_model=HistoryPage)
def check_history(name: str, agent: AgentDep, settings: SettingsDep, principal: Viewer,
                  target: Annotated[str, Query(max_length=1000)] = "",
                  since: datetime | None = None, before: datetime | None = None,
                  limit: Annotated[int | None, Query(ge=1)] = None) -> HistoryPage:
    """Stored results of one (check, target), newest first; page with ``before``."""
    _known(agent, name)
    cap = min(limit or settings.history_limit, settings.history_limit)
    where = "check_name = ? AND target = ?"
    args: list[Any] = [name, target]
    if since is not None:
        where += " AND at >= ?"
        args.append(ts(aware(since, agent, "since")))
    if before is not None:
        where += " AND at < ?"
        args.append(ts(aware(before, agent, "before")))
    with agent.store.db.read() as conn:
        rows = conn.execute(f"SELECT * FROM results WHERE {where} ORDER BY at DESC, id DESC"
                            f" LIMIT ?", (*args, cap + 1)).fetchall()
    items = [_result(agent, r) for r in rows[:cap]]
    return HistoryPage(items=items, next_before=items[-1].at if len(rows) > cap else None)


def _known(agent: Agent, name: str) -> None:
    if not any(s.name == name for s in agent.config.checks):
        raise not_found(f"check named {name!r} in the config")


def _filters(check: str | None, status: list[StatusName] | None) -> tuple[str, tuple[Any, ...]]:
    clauses: list[str] = []
    args: list[Any] = []
    if check is not None:
        clauses.append("check_name = ?")
        args.append(check)
    if status:
        clauses.append(f"status IN ({','.join('?' * len(status))})")
        args.extend(int(Status[s]) for s in status)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)


def _result(agent: Agent, r: Any) -> ResultOut:
    return ResultOut(check=r["check_name"], target=r["target"], status=Status(r["status"]).name,
                     message=agent.redactor(r["message"]), metrics=json.loads(r["metrics"]),
                     at=parse_ts(r["at"]), duration_seconds=r["duration"])


def _latest(agent: Agent, r: Any) -> LatestOut:
    return LatestOut(check=r["check_name"], target=r["target"],
                     status=Status(r["status"]).name, message=scrub(agent, r["message"]),
                     metrics=json.loads(r["metrics"]), at=parse_ts(r["last_run_at"]),
                     duration_seconds=r["duration"],
                     confirmed_status=Status(r["hard_status"]).name,
                     confirmed_since=parse_ts(r["hard_since"]), flapping=bool(r["flapping"]))
