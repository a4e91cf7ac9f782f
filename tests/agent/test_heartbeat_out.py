"""Heartbeat out: pings reach a real HTTP server on loopback while the agent is healthy,
stop or flip to the fail endpoint when it is not, and never leak the URL's token."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.heartbeat_out import (
    Health,
    HeartbeatOutSettings,
    HeartbeatSender,
    UnhealthyWhen,
    agent_health,
)
from tests.support.agents import StartAgent
from tests.support.frozen import MakeAgent
from tests.support.http_server import (
    HttpServer,
    RawTcpServer,
    Reply,
    SilentListener,
    free_port,
)
from tests.support.mounts import Mounter
from tests.support.wait import wait_for

TOKEN = "5f0c1a9e-token-9d2b-4c8e"
HEALTHY = Health()
DEAD = Health(("a notification worker is not running: notices are not being sent",))


@pytest.fixture(autouse=True)
def _info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)


@pytest.fixture
def server() -> Iterator[HttpServer]:
    with HttpServer() as running:
        yield running


def settings(base: str, **extra: object) -> HeartbeatOutSettings:
    return HeartbeatOutSettings.model_validate(
        {"url": f"{base}/ping/{TOKEN}", "interval": "1m", "timeout": "2s", **extra})


def sender(base: str, health: Callable[[], Health] = lambda: HEALTHY,
           **extra: object) -> HeartbeatSender:
    return HeartbeatSender(settings(base, **extra), health)


def assert_no_secret(caplog: pytest.LogCaptureFixture, base: str) -> None:
    """Every log line but the test servers' own (they log the request line they got)."""
    ours = [r for r in caplog.records if not r.name.startswith("tests.")]
    text = "".join(r.getMessage() + (r.exc_text or "") for r in ours)
    assert TOKEN not in text
    assert f"{base}/ping" not in text


# -- pings at the interval the scheduler drives ----------------------------------------


def test_each_beat_of_a_healthy_agent_is_one_ping(server: HttpServer) -> None:
    beats = sender(server.url)
    for _ in range(3):
        beats.beat()
    assert [(r.method, r.path) for r in server.requests] == [("GET", f"/ping/{TOKEN}")] * 3
    assert beats.sent == 3 and beats.failed == 0


def test_post_pings_carry_no_body_while_healthy(server: HttpServer) -> None:
    sender(server.url, method="POST").beat()
    (request,) = server.requests
    assert request.method == "POST" and request.body == b""


def test_pings_stop_while_unhealthy_and_resume_after(
        server: HttpServer, caplog: pytest.LogCaptureFixture) -> None:
    state = [HEALTHY]
    beats = sender(server.url, lambda: state[0])
    beats.beat()
    state[0] = DEAD
    beats.beat()
    beats.beat()
    assert len(server.requests) == 1, "silence is what makes the watcher alert"
    state[0] = HEALTHY
    beats.beat()
    assert len(server.requests) == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "notification worker" in warnings[0].getMessage()
    assert any("healthy again" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("extra", "fail_path"), [
    pytest.param({"fail_suffix": "/fail"}, f"/ping/{TOKEN}/fail", id="healthchecks-suffix"),
    pytest.param({"fail_url": "{base}/cronitor/{token}?state=fail"},
                 f"/cronitor/{TOKEN}?state=fail", id="separate-fail-url"),
])
def test_an_unhealthy_agent_pings_the_fail_endpoint_with_the_reason(
        server: HttpServer, extra: dict[str, str], fail_path: str) -> None:
    extra = {k: v.format(base=server.url, token=TOKEN) for k, v in extra.items()}
    beats = sender(server.url, lambda: DEAD, **extra)
    beats.beat()
    (request,) = server.requests
    assert (request.method, request.path) == ("POST", fail_path)
    assert b"notification worker is not running" in request.body
    assert request.headers["content-type"].startswith("text/plain")


# -- a real agent's health ---------------------------------------------------------


