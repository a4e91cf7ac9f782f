"""The agent's result → incident → notice path, driven run by run with a frozen clock."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.clock import FrozenClock
from agent.config import load_config
from agent.service import Agent
from checks.base import Result, Status
from notifiers.base import NotifierError
from tests.support.agents import StartAgent
from tests.support.scripted import RecordingNotifier, Script
from tests.support.stores import store_yaml

OK, W, C, U = Status.OK, Status.WARNING, Status.CRITICAL, Status.UNKNOWN

PAGER = """
notifiers:
  - {name: pager, type: recording}
"""

CHECK = """
checks:
  - name: web
    type: scripted
    script: web
    interval: 10m
    retry_interval: 1m
    max_attempts: 3
"""


@pytest.fixture
def make_agent(tmp_path: Path, scripted: dict[str, Script],
               store_url: str | None) -> Iterator[Callable[..., Agent]]:
    agents: list[Agent] = []
    clock = FrozenClock()

    def make(extra: str = CHECK, *, locale: str = "en", channels: str = PAGER) -> Agent:
        path = tmp_path / "kanshi.yaml"
        path.write_text(textwrap.dedent(f"""
            agent: {{name: host1, state_dir: state, locale: {locale}}}
            defaults: {{flapping: {{enabled: false}}}}
            """) + textwrap.dedent(channels) + textwrap.dedent(extra) + store_yaml(store_url),
            encoding="utf-8")
        agent = Agent(load_config(path, environ={}), clock=clock, share_work=False)
        agents.append(agent)
        return agent

    make.clock = clock  # type: ignore[attr-defined]
    yield make
    for agent in agents:
        agent.store.close()


def step(agent: Agent, name: str = "web", minutes: float = 1.0) -> float:
    """One run of ``name``, then deliver what it queued; the clock moves on."""
    interval = agent.run_check(name)
    agent.dispatcher.run_once()
    agent.clock.advance(minutes * 60)  # type: ignore[attr-defined]
    return interval


def sent() -> list[str]:
    return [f"{a.kind}:{a.target}:{a.status}" for a in RecordingNotifier.sent.get("pager", [])]


def test_an_incident_opens_after_three_failures_and_is_notified_once(
        make_agent: Callable[..., Agent], scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C})
    agent = make_agent()
    intervals = [step(agent) for _ in range(5)]
    assert sent() == ["problem:a:CRITICAL"]
    (incident,) = agent.store.incidents.find()
    assert incident.check == "web" and incident.target == "a" and incident.status is C
    assert intervals == [60.0, 60.0, 600.0, 600.0, 600.0], "retry quickly only while confirming"
    kinds = [e.kind for e in agent.store.incidents.events(incident.id)]
    assert kinds == ["detected", "confirmed", "notified"]


def test_a_blip_shorter_than_the_confirmation_never_alerts(
        make_agent: Callable[..., Agent], scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C}, {"a": C}, {"a": OK})
    agent = make_agent()
    for _ in range(6):
        step(agent)
    assert sent() == []
    assert agent.store.incidents.find() == []


def test_recovery_is_confirmed_and_its_notice_carries_the_outage(
        make_agent: Callable[..., Agent], scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C}, {"a": C}, {"a": C}, {"a": C}, {"a": OK})
    agent = make_agent()
    for _ in range(7):
        step(agent)
    assert sent() == ["problem:a:CRITICAL", "recovery:a:OK"]
    recovery = RecordingNotifier.sent["pager"][-1]
    assert recovery.outage_seconds == 240.0  # first failure at 0 min, first OK at 4 min
    assert "4m" in recovery.subject
    assert agent.store.incidents.find() == []
    (closed,) = agent.store.incidents.find(open_only=False)
    kinds = [e.kind for e in agent.store.incidents.events(closed.id)]
    assert kinds == ["detected", "confirmed", "notified", "recovered", "closed", "notified"]


def test_warning_to_critical_is_one_incident_with_a_change_notice(
        make_agent: Callable[..., Agent], scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": W}, {"a": W}, {"a": W}, {"a": C})
    agent = make_agent()
    for _ in range(7):
        step(agent)
    assert sent() == ["problem:a:WARNING", "change:a:CRITICAL"]
    (incident,) = agent.store.incidents.find()
    assert incident.status is C


def test_each_target_has_its_own_incident(
        make_agent: Callable[..., Agent], scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C, "b": OK, "c": W})
    agent = make_agent()
    for _ in range(3):
        step(agent)
    assert sorted(sent()) == ["problem:a:CRITICAL", "problem:c:WARNING"]
    assert sorted(i.dedup_key for i in agent.store.incidents.find()) == ["web/a", "web/c"]


def test_flapping_is_damped_into_one_notice_that_says_so(
        make_agent: Callable[..., Agent], scripted: dict[str, Script]) -> None:
    flappy = CHECK.replace("max_attempts: 3", "max_attempts: 1") + \
        "    flapping: {window: 11, high: 50, low: 20}\n"
    runs = [{"a": s} for s in [C, OK] * 8] + [{"a": OK}]
    scripted["web"] = Script(*runs)
    agent = make_agent(flappy)
    for _ in range(len(runs) + 12):
        step(agent)
    kinds = [k.split(":")[0] for k in sent()]
    assert kinds.count("flapping_start") == 1
    assert kinds[-1] == "flapping_stop"
    between = kinds[kinds.index("flapping_start") + 1:-1]
    assert between == [], "nothing is notified while flapping"
    assert agent.store.incidents.find() == [], "settled OK: the incident is resolved"
    latest = agent.store.incidents.find(open_only=False)[0]
    kinds_on_timeline = [e.kind for e in agent.store.incidents.events(latest.id)]
    assert "flapping_started" in kinds_on_timeline and "flapping_stopped" in kinds_on_timeline
    events = [e for e in agent.store.incidents.events(latest.id)
              if e.data.get("reason") == "flapping"]
    assert events, "transitions while flapping are on the timeline, marked as not notified"


def test_a_check_that_crashes_is_unknown_and_recovers_when_it_answers(
        make_agent: Callable[..., Agent], scripted: dict[str, Script]) -> None:
    def boom() -> list[Result]:
        raise RuntimeError("device not ready")

    scripted["web"] = Script(boom, boom, boom, {"a": OK})
    agent = make_agent()
    for _ in range(7):
        step(agent)
    assert sent() == ["problem::UNKNOWN", "recovery::OK"]  # target "" = the run as a whole
    first = RecordingNotifier.sent["pager"][0]
    assert "RuntimeError: device not ready" in first.message
    assert {r.target for r in agent.store.checks.latest()} == {"a"}, \
        "the run-level state is dropped once it settled OK"


def test_a_target_the_check_stops_reporting_closes_its_incident(
        make_agent: Callable[..., Agent], scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C, "b": OK}, {"a": C, "b": OK}, {"a": C, "b": OK},
                             {"b": OK})
    agent = make_agent()
    for _ in range(5):
        step(agent)
    assert sent() == ["problem:a:CRITICAL", "vanished:a:OK"]
    assert agent.store.incidents.find() == []
    assert {r.target for r in agent.store.checks.latest()} == {"b"}


def test_state_and_incidents_survive_a_restart_without_a_second_notice(
        make_agent: Callable[..., Agent], scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C})
    first = make_agent()
    for _ in range(3):
        step(first)
    first.store.close()
    second = make_agent()
    for _ in range(3):
        step(second)
    assert sent() == ["problem:a:CRITICAL"]
    assert len(second.store.incidents.find()) == 1


def test_notices_are_rendered_in_japanese_when_asked(
        make_agent: Callable[..., Agent], scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C}, {"a": C}, {"a": C}, {"a": OK})
    agent = make_agent(locale="ja")
    for _ in range(7):
        step(agent)
    problem, recovery = RecordingNotifier.sent["pager"]
    assert problem.subject.startswith("【障害】host1 web a CRITICAL")
    assert "3 回連続で異常を検知" in problem.body
    assert "検知日時:" in problem.body and "JST" in problem.body
    assert recovery.subject.startswith("【復旧】") and "障害時間 3分" in recovery.subject


def test_a_checks_private_memory_is_kept_across_restarts(
        make_agent: Callable[..., Agent], scripted: dict[str, Script]) -> None:
    first = make_agent()

    def remember() -> list[Result]:
        memory = first.checks["web"].context.state
        memory["runs"] = memory.get("runs", 0) + 1
        return [Result(OK, "fine", "a")]

    scripted["web"] = Script(remember)
    step(first)
    step(first)
    first.store.close()
    second = make_agent()
    assert second.checks["web"].context.state == {"runs": 2}


FALLBACK = """
notifiers:
  - {name: mail, type: recording, fallback: hook}
  - {name: hook, type: recording}
