"""The Alertmanager notifier against a real Alertmanager, and its failure modes
against the local HTTP server.

The real one is Debian's ``prometheus-alertmanager`` on 127.0.0.1
(``tests.support.alertmanager``); the failure table uses the programmable
server because a healthy Alertmanager cannot be made to answer 503 or hang.
"""

from __future__ import annotations

import logging
import secrets
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from notifiers.alertmanager import CLOCK_SKEW, AlertmanagerConfig, AlertmanagerNotifier
from notifiers.base import Alert, NotifierError
from tests.support.alertmanager import AlertmanagerServer, running_alertmanager
from tests.support.http_server import HttpServer, LoopbackTLS, Reply
from tests.support.notifiers import Peers, make_alert

PASSWORD = "AM-proxy-pa55word"
HEADER_TOKEN = "AM-bearer-t0ken-secret"
SECRETS = (PASSWORD, HEADER_TOKEN)


def make_notifier(base_url: str, **options: Any) -> AlertmanagerNotifier:
    settings = {"url": base_url, "timeout": "1s"} | options
    return AlertmanagerNotifier("ops-am", AlertmanagerConfig.model_validate(settings))


def now_alert(**changes: Any) -> Alert:
    """An alert detected two minutes ago and confirmed just now, with a fresh dedup key."""
    now = datetime.now(UTC).replace(microsecond=0)  # Alertmanager keeps milliseconds
    fields = {"detected_at": (now - timedelta(minutes=2)).isoformat(), "at": now.isoformat(),
              "dedup_key": f"disk:web01:/#{secrets.token_hex(4)}"}
    return make_alert(**(fields | changes))


def failure(notifier: AlertmanagerNotifier, alert: Alert | None = None) -> NotifierError:
    with pytest.raises(NotifierError) as caught:
        notifier.send(alert or now_alert())
    return caught.value


def everything_said(err: BaseException, notifier: AlertmanagerNotifier,
                    caplog: pytest.LogCaptureFixture) -> str:
    """The error, its traceback, reprs and every log line but the test server's."""
    logs = [r.getMessage() for r in caplog.records if not r.name.startswith("tests.")]
    return "\n".join([str(err), repr(err), "".join(traceback.format_exception(err)),
                      repr(notifier), repr(notifier.config), str(notifier.config), *logs])


@pytest.fixture(scope="module")
def alertmanager() -> Iterator[AlertmanagerServer]:
    server = running_alertmanager()
    yield server
    server.cleanup()


@pytest.fixture
def peers() -> Iterator[Peers]:
    peers = Peers()
    yield peers
    peers.close()


@pytest.fixture
def server() -> Iterator[HttpServer]:
    with HttpServer() as http_server:
        yield http_server


# -- against the real Alertmanager ---------------------------------------------------

@pytest.mark.real
def test_a_problem_shows_up_as_an_active_alert(alertmanager: AlertmanagerServer) -> None:
    alert = now_alert(severity="A")

    make_notifier(alertmanager.url, labels={"team": "ops"}).send(alert)

    [found] = alertmanager.alerts(dedup_key=alert.dedup_key)
    assert found["status"]["state"] == "active"
    assert found["labels"] == {"alertname": "disk", "check": "disk", "target": "web01:/",
                               "host": "kanshi01", "severity": "A",
                               "dedup_key": alert.dedup_key, "team": "ops"}
    assert found["annotations"]["summary"] == "【障害】web01: CRITICAL"
    assert found["annotations"]["description"] == "ディスク使用率 95%"
    assert found["annotations"]["status"] == "CRITICAL"
    assert _parse(found["startsAt"]) == _parse(alert.detected_at)


@pytest.mark.real
def test_the_recovery_resolves_it(alertmanager: AlertmanagerServer) -> None:
    notifier = make_notifier(alertmanager.url)
    problem = now_alert()
    notifier.send(problem)
    assert alertmanager.alerts(dedup_key=problem.dedup_key)

    notifier.send(now_alert(kind="recovery", status="OK", dedup_key=problem.dedup_key,
                            detected_at=problem.detected_at))

    assert alertmanager.alerts(dedup_key=problem.dedup_key) == []


@pytest.mark.real
def test_a_status_change_updates_the_same_alert(alertmanager: AlertmanagerServer) -> None:
    notifier = make_notifier(alertmanager.url)
    problem = now_alert(status="WARNING")
    notifier.send(problem)

    notifier.send(now_alert(kind="change", status="CRITICAL", dedup_key=problem.dedup_key,
                            detected_at=problem.detected_at))

    [found] = alertmanager.alerts(dedup_key=problem.dedup_key)
    assert found["annotations"]["status"] == "CRITICAL"


