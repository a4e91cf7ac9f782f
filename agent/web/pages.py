"""The routes of the web page (server-rendered, forms POST, no JavaScript needed)."""

from __future__ import annotations

import logging
import secrets
import zoneinfo
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import jinja2
from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.requests import Request

from agent.api.auth import clear_token_cookie, presented_token, set_token_cookie
from agent.api.tokens import Principal, Role, authenticate
from agent.store.runbooks import Run
from agent.web import forms, views
from agent.web.graphs import DEFAULT_PERIOD, PERIODS, format_value
from agent.web.i18n import LANG_COOKIE, LANGS, choose, translator
from agent.web.session import (
    CSRF_FIELD,
    LOGIN_COOKIE,
    Guard,
    LoginNeeded,
    WebError,
    check_origin,
    form_data,
)
from runbooks.schema import Runbook

if TYPE_CHECKING:
    from agent.service import Agent

logger = logging.getLogger(__name__)

PREFIX = "/web"
#: Seconds between reloads of a run page while the run is active.
REFRESH = 2
#: Strict: our own CSS only, no script at all, no framing.
HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' "
                                      "data:; form-action 'self'; frame-ancestors 'none'; "
                                      "base-uri 'none'",
           "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "same-origin", "Cache-Control": "no-store"}

Form = Annotated[dict[str, str], Depends(form_data)]