outbox: {retry_initial: 1m, retry_max: 1m, fallback_after: 5m}
"""


def test_a_fallback_never_repeats_what_the_channel_already_got(
        make_agent: Callable[..., Agent], scripted: dict[str, Script]) -> None:
    # The check notifies both channels; mail is down throughout.
    scripted["web"] = Script({"a": C}, {"a": C}, {"a": C}, {"a": OK})
    RecordingNotifier.failures["mail"] = NotifierError("connection refused")
    agent = make_agent(CHECK, channels=FALLBACK)
    for _ in range(30):
        step(agent)
    assert [a.kind for a in RecordingNotifier.sent["hook"]] == ["problem", "recovery"]


def test_a_fallback_copy_of_a_problem_never_follows_its_recovery(
        make_agent: Callable[..., Agent], scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C}, {"a": C}, {"a": C}, {"a": OK})
    RecordingNotifier.failures["mail"] = NotifierError("connection refused")
    agent = make_agent(CHECK + "    notify: [mail]\n", channels=FALLBACK)
    for _ in range(30):
        step(agent)
    assert [a.kind for a in RecordingNotifier.sent["hook"]] == ["problem", "recovery"]


def test_a_template_error_still_sends_the_notice_unformatted(
        make_agent: Callable[..., Agent], scripted: dict[str, Script],
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(fields: object, locale: str) -> tuple[str, str]:
        raise RuntimeError("template bug")

    monkeypatch.setattr("agent.outbox.render", broken)  # stands in for a broken template
    scripted["web"] = Script({"a": C})
    agent = make_agent()
    for _ in range(3):
        step(agent)
    (alert,) = RecordingNotifier.sent["pager"]
    assert alert.subject == "[kanshi] problem CRITICAL: web a on host1"
    assert "message: a is CRITICAL" in alert.body
    assert len(agent.store.incidents.find()) == 1


def test_when_flapping_settles_ok_the_outage_is_never_negative(
        make_agent: Callable[..., Agent], scripted: dict[str, Script]) -> None:
    flappy = CHECK.replace("max_attempts: 3", "max_attempts: 2") + \
        "    flapping: {window: 9, high: 40, low: 15}\n"
    runs = [{"a": s} for s in [OK, C] * 6] + [{"a": OK}]
    scripted["web"] = Script(*runs)
    agent = make_agent(flappy)
    for _ in range(30):
        step(agent)
    stops = [a for a in RecordingNotifier.sent["pager"] if a.kind == "flapping_stop"]
    assert stops and all((a.outage_seconds or 0) >= 0 for a in stops)
    for incident in agent.store.incidents.find(open_only=False):
        kinds = [e.kind for e in agent.store.incidents.events(incident.id)]
        assert kinds.count("recovered") <= 1, kinds
        recovered = [e.at for e in agent.store.incidents.events(incident.id)
                     if e.kind == "recovered"]
        assert all(at >= incident.opened_at for at in recovered)


def test_a_check_removed_from_the_config_closes_its_incidents_with_a_notice(
        make_agent: Callable[..., Agent], scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C})
    first = make_agent()
    for _ in range(3):
        step(first)
    first.store.close()
    second = make_agent("checks: []\n")
    second.close_unconfigured()
    second.dispatcher.run_once()
    (incident,) = second.store.incidents.find(open_only=False)
    assert not incident.is_open
    assert second.store.incidents.events(incident.id)[-2].message.startswith(
        "the check is no longer configured")
    assert second.store.checks.latest() == []
    assert [a.kind for a in RecordingNotifier.sent["pager"]] == ["problem", "vanished"]
    assert "no longer configured" in RecordingNotifier.sent["pager"][-1].message


def test_a_check_that_returns_nothing_is_unknown_not_all_clear(
        make_agent: Callable[..., Agent], scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C}, {"a": C}, {"a": C}, dict)
    agent = make_agent()
    for _ in range(6):
        step(agent)
    assert sorted(sent()) == ["problem::UNKNOWN", "problem:a:CRITICAL"]
    assert {i.target for i in agent.store.incidents.find()} == {"a", ""}, \
        "the open incident is not closed as if its target had gone"


def test_a_check_that_stops_reporting_on_the_whole_check_drops_that_row(
        make_agent: Callable[..., Agent], scripted: dict[str, Script]) -> None:
    # E.g. after an upgrade a database check reports liveness on "connection", not "".
    scripted["web"] = Script({"": OK}, {"connection": OK})
    agent = make_agent()
    step(agent)
    assert {r.target for r in agent.store.checks.latest()} == {""}
    step(agent)
    assert {r.target for r in agent.store.checks.latest()} == {"connection"}
    assert sent() == []


def test_the_first_start_leaves_an_admin_token_only_its_owner_can_read(
        start_agent: StartAgent, tmp_path: Path) -> None:
    import os
    import stat

    import requests

    from agent.api.tokens import authenticate

    agent = start_agent("""
        agent: {name: host1, state_dir: state}
        api: {port: 0}
        checks: [{name: lo, type: ping, targets: [127.0.0.1]}]
        notifiers: [{name: out, type: file, path: alerts.jsonl}]
    """)
    assert agent.api is not None
    path = tmp_path / "state" / "initial-admin-token"
    token = path.read_text(encoding="utf-8").strip()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    principal = authenticate(agent.store, token, agent.clock.now())
    assert principal is not None and principal.name == "admin"
    answer = requests.get(f"{agent.api.url}/api/v1/whoami",
                          headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 200
    assert requests.get(f"{agent.api.url}/api/v1/status", timeout=10).status_code == 401