class _ClockAhead(datetime):
    """Our clock 30 s ahead of Alertmanager's (NTP not yet converged)."""

    @classmethod
    def now(cls, tz: Any = None) -> _ClockAhead:
        moment = datetime.now(tz) + timedelta(seconds=30)
        return cls.fromisoformat(moment.isoformat())


@pytest.mark.real
def test_a_recovery_resolves_even_when_our_clock_is_ahead(
        alertmanager: AlertmanagerServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("notifiers.alertmanager.datetime", _ClockAhead)
    notifier = make_notifier(alertmanager.url)
    problem = now_alert()
    notifier.send(problem)
    ours = _ClockAhead.now(UTC).isoformat()

    notifier.send(now_alert(kind="recovery", status="OK", at=ours,
                            dedup_key=problem.dedup_key, detected_at=problem.detected_at))

    assert alertmanager.alerts(dedup_key=problem.dedup_key) == []


@pytest.mark.real
def test_a_wrong_route_prefix_is_a_permanent_404(alertmanager: AlertmanagerServer) -> None:
    err = failure(make_notifier(alertmanager.url + "/alertmanager"))

    assert err.permanent
    assert "HTTP 404" in str(err)


# -- what is posted -------------------------------------------------------------------

def test_it_posts_one_alert_to_the_v2_api(server: HttpServer) -> None:
    alert = make_alert()

    make_notifier(server.url + "/", generator_url="https://kanshi.example.jp/").send(alert)

    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/api/v2/alerts")
    [posted] = request.json()
    assert posted["startsAt"] == "2024-05-01T01:02:03.000Z"
    assert posted["endsAt"] == "2024-05-08T01:04:03.000Z"  # at + 7 days
    assert posted["generatorURL"] == "https://kanshi.example.jp/"
    assert posted["annotations"] == {"summary": "【障害】web01: CRITICAL",
                                     "description": "ディスク使用率 95%",
                                     "message": "95% used", "status": "CRITICAL",
                                     "kind": "problem", "incident": "7"}


def test_a_route_prefix_in_the_url_is_kept(server: HttpServer) -> None:
    make_notifier(server.url + "/alertmanager").send(make_alert())

    assert server.requests[0].path == "/alertmanager/api/v2/alerts"


@pytest.mark.parametrize("kind", ["recovery", "flapping_stop", "vanished"])
def test_a_resolving_notice_ends_the_alert_at_its_time(server: HttpServer, kind: str) -> None:
    make_notifier(server.url).send(make_alert(kind=kind, status="OK"))

    [posted] = server.requests[0].json()
    assert posted["endsAt"] == "2024-05-01T01:04:03.000Z"


def test_a_resolving_notice_never_ends_in_the_future_or_before_it_started(
        server: HttpServer) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    started = now - timedelta(seconds=10)
    notifier = make_notifier(server.url)
    notifier.send(make_alert(kind="recovery", detected_at=(now - timedelta(hours=1)).isoformat(),
                             at=(now + timedelta(minutes=5)).isoformat()))
    notifier.send(make_alert(kind="recovery", detected_at=started.isoformat(),
                             at=now.isoformat()))

    first, second = (r.json()[0]["endsAt"] for r in server.requests)
    assert _parse(first) <= now - CLOCK_SKEW + timedelta(seconds=1)
    assert _parse(second) == _parse(started.isoformat())


@pytest.mark.parametrize(("options", "changes", "has_ends"), [
    pytest.param({"firing_ttl": None}, {}, False, id="firing_ttl null leaves endsAt out"),
    pytest.param({"firing_ttl": "1h"}, {}, True, id="firing_ttl sets it"),
    pytest.param({}, {"kind": "unrecorded"}, False,
                 id="an unrecorded notice is left to Alertmanager's timeout"),
])
def test_ends_at_of_a_firing_alert(server: HttpServer, options: dict[str, Any],
                                   changes: dict[str, Any], has_ends: bool) -> None:
    make_notifier(server.url, **options).send(make_alert(**changes))

    [posted] = server.requests[0].json()
    assert ("endsAt" in posted) is has_ends


def test_an_empty_target_is_left_out_of_the_labels(server: HttpServer) -> None:
    make_notifier(server.url).send(make_alert(target=""))

    assert "target" not in server.requests[0].json()[0]["labels"]


@pytest.mark.parametrize("kind", ["at_risk", "failure_report", "post_incident_report"])
def test_notices_that_are_no_alert_state_are_not_posted(server: HttpServer, kind: str) -> None:
    make_notifier(server.url).send(make_alert(kind=kind))

    assert server.requests == []


def test_headers_and_basic_auth_reach_a_proxy_in_front(server: HttpServer) -> None:
    make_notifier(server.url, headers={"X-Scope-OrgID": HEADER_TOKEN}, username="kanshi",
                  password=PASSWORD).send(make_alert())

    [request] = server.requests
    assert request.headers["x-scope-orgid"] == HEADER_TOKEN
    assert request.headers["authorization"].startswith("Basic ")


def test_each_send_is_exactly_one_attempt(server: HttpServer) -> None:
    server.respond(Reply(503))

    failure(make_notifier(server.url))

    assert len(server.requests) == 1


# -- the failure-mode table ----------------------------------------------------------

Arrange = Callable[[Peers], str]
BAD_TIMES = '"start time must be before end time"'  # Alertmanager 0.25's 400 body

FAILURES = [
    pytest.param(lambda p: p.nobody(), False, "refused",
                 id="connection refused is transient"),
    pytest.param(lambda p: p.http(Reply(200, delay=5)), False, "no response from",
                 id="a response slower than timeout is transient"),
    pytest.param(lambda p: p.raw(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), False, "not HTTP",
                 id="a malformed HTTP response is transient"),
    pytest.param(lambda p: p.raw(b""), False, "not HTTP",
                 id="a peer hanging up without a word is transient"),
    pytest.param(lambda p: p.http(Reply(200), tls=LoopbackTLS()), False,
                 "certificate verify failed",
                 id="a certificate we do not trust is an error"),
    pytest.param(lambda p: p.http(Reply(301, headers={"Location": "/am/"})), True,
                 "redirects are not followed", id="301 is permanent"),
    pytest.param(lambda p: p.http(Reply(400, body=BAD_TIMES)), True,
                 "start time must be before end time", id="400 is permanent and says why"),
    pytest.param(lambda p: p.http(Reply(401, body=f"bad password {PASSWORD}")), True,
                 "refused the credentials", id="401 from a proxy is permanent and scrubbed"),
    pytest.param(lambda p: p.http(Reply(403)), True, "refused the credentials",
                 id="403 is permanent"),
    pytest.param(lambda p: p.http(Reply(404)), True, "check url", id="404 is permanent"),
    pytest.param(lambda p: p.http(Reply(422, body='{"code":602,"message":"labels"}')), True,
                 "HTTP 422", id="422 validation error is permanent"),
    pytest.param(lambda p: p.http(Reply(429, headers={"Retry-After": "5"})), False,
                 "asks to retry after 5 s", id="429 is transient"),
    pytest.param(lambda p: p.http(Reply(500)), False, "HTTP 500", id="500 is transient"),
    pytest.param(lambda p: p.http(Reply(502)), False, "HTTP 502", id="502 is transient"),
    pytest.param(lambda p: p.http(Reply(503)), False, "HTTP 503", id="503 is transient"),
    pytest.param(lambda p: p.http(Reply(504)), False, "HTTP 504", id="504 is transient"),
]


@pytest.mark.parametrize(("arrange", "permanent", "says"), FAILURES)
def test_each_failure_mode_is_classified_without_leaking_secrets(
        peers: Peers, caplog: pytest.LogCaptureFixture,
        arrange: Arrange, permanent: bool, says: str) -> None:
    caplog.set_level(logging.DEBUG)
    notifier = make_notifier(arrange(peers), headers={"Authorization": f"Bearer {HEADER_TOKEN}"},
                             username="kanshi", password=PASSWORD)

    started = time.monotonic()
    err = failure(notifier)

    assert time.monotonic() - started < 10
    assert err.permanent is permanent
    assert says in str(err)
    said = everything_said(err, notifier, caplog)
    assert [secret for secret in SECRETS if secret in said] == []


# -- configuration -------------------------------------------------------------------

@pytest.mark.parametrize(("options", "says"), [
    pytest.param({"url": "alertmanager:9093"}, "http:// or https://", id="a url without scheme"),
    pytest.param({"labels": {"team-name": "ops"}}, "label name", id="a bad label name"),
    pytest.param({"labels": {"__meta": "x"}}, "label name", id="a reserved label name"),
    pytest.param({"labels": {"severity": "high"}}, "set by kanshi",
                 id="a label that would change the incident's identity"),
    pytest.param({"generator_url": "kanshi.example.jp"}, "http:// or https://",
                 id="a generator url without scheme"),
    pytest.param({"firing_ttl": "soon"}, "duration", id="a firing_ttl that is no duration"),
    pytest.param({"password": PASSWORD}, "together", id="a password without a username"),
])
def test_bad_settings_are_refused_without_echoing_secrets(
        options: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        make_notifier("http://127.0.0.1:9093", **options)
    assert says in str(caught.value)
    assert [secret for secret in SECRETS if secret in str(caught.value)] == []


def test_secrets_do_not_show_in_the_config_or_notifier_repr() -> None:
    notifier = make_notifier("http://127.0.0.1:9093", username="kanshi", password=PASSWORD,
                             headers={"Authorization": f"Bearer {HEADER_TOKEN}"})
    shown = f"{notifier!r} {notifier.config!r} {notifier.config}"
    assert [secret for secret in SECRETS if secret in shown] == []


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
