"""Reports as ``kanshi report`` makes them: an incident's failure / post-incident report
and the monthly report, in Markdown or HTML, Japanese or English."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Response

from agent.api.deps import AgentDep, IdPath, Viewer
from agent.api.routes.incidents import get_incident
from agent.reports.incident import incident_report
from agent.reports.monthly import monthly_report

router = APIRouter(prefix="/api/v1/reports", tags=["reports"])

MEDIA = {"md": "text/markdown; charset=utf-8", "html": "text/html; charset=utf-8"}
TEXT: dict[int | str, dict[str, Any]] = {200: {"content": {"text/markdown": {}, "text/html": {}}}}


@router.get("/incidents/{incident_id}", response_class=Response, responses=TEXT)
def incident(incident_id: IdPath, agent: AgentDep, principal: Viewer,
             kind: Literal["failure", "post_incident"] | None = None,
             lang: Literal["ja", "en"] | None = None,
             format: Literal["md", "html"] = "md") -> Response:
    """The incident's report (post-incident once it recovered, unless ``kind``)."""
    found = get_incident(agent, incident_id)
    made = incident_report(agent.config, agent.store, found, agent.clock.now(),
                           lang or agent.config.root.agent.locale, kind, format)
    return Response(agent.redactor(made.text), media_type=MEDIA[format],
                    headers={"X-Report-Kind": made.kind})


@router.get("/monthly/{month}", response_class=Response, responses=TEXT)
def monthly(month: Annotated[str, Path(pattern=r"^\d{4}-\d{2}$", examples=["2026-11"])],
            agent: AgentDep, principal: Viewer, lang: Literal["ja", "en"] | None = None,
            format: Literal["md", "html"] = "md") -> Response:
    """The monthly report (availability, incidents, clocks, maintenance, own downtime)."""
    try:
        first = date.fromisoformat(f"{month}-01")
    except ValueError as exc:
        raise HTTPException(422, f"expected a month such as 2026-11, got {month!r}") from exc
    if not 2000 <= first.year <= 2999:
        raise HTTPException(422, "month: expected a year between 2000 and 2999")
    text = monthly_report(agent.config, agent.store, first, agent.clock.now(),
                          lang or agent.config.root.agent.locale, format)
    return Response(agent.redactor(text), media_type=MEDIA[format])