def test_a_real_agent_whose_senders_stopped_stops_the_pings(
        tmp_path: Path, server: HttpServer, start_agent: StartAgent) -> None:
    agent = start_agent(f"""
        agent: {{name: testhost, state_dir: {tmp_path / "state"}}}
        api: {{enabled: false}}
        notifiers:
          - {{name: log, type: file, path: {tmp_path / "alerts.jsonl"}}}
    """)
    beats = sender(server.url, lambda: agent_health(agent), fail_suffix="/fail")
    beats.beat()
    assert agent_health(agent).healthy
    agent.dispatcher.stop()  # the workers end: no notice would go out any more
    health = agent_health(agent)
    assert not health.healthy and "notification worker" in str(health)
    beats.beat()
    assert [r.path for r in server.requests] == [f"/ping/{TOKEN}", f"/ping/{TOKEN}/fail"]


def test_a_check_far_behind_its_interval_makes_the_agent_unhealthy(
        tmp_path: Path, frozen_agent: MakeAgent) -> None:
    agent = frozen_agent(f"""
        agent: {{name: testhost, state_dir: {tmp_path / "state"}}}
        checks:
          - {{name: disk, type: disk, include: ["{tmp_path}"], interval: 1h}}
    """)
    agent.run_check("disk")
    agent.clock.advance(3 * 3600)  # type: ignore[attr-defined]
    assert agent_health(agent).healthy, "three intervals late is the limit, not beyond it"
    agent.clock.advance(3600)  # type: ignore[attr-defined]
    health = agent_health(agent)
    assert not health.healthy and "check disk has not run" in str(health)
    assert agent_health(agent, UnhealthyWhen(check_lag=None)).healthy
    assert agent_health(agent, UnhealthyWhen(check_lag=5)).healthy


def test_a_check_not_yet_run_since_start_is_given_its_first_interval(
        tmp_path: Path, frozen_agent: MakeAgent) -> None:
    agent = frozen_agent(f"""
        agent: {{name: testhost, state_dir: {tmp_path / "state"}}}
        checks:
          - {{name: disk, type: disk, include: ["{tmp_path}"], interval: 10m}}
    """)
    agent.clock.advance(30 * 60)  # type: ignore[attr-defined]
    assert agent_health(agent).healthy
    agent.clock.advance(15 * 60)  # type: ignore[attr-defined]
    assert "check disk has not run" in str(agent_health(agent))


@pytest.mark.real
def test_a_full_disk_under_the_store_makes_the_agent_unhealthy(
        tmp_path: Path, mounter: Mounter, start_agent: StartAgent) -> None:
    state = mounter.tmpfs("state", "size=64M")
    agent = start_agent(f"""
        agent: {{name: testhost, state_dir: {state}}}
        api: {{enabled: false}}
        scheduler: {{spread: 0.1s}}
        checks:
          - {{name: disk, type: disk, include: ["{state}"], interval: 0.5s,
             retry_interval: 0.2s, max_attempts: 2}}
        notifiers:
          - {{name: log, type: file, path: {tmp_path / "alerts.jsonl"}}}
    """)
    wait_for(lambda: agent.store.checks.latest(), what="a first result")
    assert agent_health(agent).healthy
    # Fill it until the kernel refuses.
    with (state / "blob").open("wb") as blob, pytest.raises(OSError, match="No space left"):
        while True:
            blob.write(b"\0" * 2**20)
            blob.flush()
    wait_for(lambda: not (state / "kanshi.reserve").exists(), what="the reserve released")
    health = agent_health(agent)
    assert f"the disk holding {state} is full" in str(health)
    assert agent_health(agent, UnhealthyWhen(store_disk_full=False, check_lag=None)).healthy


# -- delivery failures: never raised, logged once, without the URL ---------------------


def refused() -> Iterator[str]:
    yield f"http://127.0.0.1:{free_port()}"


def status_500() -> Iterator[str]:
    with HttpServer(default=Reply(500)) as down:
        yield down.url


def slow() -> Iterator[str]:
    with HttpServer(default=Reply(200, delay=5)) as hung:
        yield hung.url


def silent() -> Iterator[str]:
    with SilentListener() as listener:
        yield f"http://127.0.0.1:{listener.port}"


