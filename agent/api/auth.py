"""Authentication (bearer token or the web page's cookie) and role checks for FastAPI."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from fastapi import Depends, HTTPException, Request, Response

from agent.api.settings import ApiSettings
from agent.api.tokens import Principal, Role, authenticate, new_token

if TYPE_CHECKING:
    from agent.service import Agent

COOKIE = "kanshi_token"
ANONYMOUS = Principal("anonymous", Role.viewer)

#: What each role is needed for, in the words of a 403 ("viewer may not run runbooks").
DOING = {Role.viewer: "read", Role.operator: "change incidents, maintenance or runbooks",
         Role.admin: "manage tokens"}

__all__ = ["COOKIE", "Principal", "Role", "authenticate", "current_principal", "new_token",
           "optional_principal", "require", "set_token_cookie"]


def presented_token(request: Request) -> str | None:
    """The token of ``Authorization: Bearer …``, else of the ``kanshi_token`` cookie."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None
    return request.cookies.get(COOKIE) or None


def optional_principal(request: Request) -> Principal | None:
    """The authenticated principal, the anonymous viewer if allowed, or None."""
    agent: Agent = request.app.state.agent
    settings: ApiSettings = request.app.state.settings
    token = presented_token(request)
    if token:
        return authenticate(agent.store, token, agent.clock.now())
    return ANONYMOUS if settings.allow_anonymous_viewer else None


def current_principal(request: Request) -> Principal:
    """The request's principal; 401 when no valid token came with it."""
    principal = optional_principal(request)
    if principal is None:
        given = presented_token(request) is not None
        raise HTTPException(401, "invalid or revoked token" if given else
                            "authentication required: send 'Authorization: Bearer TOKEN' "
                            "(tokens come from `kanshi token add`)",
                            headers={"WWW-Authenticate": "Bearer"})
    return principal


def require(role: Role, doing: str | None = None) -> Callable[..., Principal]:
    """A dependency admitting principals of ``role`` or above (403 for the others)."""
    what = doing or DOING[role]

    def dependency(principal: Principal = Depends(current_principal)) -> Principal:  # noqa: B008
        if principal.role < role:
            raise HTTPException(403, f"{principal.role.name} may not {what} "
                                     f"(needs the {role.name} role)")
        return principal

    return dependency


def set_token_cookie(response: Response, token: str, settings: ApiSettings) -> None:
    """Log the web page in: an HttpOnly, SameSite=Strict cookie (no cross-site writes)."""
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict",
                        secure=settings.cookie_secure, path="/")


def clear_token_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/")
