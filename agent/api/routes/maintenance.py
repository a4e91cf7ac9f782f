"""Maintenance windows: list (config and added), add, end — as ``kanshi maintenance``."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from agent.api.deps import AgentDep, IdPath, Operator, Viewer, aware
from agent.policy.maintenance import MaintenanceSchedule
from checks.types import parse_duration

router = APIRouter(prefix="/api/v1/maintenance", tags=["maintenance"])


class WindowOut(BaseModel):
    name: str                       # "#12" for added windows, the config name otherwise
    id: int | None                  # added windows only (what `end` takes)
    state: Literal["active", "planned", "past"]
    targets: list[str]
    start: datetime
    end: datetime
    reason: str


class WindowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    targets: list[Annotated[str, Field(min_length=1, max_length=500)]] = Field(
        min_length=1, max_length=100,
        description="check/target patterns, as `kanshi maintenance add --target`")
    start: datetime | None = Field(None, description="default now; a past start is "
                                                     "clipped to now (no rewriting the past)")
    end: datetime | None = Field(None, description="give end or duration")
    duration: str | None = Field(None, max_length=40, description="e.g. 90m, 2h")
    reason: str = Field(min_length=1, max_length=2000)


class AddedOut(BaseModel):
    id: int
    targets: list[str]
    start: datetime
    end: datetime
    reason: str
    created_by: str
    clipped: bool                   # the start was in the past and became now


@router.get("", response_model=list[WindowOut])
def list_windows(agent: AgentDep, principal: Viewer,
                 days: Annotated[int, Query(ge=1, le=366)] = 7) -> list[WindowOut]:
    """Windows (from the config and added ones) active now or in the next ``days``."""
    now = agent.clock.now()
    schedule = MaintenanceSchedule(agent.config.root.maintenance,
                                   agent.config.root.business_hours.timezone,
                                   agent.store.maintenance)
    windows = schedule.windows(now, now + timedelta(days=days))
    return [WindowOut(name=w.name, id=_stored_id(w.name), targets=list(w.targets),
                      state="active" if w.start <= now < w.end else
                      "planned" if now < w.start else "past",
                      start=w.start, end=w.end, reason=w.reason) for w in windows]


@router.post("", response_model=AddedOut, status_code=201)
def add_window(body: WindowIn, agent: AgentDep, principal: Operator) -> AddedOut:
    """Add a window: no notices and no automatic runbooks for its targets."""
    now = agent.clock.now()
    start = now if body.start is None else aware(body.start, agent, "start")
    clipped = start < now
    start = max(start, now)
    end = _end(body, agent, start)
    targets = tuple(body.targets)
    with agent.store.db.tx():
        window = agent.store.maintenance.add(targets, start, end, body.reason, principal.name,
                                             now)
        agent.store.audit.write(now, principal.name, "maintenance.add", f"maintenance/{window}",
                                {"targets": list(targets), "start": start.isoformat(),
                                 "end": end.isoformat(), "reason": body.reason, "via": "api"})
    return AddedOut(id=window, targets=list(targets), start=start, end=end, reason=body.reason,
                    created_by=principal.name, clipped=clipped)


@router.post("/{window_id}/end", status_code=204)
def end_window(window_id: IdPath, agent: AgentDep, principal: Operator) -> None:
    """End an added window now (or cancel one not started yet)."""
    now = agent.clock.now()
    with agent.store.db.tx():
        if not agent.store.maintenance.end(window_id, now):
            raise HTTPException(404, f"no open maintenance window #{window_id} (only added "
                                     "windows can be ended; config windows live in the config)")
        agent.store.audit.write(now, principal.name, "maintenance.end",
                                f"maintenance/{window_id}", {"via": "api"})


def _end(body: WindowIn, agent: AgentDep, start: datetime) -> datetime:
    if (body.end is None) == (body.duration is None):
        raise HTTPException(422, "give the end with end (a date-time) or duration (one of them)")
    if body.duration is not None:
        try:
            seconds = parse_duration(body.duration)
        except (ValueError, TypeError) as exc:
            raise HTTPException(422, f"duration: expected a duration such as 90m or 2h, got "
                                     f"{body.duration!r}") from exc
        if not 0 < seconds <= 366 * 86400:
            raise HTTPException(422, "duration: expected more than 0 and at most 366 days")
        return start + timedelta(seconds=seconds)
    assert body.end is not None
    end = aware(body.end, agent, "end")
    if end <= start:
        raise HTTPException(422, "end must be after start")
    return end


def _stored_id(name: str) -> int | None:
    return int(name[1:]) if name.startswith("#") and name[1:].isdigit() else None
