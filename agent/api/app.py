"""The FastAPI application: ``/api/v1`` routes, ``/metrics``, ``/openapi.json``, hooks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from agent import __version__
from agent.api.settings import ApiSettings

if TYPE_CHECKING:
    from agent.service import Agent

logger = logging.getLogger(__name__)

Hook = Callable[[FastAPI, "Agent"], None]


def create_app(agent: Agent, settings: ApiSettings, extra: Sequence[Hook] = ()) -> FastAPI:
    """The app over a built ``agent``; each ``extra`` hook adds its own routes
    (the web page: ``agent.web.add_web``)."""
    from agent.api.routes import ROUTERS
    from agent.metrics import add_metrics

    app = FastAPI(title="kanshi", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json",
                  description="The kanshi agent's HTTP API. Authenticate with "
                              "`Authorization: Bearer TOKEN` (`kanshi token add`).")
    app.state.agent = agent
    app.state.settings = settings
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(UnicodeError, _not_text)
    app.add_exception_handler(OverflowError, _too_large)
    app.add_exception_handler(Exception, _unexpected)
    for router in ROUTERS:
        app.include_router(router)
    add_metrics(app, agent, settings)
    for hook in extra:
        hook(app, agent)
    return app


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    """422 with one readable line per problem (``query.limit: …``), and the details."""
    assert isinstance(exc, RequestValidationError)
    problems = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
                for e in exc.errors()]
    return JSONResponse({"detail": "; ".join(problems) or "invalid request",
                         "problems": problems}, status_code=422)


async def _not_text(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": "text must be valid Unicode (no lone surrogates)"},
                        status_code=422)


async def _too_large(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"a number or date is out of range ({exc})"},
                        status_code=422)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Never show internals (or secrets in them) to the client; the log has the trace.
    logger.exception("API %s %s failed", request.method, request.url.path)
    return JSONResponse({"detail": "internal error (see the agent's log)"}, status_code=500)
