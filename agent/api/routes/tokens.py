"""API tokens (admin only): list, create (the token is shown once), revoke; audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from agent.api.deps import Admin, AgentDep, scrub
from agent.api.tokens import new_token
from agent.store.tokens import TokenExists, TokenRecord

router = APIRouter(prefix="/api/v1", tags=["admin"])

NAME = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
TokenName = Annotated[str, Path(pattern=NAME)]


class TokenOut(BaseModel):
    name: str
    role: str
    created_at: datetime
    created_by: str
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME, description="who or what uses it (the audit log's actor)")
    role: Literal["viewer", "operator", "admin"]


class NewToken(TokenOut):
    token: str = Field(description="shown once: only its hash is kept")


class AuditOut(BaseModel):
    at: datetime
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(agent: AgentDep, principal: Admin) -> list[TokenOut]:
    return [_out(t) for t in agent.store.tokens.all()]


@router.post("/tokens", response_model=NewToken, status_code=201)
def add_token(body: TokenIn, agent: AgentDep, principal: Admin) -> NewToken:
    """A new token; the response is the only place its value ever appears."""
    token, now = new_token(), agent.clock.now()
    try:
        with agent.store.db.tx():
            agent.store.tokens.add(body.name, body.role, token, principal.name, now)
            agent.store.audit.write(now, principal.name, "token.add", f"token/{body.name}",
                                    {"role": body.role, "via": "api"})
    except TokenExists as exc:
        raise HTTPException(409, str(exc)) from exc
    record = agent.store.tokens.get(body.name)
    assert record is not None
    return NewToken(**_out(record).model_dump(), token=token)


@router.delete("/tokens/{name}", status_code=204)
def revoke_token(name: TokenName, agent: AgentDep, principal: Admin) -> None:
    now = agent.clock.now()
    with agent.store.db.tx():
        if not agent.store.tokens.revoke(name, now):
            raise HTTPException(404, f"no active token named {name!r}")
        agent.store.audit.write(now, principal.name, "token.revoke", f"token/{name}",
                                {"via": "api"})


@router.get("/audit", response_model=list[AuditOut])
def audit(agent: AgentDep, principal: Admin,
          limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[AuditOut]:
    """The audit log, newest first."""
    return [AuditOut(at=e.at, actor=e.actor, action=e.action, subject=e.subject,
                     detail=scrub(agent, e.detail)) for e in agent.store.audit.recent(limit)]


def _out(t: TokenRecord) -> TokenOut:
    return TokenOut(name=t.name, role=t.role, created_at=t.created_at, created_by=t.created_by,
                    last_used_at=t.last_used_at, revoked_at=t.revoked_at)
