"""/metrics parsed as Prometheus does, against what the test caused."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families

from agent.api.server import ApiServer
from agent.api.settings import ApiSettings
from checks.base import Status
from tests.api.conftest import Api
from tests.support.wait import wait_for


def scrape(api: Api) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    text = api.call("GET", "/metrics").text
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = \
                sample.value
    return found


def test_metrics_follow_the_store(api: Api) -> None:
    iid = api.incident_id()
    wait_for(lambda: any(r.check == "api-port" and r.status == Status.OK
                         for r in api.agent.store.checks.latest()), what="api-port OK")
    wait_for(lambda: api.agent.store.notifications.counts().get("delivered"),
             what="the problem notice delivered")
    now = datetime.now(UTC)
    api.agent.store.incidents.add_event(iid, now, "acknowledged", actor="x")
    m = scrape(api)
    status = {dict(k)["check"]: v for k, v in m["kanshi_check_status"].items()}
    assert status == {"api-port": 0.0, "dead-port": 2.0}
    values = {(dict(k)["check"], dict(k)["metric"]) for k in m["kanshi_check_value"]}
    assert ("api-port", "connect_seconds") in values or any(c == "api-port" for c, _ in values)
    assert m["kanshi_incidents"] == {(("severity", "A"), ("state", "acknowledged")): 1.0}
    assert m["kanshi_notification_deliveries_total"][(("channel", "log"),)] >= 1
    assert m["kanshi_notification_failures_total"][(("channel", "log"),)] == 0
    clocks = m["kanshi_clock_results"]
    per_clock: dict[str, float] = {}
    for labels, value in clocks.items():
        per_clock[dict(labels)["clock"]] = per_clock.get(dict(labels)["clock"], 0) + value
    assert per_clock and set(per_clock.values()) == {1.0}, "one incident, one state per clock"
    assert m["kanshi_outbox_queue_depth"][()] == 0
    assert m["kanshi_check_interval_seconds"][(("check", "dead-port"),)] == 1.0
    assert set(m["kanshi_check_lag_seconds"]) == {(("check", "api-port"),),
                                                 (("check", "dead-port"),)}


def test_runbook_runs_are_counted_by_outcome(api: Api) -> None:
    target = api.tmp_path / "made" / "m"
    target.parent.mkdir()
    run = api.call("POST", "/api/v1/runbooks/touch-file/runs", "operator",
                   json={"target": "web01", "params": {"path": str(target)}}).json()
    wait_for(lambda: api.agent.store.runbooks.get(run["id"]).state == "succeeded",  # type: ignore[union-attr]
             what="the run")
    runs = scrape(api)["kanshi_runbook_runs_total"]
    assert runs == {(("dry_run", "false"), ("outcome", "succeeded"),
                     ("runbook", "touch-file")): 1.0}


def test_metrics_can_require_a_token(api: Api) -> None:
    guarded = ApiServer(api.agent, ApiSettings(port=0, metrics_auth=True))
    guarded.start()
    try:
        import requests

        assert requests.get(guarded.url + "/metrics", timeout=10).status_code == 401
        ok = requests.get(guarded.url + "/metrics", timeout=10,
                          headers={"Authorization": f"Bearer {api.tokens['viewer']}"})
        assert ok.status_code == 200 and "kanshi_check_status" in ok.text
    finally:
        guarded.stop()
