"""What the routes share: the agent, the principals of each role, scrubbing, time."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Query, Request

from agent.api.auth import require
from agent.api.settings import ApiSettings
from agent.api.tokens import Principal, Role
from agent.service import Agent

#: Ids fit SQLite's 64-bit integers (a larger one is a 422, not an overflow).
MAX_ID = 2**62
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
IdQuery = Annotated[int | None, Query(ge=0, le=MAX_ID)]


def agent_of(request: Request) -> Agent:
    agent: Agent = request.app.state.agent
    return agent


def settings_of(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


AgentDep = Annotated[Agent, Depends(agent_of)]
SettingsDep = Annotated[ApiSettings, Depends(settings_of)]
Viewer = Annotated[Principal, Depends(require(Role.viewer))]
Operator = Annotated[Principal, Depends(require(Role.operator))]
RunbookOperator = Annotated[Principal, Depends(require(Role.operator, "run runbooks"))]
Admin = Annotated[Principal, Depends(require(Role.admin))]


def scrub(agent: Agent, value: Any) -> Any:
    """``value`` with every configured secret replaced in its strings (deeply)."""
    if isinstance(value, str):
        return agent.redactor(value)
    if isinstance(value, dict):
        return {k: scrub(agent, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(agent, v) for v in value]
    return value


def aware(moment: datetime, agent: Agent, field: str) -> datetime:
    """``moment`` in UTC; without an offset it is in the contract's time zone (as the CLI)."""
    try:
        if moment.tzinfo is None:
            zone = zoneinfo.ZoneInfo(agent.config.root.business_hours.timezone)
            moment = moment.replace(tzinfo=zone)
        return moment.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise HTTPException(422, f"{field}: not a usable date-time ({exc})") from exc


def not_found(what: str) -> HTTPException:
    return HTTPException(404, f"no {what}")


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