class WebPages:
    """The pages over one agent."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.guard = Guard()
        self.zone = zoneinfo.ZoneInfo(agent.config.root.agent.timezone)
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("agent.web", "templates"),
            autoescape=True, undefined=jinja2.StrictUndefined,
            trim_blocks=True, lstrip_blocks=True)
        self.env.filters["when"] = self._when
        self.env.filters["value"] = format_value
        self.env.globals.update(prefix=PREFIX, periods=list(PERIODS), langs=LANGS,
                                csrf_field=CSRF_FIELD, refresh=REFRESH,
                                scrub=agent.redactor)

    # -- rendering -------------------------------------------------------------------

    def _when(self, moment: datetime | None) -> str:
        if moment is None:
            return "-"
        return moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M:%S")

    def render(self, request: Request, template: str, principal: Principal | None,
               status: int = 200, **context: Any) -> HTMLResponse:
        lang = choose(request, self.agent.config.root.agent.locale)
        page = self.env.get_template(template).render(
            t=translator(lang), lang=lang, principal=principal,
            operator=principal is not None and principal.role >= Role.operator,
            csrf=self.guard.csrf(request), path=request.url.path,
            agent_name=self.agent.config.root.agent.name, **context)
        response = HTMLResponse(page, status_code=status, headers=HEADERS)
        if request.query_params.get("lang") in LANGS:
            response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="strict",
                                httponly=True, path="/")
        return response

    def error_page(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, LoginNeeded):
            return RedirectResponse(f"{PREFIX}/login", status_code=303)
        assert isinstance(exc, WebError)
        principal = None if exc.status == 401 else self.guard.reader_or_none(request)
        return self.render(request, "error.html", principal, status=exc.status,
                           key=exc.key, detail=exc.detail)

    # -- login -----------------------------------------------------------------------

    def login_form(self, request: Request) -> HTMLResponse:
        return self._login(request, "", 200)

    def _login(self, request: Request, error: str, status: int) -> HTMLResponse:
        nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
        response = self.render(request, "login.html", None, status=status, error=error,
                               login_csrf=self.guard.login_csrf(nonce))
        response.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="strict",
                            path=PREFIX)
        return response

    def login(self, request: Request, form: Form) -> Response:
        check_origin(request)
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not nonce or not secrets.compare_digest(self.guard.login_csrf(nonce),
                                                   form.get(CSRF_FIELD, "")):
            return self._login(request, "login_expired", 403)
        token = form.get("token", "").strip()
        principal = authenticate(self.agent.store, token, self.agent.clock.now())
        if principal is None:
            return self._login(request, "login_failed", 401)
        response = RedirectResponse(f"{PREFIX}/", status_code=303)
        set_token_cookie(response, token, request.app.state.settings)
        response.delete_cookie(LOGIN_COOKIE, path=PREFIX)
        return response

    def logout(self, request: Request, form: Form) -> Response:
        if presented_token(request):
            self.guard.writer(request, form, Role.viewer)
        response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        clear_token_cookie(response)
        return response

    # -- reading -----------------------------------------------------------------------

    def overview(self, request: Request) -> HTMLResponse:
        principal = self.guard.reader(request)
        return self.render(request, "overview.html", principal,
                           view=views.overview(self.agent))

    def target(self, request: Request, check: str, target: str | None = None,
               period: str = DEFAULT_PERIOD) -> HTMLResponse:
        principal = self.guard.reader(request)
        if period not in PERIODS:
            period = DEFAULT_PERIOD
        view = views.target_view(self.agent, check, target, period)
        if view is None:
            raise WebError(404, "not_found", f"no check {check!r}")
        return self.render(request, "target.html", principal, view=view, target=target)

    def incident(self, request: Request, incident_id: int) -> HTMLResponse:
        principal = self.guard.reader(request)
        view = views.incident_view(self.agent, incident_id, self.agent.clock.now())
        if view is None:
            raise WebError(404, "not_found", f"no incident #{incident_id}")
        return self.render(request, "incident.html", principal, view=view)

    def runbooks(self, request: Request) -> HTMLResponse:
        principal = self.guard.reader(request)
        library = self.agent.runbooks.library
        books = [library.get(n) for n in library.names()]
        return self.render(request, "runbooks.html", principal, books=books,
                           runs=self.agent.store.runbooks.recent(30))

    def runbook(self, request: Request, name: str) -> HTMLResponse:
        principal = self.guard.reader(request)
        book = self._book(name)
        return self._runbook_form(request, principal, book, {}, {}, "", 200)

    def _runbook_form(self, request: Request, principal: Principal, book: Runbook,
                      given: dict[str, str], errors: dict[str, str], target: str,
                      status: int) -> HTMLResponse:
        return self.render(request, "runbook.html", principal, status=status, book=book,
                           fields=forms.fields(book, given, errors), errors=errors,
                           target=target)

    def run(self, request: Request, run_id: int) -> HTMLResponse:
        principal = self.guard.reader(request)
        return self.render(request, "run.html", principal,
                           view=views.run_view(self.agent, self._run(run_id)))

    # -- acting ------------------------------------------------------------------------

    def acknowledge(self, request: Request, incident_id: int, form: Form) -> Response:
        who = self.guard.writer(request, form)
        incident = self._incident(incident_id)
        comment = form.get("comment", "").strip()[:2000]
        now = self.agent.clock.now()
        store = self.agent.store
        with store.db.tx():
            store.incidents.add_event(incident.id, now, "acknowledged", actor=who.name,
                                      message=comment)
            store.audit.write(now, who.name, "incident.acknowledge", f"incident/{incident.id}",
                              {"comment": comment, "via": "web"})
        return self._see(f"/incidents/{incident.id}")

    def severity(self, request: Request, incident_id: int, form: Form) -> Response:
        who = self.guard.writer(request, form)
        incident = self._incident(incident_id)
        to, reason = form.get("to", ""), form.get("reason", "").strip()[:2000]
        if to not in {str(s) for s in self.agent.config.root.severities}:
            raise WebError(422, "error", f"unknown severity {to!r}")
        if not reason:
            raise WebError(422, "reason_required")
        if incident.severity == to:
            raise WebError(409, "same_severity")
        now = self.agent.clock.now()
        store = self.agent.store
        with store.db.tx():
            store.incidents.add_event(incident.id, now, "severity_changed", actor=who.name,
                                      message=reason, data={"from": incident.severity, "to": to})
            store.incidents.update(incident.id, severity=to)
            store.audit.write(now, who.name, "incident.severity", f"incident/{incident.id}",
                              {"from": incident.severity, "to": to, "reason": reason,
                               "via": "web"})
        return self._see(f"/incidents/{incident.id}")

    def dry_run(self, request: Request, name: str, form: Form) -> Response:
        """Validate the form and ask the agent for a dry run; its page shows the plan."""
        who = self.guard.writer(request, form)
        book = self._book(name)
        target, params, errors = forms.parse(book, form)
        refused = self._plan_refusal(book)
        if refused:
            errors["_"] = refused
        if errors:
            given = {k: v for k, v in form.items() if k in book.parameters}
            return self._runbook_form(request, who, book, given, errors, target, 422)
        run_id = self._request(book.name, target, params, who, dry_run=True)
        return self._see(f"/runs/{run_id}")

    def confirm(self, request: Request, run_id: int, form: Form) -> Response:
        """Run for real what a finished dry run planned (same runbook, target, params)."""
        who = self.guard.writer(request, form)
        planned = self._run(run_id)
        if not planned.dry_run or planned.state != "planned":
            raise WebError(409, "error", f"run #{run_id} is not a finished dry run")
        book = self._book(planned.runbook)
        refused = self._plan_refusal(book)
        if refused:
            raise WebError(403, "forbidden", refused)
        new_id = self._request(book.name, planned.target, planned.params, who, dry_run=False)
        return self._see(f"/runs/{new_id}")

    def cancel(self, request: Request, run_id: int, form: Form) -> Response:
        who = self.guard.writer(request, form)
        run = self._run(run_id)
        now = self.agent.clock.now()
        store = self.agent.store
        if run.state == "scheduled":
            store.runbooks.set_state(run.id, "cancelled", now, outcome=f"cancelled by {who.name}")
        elif not store.runbooks.request_cancel(run.id):
            raise WebError(409, "error", f"run #{run.id} has already ended ({run.state})")
        store.audit.write(now, who.name, "runbook.cancel", f"runbook-run/{run.id}",
                          {"via": "web"})
        return self._see(f"/runs/{run.id}")

    def approve(self, request: Request, run_id: int, form: Form) -> Response:
        who = self.guard.writer(request, form)
        run = self._run(run_id)
        decision = "rejected" if form.get("decision") == "reject" else "approved"
        waiting = [s for s in self.agent.store.runbooks.steps(run.id)
                   if s.state == "waiting_approval" and s.approval is None]
        if not waiting:
            raise WebError(409, "error", f"run #{run.id} is not waiting for an approval")
        now = self.agent.clock.now()
        store = self.agent.store
        with store.db.tx():
            store.runbooks.decide(waiting[-1].id, decision, who.name)
            store.audit.write(now, who.name, f"runbook.{decision}", f"runbook-run/{run.id}",
                              {"step": waiting[-1].step, "via": "web"})
        return self._see(f"/runs/{run.id}")

    # -- helpers -----------------------------------------------------------------------

    def _request(self, runbook: str, target: str, params: dict[str, Any], who: Principal,
                 *, dry_run: bool) -> int:
        """A manual run due now, for the agent's runbook service to claim (as the CLI's
        scheduled runs are): the page never executes anything in the request."""
        now = self.agent.clock.now()
        store = self.agent.store
        with store.db.tx():
            run_id = store.runbooks.create(runbook=runbook, target=target, params=params,
                                           trigger="manual", incident_id=None,
                                           requested_by=who.name, dry_run=dry_run,
                                           state="scheduled", scheduled_for=now, now=now)
            store.audit.write(now, who.name, "runbook.dry_run" if dry_run else "runbook.run",
                              f"runbook-run/{run_id}",
                              {"runbook": runbook, "target": target, "via": "web"})
        return run_id

    def _plan_refusal(self, book: Runbook) -> str:
        plan = self.agent.config.root.plan
        if book.category == "operation" and not plan.operations:
            return f"the plan ({plan.name}) does not include operations on request"
        if book.category == "recovery" and not plan.automatic_recovery:
            return f"the plan ({plan.name}) has no failure response: notify only"
        return ""

    def _book(self, name: str) -> Runbook:
        try:
            return self.agent.runbooks.library.get(name)
        except LookupError as exc:
            raise WebError(404, "not_found", str(exc)) from None

    def _run(self, run_id: int) -> Run:
        run = self.agent.store.runbooks.get(run_id)
        if run is None:
            raise WebError(404, "not_found", f"no runbook run #{run_id}")
        return run

    def _incident(self, incident_id: int) -> Any:
        incident = self.agent.store.incidents.get(incident_id)
        if incident is None:
            raise WebError(404, "not_found", f"no incident #{incident_id}")
        if not incident.is_open:
            raise WebError(409, "incident_resolved")
        return incident

    @staticmethod
    def _see(path: str) -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}{path}", status_code=303)

    # -- wiring ------------------------------------------------------------------------

    def router(self) -> APIRouter:
        router = APIRouter(prefix=PREFIX, include_in_schema=False)
        gets: dict[str, Callable[..., Any]] = {
            "/login": self.login_form, "/": self.overview, "/checks/{check}": self.target,
            "/incidents/{incident_id}": self.incident, "/runbooks": self.runbooks,
            "/runbooks/{name}": self.runbook, "/runs/{run_id}": self.run}
        posts: dict[str, Callable[..., Any]] = {
            "/login": self.login, "/logout": self.logout,
            "/incidents/{incident_id}/ack": self.acknowledge,
            "/incidents/{incident_id}/severity": self.severity,
            "/runbooks/{name}": self.dry_run, "/runs/{run_id}/confirm": self.confirm,
            "/runs/{run_id}/cancel": self.cancel, "/runs/{run_id}/approve": self.approve}
        for path, endpoint in gets.items():
            router.add_api_route(path, endpoint, methods=["GET"], response_class=HTMLResponse)
        for path, endpoint in posts.items():
            router.add_api_route(path, endpoint, methods=["POST"], response_model=None)
        return router


def install(app: FastAPI, agent: Agent) -> WebPages:
    """Add the pages, their static files and error pages to ``app``."""
    from starlette.staticfiles import StaticFiles

    from agent.web import STATIC

    pages = WebPages(agent)
    app.include_router(pages.router())
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC), name="web-static")
    app.add_exception_handler(WebError, pages.error_page)
    app.add_exception_handler(LoginNeeded, pages.error_page)
    if not any(getattr(r, "path", None) == "/" for r in app.router.routes):
        app.add_api_route("/", _to_pages, include_in_schema=False)
    return pages


def _to_pages() -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/", status_code=307)


__all__ = ["PREFIX", "WebPages", "install"]
