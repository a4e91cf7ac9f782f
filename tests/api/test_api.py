"""The HTTP API over real HTTP in front of a real agent: roles, audit, incidents,
runbooks, maintenance, reports, secrets."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import requests

from checks.base import Status
from tests.api.conftest import SECRET, Api
from tests.support.wait import wait_for

WRITES = [
    pytest.param("POST", "/api/v1/incidents/{iid}/ack", {"comment": "looking"}, id="ack"),
    pytest.param("POST", "/api/v1/incidents/{iid}/severity", {"to": "1", "reason": "core down"},
                 id="severity"),
    pytest.param("POST", "/api/v1/incidents/{iid}/notes", {"text": "disk swapped"}, id="note"),
    pytest.param("POST", "/api/v1/maintenance",
                 {"targets": ["dead-port"], "duration": "1h", "reason": "patching"},
                 id="maintenance"),
    pytest.param("POST", "/api/v1/runbooks/touch-file/runs",
                 {"target": "web01", "params": {"path": "{made}/x"}, "dry_run": True},
                 id="runbook-dry-run"),
]


def _fill(api: Api, path: str, body: dict[str, object]) -> tuple[str, dict[str, object]]:
    made = str(api.tmp_path / "made")
    text = json.dumps(body).replace("{made}", made)
    return path.replace("{iid}", str(api.incident_id())), json.loads(text)


def test_nothing_but_health_schema_and_metrics_answers_without_a_token(api: Api) -> None:
    document = api.call("GET", "/openapi.json").json()
    for path, operations in document["paths"].items():
        concrete = path.replace("{incident_id}", "1").replace("{run_id}", "1") \
            .replace("{window_id}", "1").replace("{name}", "x").replace("{month}", "2026-01")
        for method in operations:
            response = api.call(method.upper(), concrete, json={})
            if path in ("/api/v1/health", "/metrics"):
                assert response.status_code == 200, path
            else:
                assert response.status_code == 401, f"{method} {path}: {response.status_code}"
                assert response.headers["www-authenticate"] == "Bearer"


def test_a_wrong_or_revoked_token_is_refused(api: Api) -> None:
    response = requests.get(api.url + "/api/v1/status", timeout=10,
                            headers={"Authorization": "Bearer kanshi_not-a-token"})
    assert response.status_code == 401
    assert response.json()["detail"] == "invalid or revoked token"
    assert api.call("DELETE", "/api/v1/tokens/viewer-bot", "admin").status_code == 204
    assert api.call("GET", "/api/v1/status", "viewer").status_code == 401


def test_the_cookie_of_the_web_page_authenticates_too(api: Api) -> None:
    response = requests.get(api.url + "/api/v1/whoami", timeout=10,
                            cookies={"kanshi_token": api.tokens["operator"]})
    assert response.json() == {"name": "operator-bot", "role": "operator"}


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_a_viewer_may_not_write(api: Api, method: str, path: str,
                                body: dict[str, object]) -> None:
    path, body = _fill(api, path, body)
    response = api.call(method, path, "viewer", json=body)
    assert response.status_code == 403
    assert response.json()["detail"].startswith("viewer may not ")
    assert api.agent.store.audit.recent() == []


def test_the_403_names_what_the_viewer_may_not_do(api: Api) -> None:
    response = api.call("POST", "/api/v1/runbooks/touch-file/runs", "viewer",
                        json={"target": "web01", "params": {}})
    assert response.json()["detail"] == "viewer may not run runbooks (needs the operator role)"


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_every_write_of_an_operator_is_in_the_audit_log_with_the_token_name(
        api: Api, method: str, path: str, body: dict[str, object]) -> None:
    path, body = _fill(api, path, body)
    response = api.call(method, path, "operator", json=body)
    assert response.status_code in (200, 201, 202), response.text
    (entry,) = api.agent.store.audit.recent()
    assert entry.actor == "operator-bot"
    assert entry.detail["via"] == "api"


def test_an_operator_may_not_manage_tokens(api: Api) -> None:
    assert api.call("GET", "/api/v1/tokens", "operator").status_code == 403
    response = api.call("POST", "/api/v1/tokens", "operator",
                        json={"name": "mine", "role": "admin"})
    assert response.status_code == 403
    assert response.json()["detail"] == "operator may not manage tokens (needs the admin role)"
    assert api.call("DELETE", "/api/v1/tokens/admin-bot", "operator").status_code == 403


def test_an_admin_makes_a_token_that_works_once_shown_and_is_audited(api: Api) -> None:
    made = api.call("POST", "/api/v1/tokens", "admin", json={"name": "grafana",
                                                             "role": "viewer"})
    assert made.status_code == 201
    token = made.json()["token"]
    whoami = requests.get(api.url + "/api/v1/whoami", timeout=10,
                          headers={"Authorization": f"Bearer {token}"}).json()
    assert whoami == {"name": "grafana", "role": "viewer"}
    listed = api.call("GET", "/api/v1/tokens", "admin").text
    assert token not in listed and "grafana" in listed
    assert api.call("POST", "/api/v1/tokens", "admin",
                    json={"name": "grafana", "role": "viewer"}).status_code == 409
    (entry,) = api.agent.store.audit.recent()
    assert (entry.actor, entry.action, entry.subject) == ("admin-bot", "token.add",
                                                          "token/grafana")


def test_acknowledge_severity_and_note_land_on_the_timeline(api: Api) -> None:
    iid = api.incident_id()
    assert api.call("POST", f"/api/v1/incidents/{iid}/ack", "operator",
                    json={"comment": "on it"}).json()["acknowledged_by"] == "operator-bot"
    changed = api.call("POST", f"/api/v1/incidents/{iid}/severity", "operator",
                       json={"to": "1", "reason": "the shop is down"})
    assert changed.json()["severity"] == "1"
    api.call("POST", f"/api/v1/incidents/{iid}/notes", "operator", json={"text": "rebooted"})
    shown = api.call("GET", f"/api/v1/incidents/{iid}", "viewer").json()
    mine = [(e["kind"], e["actor"], e["message"]) for e in shown["timeline"]
            if e["actor"] == "operator-bot"]
    assert mine == [("acknowledged", "operator-bot", "on it"),
                    ("severity_changed", "operator-bot", "the shop is down"),
                    ("note", "operator-bot", "rebooted")]
    assert shown["clocks"] and all(c["state"] for c in shown["clocks"])
    assert shown["notices"], "the problem notice is listed"


def test_a_resolved_incident_keeps_its_severity(api: Api) -> None:
    now = datetime.now(UTC)
    store = api.agent.store
    iid = store.incidents.create("old", "", Status.CRITICAL, "B", "gone", now)
    store.incidents.resolve(iid, now)
    response = api.call("POST", f"/api/v1/incidents/{iid}/severity", "operator",
                        json={"to": "A", "reason": "late"})
    assert response.status_code == 409
    assert response.json()["detail"] == f"incident #{iid} is resolved: its record is final"
    assert api.call("POST", f"/api/v1/incidents/{iid}/ack", "operator",
                    json={}).status_code == 409


@pytest.mark.parametrize(("body", "says"), [
    pytest.param({"to": "Z", "reason": "x"}, "body.to", id="unknown-severity"),
    pytest.param({"to": "A"}, "body.reason: Field required", id="no-reason"),
    pytest.param({"to": "A", "reason": "x", "extra": 1}, "body.extra", id="unknown-field"),
])
def test_bad_input_is_a_422_that_says_what_is_wrong(api: Api, body: dict[str, object],
                                                    says: str) -> None:
    response = api.call("POST", f"/api/v1/incidents/{api.incident_id()}/severity", "operator",
                        json=body)
    assert response.status_code == 422
    assert says in response.json()["detail"]


def test_incidents_filter_and_page(api: Api) -> None:
    now = datetime.now(UTC)
    for n in range(5):
        api.agent.store.incidents.create("batch", f"t{n}", Status.WARNING, "C", "m", now)
    first = api.call("GET", "/api/v1/incidents?check=batch&limit=3", "viewer").json()
    assert [i["target"] for i in first["items"]] == ["t4", "t3", "t2"]
    rest = api.call("GET", f"/api/v1/incidents?check=batch&limit=3&before_id="
                           f"{first['next_before_id']}", "viewer").json()
    assert [i["target"] for i in rest["items"]] == ["t1", "t0"]
    assert rest["next_before_id"] is None
    only_a = api.call("GET", "/api/v1/incidents?severity=A", "viewer").json()["items"]
    assert {i["check"] for i in only_a} == {"dead-port"}


def test_a_runbook_runs_through_the_agent_and_its_log_can_be_followed(api: Api) -> None:
    target = api.tmp_path / "made" / "ran"
    target.parent.mkdir()
    dry = api.call("POST", "/api/v1/runbooks/touch-file/runs", "operator",
                   json={"target": "web01", "params": {"path": str(target)}, "dry_run": True})
    assert dry.status_code == 202, dry.text
    dry_log = _follow(api, dry.json()["id"])
    assert dry_log["run"]["state"] == "planned" and not target.exists()
    run = api.call("POST", "/api/v1/runbooks/touch-file/runs", "operator",
                   json={"target": "web01", "params": {"path": str(target)}}).json()
    log = _follow(api, run["id"])
    assert log["run"]["state"] == "succeeded", log
    assert target.exists()
    assert [s["step"] for s in log["steps"]] == ["touch", "verify"]
    events = requests.get(f"{api.url}/api/v1/runbook-runs/{run['id']}/stream", timeout=30,
                          headers={"Authorization": f"Bearer {api.tokens['viewer']}"})
    assert events.headers["content-type"].startswith("text/event-stream")
    assert events.text.count("event: step") == 2 and "event: end" in events.text
    actions = [e.action for e in api.agent.store.audit.recent() if e.actor == "operator-bot"]
    assert actions == ["runbook.run", "runbook.dry_run"]


def test_a_run_at_a_later_time_waits_and_can_be_cancelled(api: Api) -> None:
    later = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    run = api.call("POST", "/api/v1/runbooks/touch-file/runs", "operator",
                   json={"target": "web01", "params": {"path": str(api.tmp_path / "made/a")},
                         "at": later}).json()
    assert (run["state"], run["trigger"]) == ("scheduled", "scheduled")
    cancelled = api.call("POST", f"/api/v1/runbook-runs/{run['id']}/cancel", "operator")
    assert cancelled.json()["state"] == "cancelled"
    again = api.call("POST", f"/api/v1/runbook-runs/{run['id']}/cancel", "operator")
    assert again.status_code == 409


def test_runbook_parameters_are_checked_before_anything_runs(api: Api) -> None:
    response = api.call("POST", "/api/v1/runbooks/touch-file/runs", "operator",
                        json={"target": "web01", "params": {"pth": "/x"}})
    assert response.status_code == 422
    assert "did you mean 'path'" in response.json()["detail"]
    assert api.agent.store.runbooks.recent() == []


def test_a_maintenance_window_cannot_cover_the_past_and_can_be_ended(api: Api) -> None:
    past = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    made = api.call("POST", "/api/v1/maintenance", "operator",
                    json={"targets": ["dead-port"], "start": past, "duration": "1h",
                          "reason": "patch"}).json()
    assert made["clipped"] is True
    assert datetime.fromisoformat(made["start"]) > datetime.fromisoformat(past)
    listed = api.call("GET", "/api/v1/maintenance", "viewer").json()
    assert [(w["id"], w["state"]) for w in listed] == [(made["id"], "active")]
    assert api.call("POST", f"/api/v1/maintenance/{made['id']}/end",
                    "operator").status_code == 204
    assert api.call("POST", f"/api/v1/maintenance/{made['id']}/end",
                    "operator").status_code == 404


def test_reports_come_in_markdown_and_html(api: Api) -> None:
    iid = api.incident_id()
    md = api.call("GET", f"/api/v1/reports/incidents/{iid}?lang=en", "viewer")
    assert md.headers["content-type"].startswith("text/markdown")
    assert md.headers["x-report-kind"] == "failure"
    html = api.call("GET", f"/api/v1/reports/incidents/{iid}?format=html", "viewer")
    assert html.headers["content-type"].startswith("text/html") and "<h1" in html.text
    month = datetime.now(UTC).strftime("%Y-%m")
    assert api.call("GET", f"/api/v1/reports/monthly/{month}", "viewer").status_code == 200
    assert api.call("GET", "/api/v1/reports/monthly/2026-13", "viewer").status_code == 422


def test_secrets_never_reach_a_response(api: Api) -> None:
    iid = api.incident_id()
    api.agent.store.incidents.add_event(iid, datetime.now(UTC), "note",
                                        message=f"login with {SECRET} failed")
    seen = [api.call("GET", path, "admin").text for path in (
        f"/api/v1/incidents/{iid}", f"/api/v1/reports/incidents/{iid}", "/openapi.json",
        "/api/v1/status", "/api/v1/checks", "/api/v1/results", "/metrics")]
    assert all(SECRET not in text for text in seen)
    assert "login with" in seen[0]


def test_status_and_results(api: Api) -> None:
    wait_for(lambda: any(r.check == "api-port" and r.status == Status.OK
                         for r in api.agent.store.checks.latest()), what="api-port OK")
    status = api.call("GET", "/api/v1/status", "viewer").json()
    assert status["agent"] == "web01" and status["run"]["stopped_at"] is None
    assert status["open_incidents_by_severity"] == {"A": 1}
    worst = api.call("GET", "/api/v1/results?limit=1", "viewer").json()
    assert worst["total"] == 2 and worst["items"][0]["check"] == "dead-port"
    target = worst["items"][0]["target"]
    since = datetime(2000, 1, 1, tzinfo=UTC)
    wait_for(lambda: len(api.agent.store.checks.history("dead-port", target, since)) >= 2,
             what="two results of dead-port")
    history = api.call("GET", "/api/v1/checks/dead-port/history", "viewer",
                       params={"target": target, "limit": 1}).json()
    assert len(history["items"]) == 1 and history["next_before"] is not None
    assert api.call("GET", "/api/v1/checks/nope", "viewer").status_code == 404


def _follow(api: Api, run_id: int) -> dict[str, object]:
    """Poll the log as a client would (``after``), until the run is done."""
    after, steps = 0, {}
    log: dict[str, object] = {}

    def more() -> bool:
        nonlocal after, log
        log = api.call("GET", f"/api/v1/runbook-runs/{run_id}/log?after={after}",
                       "viewer").json()
        for step in log["steps"]:  # type: ignore[attr-defined]
            steps[step["id"]] = step
        after = log["next_after"]  # type: ignore[assignment]
        return bool(log["done"])

    wait_for(more, timeout=60, every=0.2, what=f"run #{run_id} to end")
    return {**log, "steps": [steps[k] for k in sorted(steps)]}
