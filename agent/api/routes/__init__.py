"""The ``/api/v1`` routers, in the order they appear in the OpenAPI document."""

from __future__ import annotations

from agent.api.routes.checks import router as checks_router
from agent.api.routes.incidents import router as incidents_router
from agent.api.routes.maintenance import router as maintenance_router
from agent.api.routes.reports import router as reports_router
from agent.api.routes.runbooks import router as runbooks_router
from agent.api.routes.status import router as status_router
from agent.api.routes.tokens import router as tokens_router

ROUTERS = (status_router, checks_router, incidents_router, runbooks_router,
           maintenance_router, reports_router, tokens_router)
