"""Health (no token), who am I, and the agent's status at a glance."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from agent import __version__
from agent.api.deps import AgentDep, Viewer
from agent.store.runbooks import ACTIVE

router = APIRouter(prefix="/api/v1", tags=["status"])


class Health(BaseModel):
    status: str
    version: str


class WhoAmI(BaseModel):
    name: str
    role: str


class AgentRunOut(BaseModel):
    host: str
    pid: int
    version: str
    started_at: datetime
    last_seen_at: datetime
    stopped_at: datetime | None


class StatusOut(BaseModel):
    agent: str
    version: str
    now: datetime
    run: AgentRunOut | None
    checks: int
    targets_by_status: dict[str, int]
    open_incidents: int
    open_incidents_by_severity: dict[str, int]
    notifications_by_state: dict[str, int]
    runbook_runs_active: int


@router.get("/health", response_model=Health)
def health() -> Health:
    """Liveness for load balancers and ``HEALTHCHECK``: no token needed."""
    return Health(status="ok", version=__version__)


@router.get("/whoami", response_model=WhoAmI)
def whoami(principal: Viewer) -> WhoAmI:
    """The token's name and role (what the web page may offer)."""
    return WhoAmI(name=principal.name, role=principal.role.name)


@router.get("/status", response_model=StatusOut)
def status(agent: AgentDep, principal: Viewer) -> StatusOut:
    """Is the agent running, and how do things stand."""
    store = agent.store
    run = store.runs.latest()
    with store.db.read() as conn:
        by_status = conn.execute("SELECT status, COUNT(*) FROM check_state GROUP BY status"
                                 ).fetchall()
        by_severity = conn.execute("SELECT severity, COUNT(*) FROM incidents WHERE"
                                   " resolved_at IS NULL GROUP BY severity").fetchall()
        marks = ",".join("?" * len(ACTIVE))
        active = conn.execute(f"SELECT COUNT(*) FROM runbook_runs WHERE state IN ({marks},"
                              f" 'scheduled')", ACTIVE).fetchone()[0]
    from checks.base import Status

    return StatusOut(
        agent=agent.config.root.agent.name, version=__version__, now=agent.clock.now(),
        run=None if run is None else AgentRunOut(
            host=run.host, pid=run.pid, version=run.version, started_at=run.started_at,
            last_seen_at=run.last_seen_at, stopped_at=run.stopped_at),
        checks=len(agent.specs),
        targets_by_status={Status(s).name: n for s, n in by_status},
        open_incidents=sum(n for _, n in by_severity),
        open_incidents_by_severity={str(s): int(n) for s, n in by_severity},
        notifications_by_state=store.notifications.counts(),
        runbook_runs_active=int(active))
