"""The PagerDuty notifier against a real HTTP server on 127.0.0.1 playing the Events API.

PagerDuty cannot be reached from here (tests talk to 127.0.0.0/8 only), so the
local server answers as the Events API v2 documents ("Response Codes & Retry
Logic"): 202 with ``{"status": "success"}``, 400 ``invalid event`` with
``errors``, 429 when rate limited, 5xx.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from notifiers.base import Notifier, NotifierError
from notifiers.http import HttpStatusError
from notifiers.pagerduty import DEDUP_KEY_CHARS, PagerDutyConfig, PagerDutyNotifier
from tests.support.http_server import HttpServer, LoopbackTLS, Reply
from tests.support.notifiers import Peers, make_alert

ROUTING_KEY = "R0UTINGkeyKANSHI0123456789abcdef"
PATH = "/v2/enqueue"


def accepted(dedup_key: str = "disk:web01:/") -> Reply:
    body = {"status": "success", "message": "Event processed", "dedup_key": dedup_key}
    return Reply(202, body=json.dumps(body), headers={"Content-Type": "application/json"})


def invalid_event(*errors: str) -> Reply:
    body = {"status": "invalid event", "message": "Event object is invalid",
            "errors": list(errors)}
    return Reply(400, body=json.dumps(body), headers={"Content-Type": "application/json"})


def make_notifier(base_url: str, **options: Any) -> PagerDutyNotifier:
    settings = {"routing_key": ROUTING_KEY, "url": base_url + PATH, "timeout": "1s"} | options
    return PagerDutyNotifier("ops-pagerduty", PagerDutyConfig.model_validate(settings))


def failure(notifier: PagerDutyNotifier) -> NotifierError:
    with pytest.raises(NotifierError) as caught:
        notifier.send(make_alert())
    return caught.value


def everything_said(err: BaseException, notifier: Notifier,
                    caplog: pytest.LogCaptureFixture) -> str:
    """The error, its traceback, reprs and every log line but the test server's."""
    logs = [r.getMessage() for r in caplog.records if not r.name.startswith("tests.")]
    return "\n".join([str(err), repr(err), "".join(traceback.format_exception(err)),
                      repr(notifier), repr(notifier.config), str(notifier.config), *logs])


@pytest.fixture
def peers() -> Iterator[Peers]:
    peers = Peers()
    yield peers
    peers.close()


@pytest.fixture
def pagerduty() -> Iterator[HttpServer]:
    with HttpServer(default=accepted()) as server:
        yield server


# -- events ------------------------------------------------------------------------

def test_a_problem_triggers_an_alert_with_the_stable_dedup_key(pagerduty: HttpServer) -> None:
    notifier = make_notifier(pagerduty.url, client_url="https://kanshi.example.jp/")
    notifier.send(make_alert(severity="1"))

    [request] = pagerduty.requests
    assert (request.method, request.path) == ("POST", PATH)
    assert request.json() == {
        "routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": "disk:web01:/",
        "client": "kanshi", "client_url": "https://kanshi.example.jp/",
        "payload": {
            "summary": "【障害】web01: CRITICAL", "source": "web01:/", "severity": "critical",
            "timestamp": "2024-05-01T01:04:03+00:00", "component": "disk", "group": "kanshi01",
            "custom_details": {"details": "ディスク使用率 95%", "status": "CRITICAL",
                               "severity": "1", "incident": 7}}}


@pytest.mark.parametrize(("kind", "action"), [
    pytest.param("problem", "trigger", id="problem triggers"),
    pytest.param("change", "trigger", id="change triggers"),
    pytest.param("flapping_start", "trigger", id="flapping_start triggers"),
    pytest.param("escalation", "trigger", id="escalation triggers"),
    pytest.param("reminder", "trigger", id="reminder triggers"),
    pytest.param("emergency", "trigger", id="emergency triggers"),
    pytest.param("unrecorded", "trigger", id="unrecorded triggers"),
    pytest.param("recovery", "resolve", id="recovery resolves"),
    pytest.param("flapping_stop", "resolve", id="flapping_stop resolves"),
    pytest.param("vanished", "resolve", id="vanished resolves"),
    pytest.param("acknowledged", "acknowledge", id="acknowledged acknowledges"),
])
def test_each_incident_kind_maps_to_its_event_action(
        pagerduty: HttpServer, kind: str, action: str) -> None:
    make_notifier(pagerduty.url).send(make_alert(kind=kind))

    sent = pagerduty.requests[0].json()
    assert (sent["event_action"], sent["dedup_key"]) == (action, "disk:web01:/")


@pytest.mark.parametrize("kind", ["recovery", "acknowledged"])
def test_resolve_and_acknowledge_carry_only_the_key_and_action(
        pagerduty: HttpServer, kind: str) -> None:
    make_notifier(pagerduty.url).send(make_alert(kind=kind))

    assert set(pagerduty.requests[0].json()) == {"routing_key", "event_action", "dedup_key"}