def garbage() -> Iterator[str]:
    with RawTcpServer(b"this is not HTTP\r\n\r\n") as raw:
        yield raw.url


@pytest.mark.parametrize(("peer", "error"), [
    pytest.param(refused, "could not connect", id="server-down"),
    pytest.param(status_500, "HTTP 500", id="http-500"),
    pytest.param(slow, "no answer within 0.3 s", id="answer-too-slow"),
    pytest.param(silent, "no answer within 0.3 s", id="connect-timeout"),
    pytest.param(garbage, "", id="malformed-response"),
])
def test_a_failed_ping_is_logged_once_without_the_url(
        peer: Callable[[], Iterator[str]], error: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for base in peer():
        beats = sender(base, timeout="0.3s", fail_suffix="/fail")
        beats.beat()
        beats.beat()
        assert beats.failed == 2 and beats.sent == 0
        assert beats.last_error is not None and error in beats.last_error
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, "once per change of state, not once per beat"
        assert_no_secret(caplog, base)


def test_failures_are_logged_again_only_after_pings_got_through(
        server: HttpServer, caplog: pytest.LogCaptureFixture) -> None:
    server.respond(Reply(500), Reply(503), Reply(200), Reply(200), Reply(404))
    beats = sender(server.url)
    for _ in range(5):
        beats.beat()
    messages = [r.getMessage() for r in caplog.records if r.name == "agent.heartbeat_out"]
    assert [m.split(":")[1].strip() for m in messages] == [
        "the ping failed", "pings reach the watcher again", "the ping failed"]
    assert "HTTP 500" in messages[0] and "HTTP 404" in messages[2]
    assert_no_secret(caplog, server.url)


def test_a_failing_health_probe_counts_as_unhealthy_and_does_not_raise(
        server: HttpServer, caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> Health:
        raise RuntimeError("store is locked")

    sender(server.url, broken, fail_suffix="fail").beat()
    (request,) = server.requests
    assert request.path == f"/ping/{TOKEN}/fail"
    assert b"could not be read (RuntimeError)" in request.body


def test_a_token_in_userinfo_or_query_never_reaches_the_log(
        caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    url = f"http://kanshi:{TOKEN}@127.0.0.1:{port}/ping?key={TOKEN}"
    beats = HeartbeatSender(HeartbeatOutSettings.model_validate({"url": url}), lambda: DEAD)
    beats.beat()  # unhealthy, no fail endpoint: silence
    assert beats.sent == beats.failed == 0
    beats = HeartbeatSender(HeartbeatOutSettings.model_validate({"url": url}), lambda: HEALTHY)
    beats.beat()
    assert beats.failed == 1
    assert_no_secret(caplog, f"http://127.0.0.1:{port}")
    assert TOKEN not in repr(beats.settings) and TOKEN not in str(beats.settings)


# -- settings ------------------------------------------------------------------------


def test_the_settings_hide_the_url_and_name_what_to_mask() -> None:
    hb = settings("https://hc-ping.com", fail_suffix="/fail")
    assert hb.interval == 60.0 and hb.method == "GET"
    assert TOKEN not in repr(hb)
    assert f"/ping/{TOKEN}" in hb.secret_values()
    assert hb.fail_target() == f"https://hc-ping.com/ping/{TOKEN}/fail"


@pytest.mark.parametrize(("extra", "message"), [
    pytest.param({"url": f"ftp://example.com/{TOKEN}"}, "http:// or https://", id="scheme"),
    pytest.param({"fail_url": "https://x.example/f", "fail_suffix": "/fail"}, "not both",
                 id="two-fail-targets"),
    pytest.param({"timeout": "2m"}, "timeout below interval", id="timeout-too-long"),
    pytest.param({"method": "DELETE"}, "GET", id="method"),
])
def test_bad_settings_are_refused_without_echoing_the_url(extra: dict[str, str],
                                                         message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        settings("https://hc-ping.com", **extra)
    assert message in str(caught.value)
    assert TOKEN not in str(caught.value)