def test_a_problem_and_its_recovery_share_one_dedup_key(pagerduty: HttpServer) -> None:
    notifier = make_notifier(pagerduty.url)
    notifier.send(make_alert(kind="problem"))
    notifier.send(make_alert(kind="recovery", status="OK", notification_id=43))

    keys = {request.json()["dedup_key"] for request in pagerduty.requests}
    assert keys == {"disk:web01:/"}


@pytest.mark.parametrize("kind", ["at_risk", "failure_report", "post_incident_report"])
def test_notices_that_are_no_alert_are_not_sent(pagerduty: HttpServer, kind: str) -> None:
    make_notifier(pagerduty.url).send(make_alert(kind=kind))

    assert pagerduty.requests == []


@pytest.mark.parametrize(("severity", "options", "expected"), [
    pytest.param("1", {}, "critical", id="1 is critical"),
    pytest.param("A", {}, "critical", id="A is critical"),
    pytest.param("B", {}, "warning", id="B is warning (low urgency, business hours)"),
    pytest.param("C", {}, "info", id="C is info"),
    pytest.param("B", {"severities": {"B": "error"}}, "error", id="B can be mapped to error"),
    pytest.param("1", {"severities": {1: "error"}}, "error",
                 id="an integer key from YAML works"),
    pytest.param("A", {"severities": {"B": "error"}}, "critical",
                 id="an override keeps the other defaults"),
])
def test_kanshi_severity_maps_to_pagerduty_severity(
        pagerduty: HttpServer, severity: str, options: dict[str, Any], expected: str) -> None:
    make_notifier(pagerduty.url, **options).send(make_alert(severity=severity))

    sent = pagerduty.requests[0].json()["payload"]
    assert (sent["severity"], sent["custom_details"]["severity"]) == (expected, severity)


def test_a_dedup_key_past_the_limit_is_shortened_the_same_way_each_time(
        pagerduty: HttpServer) -> None:
    key = "http:" + "https://shop.example.jp/" + "a" * 400
    notifier = make_notifier(pagerduty.url)
    notifier.send(make_alert(dedup_key=key))
    notifier.send(make_alert(dedup_key=key, kind="recovery"))
    notifier.send(make_alert(dedup_key=key[:-1] + "b"))

    first, second, other = (r.json()["dedup_key"] for r in pagerduty.requests)
    assert len(first) <= DEDUP_KEY_CHARS
    assert first == second != other


def test_each_send_is_exactly_one_attempt(pagerduty: HttpServer) -> None:
    pagerduty.respond(Reply(503))

    failure(make_notifier(pagerduty.url))

    assert len(pagerduty.requests) == 1


# -- the failure-mode table ----------------------------------------------------------

Arrange = Callable[[Peers], str]
ECHO = f"routing key {ROUTING_KEY} is not known"  # a peer that repeats what it got

FAILURES = [
    pytest.param(lambda p: p.nobody(), False, "refused",
                 id="connection refused is transient"),
    pytest.param(lambda p: p.http(Reply(202, delay=5)), False, "no response from",
                 id="a response slower than timeout is transient"),
    pytest.param(lambda p: p.raw(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), False, "not HTTP",
                 id="a malformed HTTP response is transient"),
    pytest.param(lambda p: p.raw(b""), False, "not HTTP",
                 id="a peer hanging up without a word is transient"),
    pytest.param(lambda p: p.http(accepted(), tls=LoopbackTLS()), False,
                 "certificate verify failed",
                 id="a certificate we do not trust is an error"),
    pytest.param(lambda p: p.http(Reply(202, body="<html>accepted?</html>")), False,
                 "without PagerDuty's \"success\"",
                 id="202 without a JSON success is transient (events are idempotent)"),
    pytest.param(lambda p: p.http(Reply(200, body=json.dumps({"status": "error"}))), False,
                 "without PagerDuty's \"success\"", id="200 with another status is transient"),
    pytest.param(lambda p: p.http(Reply(301, headers={"Location": "https://x.example.jp/"})),
                 True, "redirects are not followed", id="301 is permanent"),
    pytest.param(lambda p: p.http(invalid_event("'payload.summary' is missing or blank")),
                 True, "Event object is invalid: 'payload.summary' is missing or blank",
                 id="400 invalid event is permanent and says why"),
    pytest.param(lambda p: p.http(Reply(400, body=ECHO)), True,
                 "refused the event (HTTP 400",
                 id="400 without JSON is permanent even when it echoes the key"),
    pytest.param(lambda p: p.http(Reply(401)), True, "HTTP 401", id="401 is permanent"),
    pytest.param(lambda p: p.http(Reply(403)), True, "HTTP 403", id="403 is permanent"),
    pytest.param(lambda p: p.http(Reply(404)), True, "check url", id="404 is permanent"),
    pytest.param(lambda p: p.http(Reply(413)), True, "too large", id="413 is permanent"),
    pytest.param(lambda p: p.http(Reply(429, headers={"Retry-After": "60"})), False,
                 "asks to retry after 60 s", id="429 rate limit is transient"),
    pytest.param(lambda p: p.http(Reply(429)), False, "HTTP 429",
                 id="429 without Retry-After is transient"),
    pytest.param(lambda p: p.http(Reply(500, body=ECHO)), False, "HTTP 500",
                 id="500 is transient"),
    pytest.param(lambda p: p.http(Reply(502)), False, "HTTP 502", id="502 is transient"),
    pytest.param(lambda p: p.http(Reply(503)), False, "HTTP 503", id="503 is transient"),
    pytest.param(lambda p: p.http(Reply(504)), False, "HTTP 504", id="504 is transient"),
]


@pytest.mark.parametrize(("arrange", "permanent", "says"), FAILURES)
def test_each_failure_mode_is_classified_without_leaking_the_routing_key(
        peers: Peers, caplog: pytest.LogCaptureFixture,
        arrange: Arrange, permanent: bool, says: str) -> None:
    caplog.set_level(logging.DEBUG)
    notifier = make_notifier(arrange(peers))

    started = time.monotonic()
    err = failure(notifier)

    assert time.monotonic() - started < 10
    assert err.permanent is permanent
    assert says in str(err)
    assert ROUTING_KEY not in everything_said(err, notifier, caplog)


def test_retry_after_of_a_rate_limit_is_given_to_the_outbox(pagerduty: HttpServer) -> None:
    pagerduty.respond(Reply(429, headers={"Retry-After": "60"}))

    err = failure(make_notifier(pagerduty.url))

    assert isinstance(err, HttpStatusError)
    assert (err.status, err.retry_after, err.permanent) == (429, 60.0, False)


# -- configuration -------------------------------------------------------------------

@pytest.mark.parametrize(("options", "says"), [
    pytest.param({"routing_key": ""}, "integration key", id="an empty routing key"),
    pytest.param({"routing_key": f"{ROUTING_KEY} x"}, "integration key",
                 id="a routing key with a space"),
    pytest.param({"url": "events.pagerduty.com/v2/enqueue"}, "http:// or https://",
                 id="a url without a scheme"),
    pytest.param({"severities": {"B": "major"}}, "critical", id="an unknown severity"),
    pytest.param({"severities": {"D": "info"}}, "severities.D", id="an unknown kanshi severity"),
    pytest.param({"service_key": "x"}, "service_key", id="an unknown key"),
])
def test_bad_settings_are_refused_without_echoing_the_key(
        options: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        make_notifier("https://events.pagerduty.com", **options)
    assert says in str(caught.value)
    assert ROUTING_KEY not in str(caught.value)


def test_the_default_endpoint_is_pagerdutys() -> None:
    config = PagerDutyConfig.model_validate({"routing_key": ROUTING_KEY})
    assert config.url == "https://events.pagerduty.com/v2/enqueue"


def test_the_routing_key_does_not_show_in_the_config_or_notifier_repr() -> None:
    notifier = make_notifier("https://events.pagerduty.com")
    assert ROUTING_KEY not in f"{notifier!r} {notifier.config!r} {notifier.config}"


def test_a_persons_acknowledgement_reaches_pagerduty_once_with_the_same_dedup_key(
        frozen_agent: Any, scripted: Any) -> None:
    """The whole path: a problem triggers, `kanshi incidents ack` acknowledges, the
    agent's policy pass forwards it as an "acknowledge" event on the alert's key."""
    from agent.cli import main
    from checks.base import Status
    from tests.support.frozen import minute
    from tests.support.scripted import Script

    scripted["web"] = Script({"a": Status.CRITICAL})
    with HttpServer(default=accepted()) as server:
        agent = frozen_agent(f"""
            agent: {{name: web01, state_dir: state}}
            notifiers:
              - {{name: pd, type: pagerduty, routing_key: {ROUTING_KEY},
                  url: "{server.url}{PATH}"}}
            checks:
              - {{name: web, type: scripted, script: web, max_attempts: 1, notify: [pd]}}
        """)
        minute(agent, "web")
        config = str(agent.config.path)
        assert main(["incidents", "ack", "1", "--by", "tanaka", "-c", config]) == 0
        minute(agent, "web")
        minute(agent, "web")

        sent = [(r.json()["event_action"], r.json()["dedup_key"]) for r in server.requests]
    (trigger, key), *rest = sent
    assert trigger == "trigger"
    assert rest == [("acknowledge", key)], "once, on the alert the trigger opened"
    kinds = [e.kind for e in agent.store.incidents.events(1)]
    assert kinds.count("ack_forwarded") == 1
