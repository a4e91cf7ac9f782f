"""Timeouts, no overlap, spreading and retry scheduling — with the real APScheduler."""

from __future__ import annotations

import textwrap
import threading
import time
from collections import Counter

from agent.clock import SystemClock
from agent.runner import CheckRunner
from agent.scheduler import CheckScheduler, first_delay
from checks.base import CheckContext, Result, Status
from tests.support.agents import StartAgent
from tests.support.scripted import Script, ScriptedCheck
from tests.support.wait import wait_for


def scripted_check(name: str, timeout: float) -> ScriptedCheck:
    return ScriptedCheck(name, ScriptedCheck.Config(script=name), timeout=timeout,
                         context=CheckContext(clock=SystemClock()))


def test_a_check_that_hangs_becomes_unknown_after_its_timeout(
        scripted: dict[str, Script]) -> None:
    release = threading.Event()
    scripted["hang"] = Script(lambda: [release.wait(30), Result(Status.OK, "late")][1:])
    runner = CheckRunner(SystemClock())
    started = time.monotonic()
    (result,) = runner.run(scripted_check("hang", 0.5), 0.5)
    assert time.monotonic() - started < 10  # sanity bound only: it did not wait 30 s
    assert result.status is Status.UNKNOWN
    assert result.message.startswith("no answer within 0.5 s (timeout of check 'hang'")
    release.set()


def test_while_a_run_is_stuck_no_second_run_is_started(
        scripted: dict[str, Script]) -> None:
    release = threading.Event()
    script = scripted["hang"] = Script(lambda: [release.wait(30), Result(Status.OK, "back")][1:])
    runner, check = CheckRunner(SystemClock()), scripted_check("hang", 0.2)
    runner.run(check, 0.2)
    (second,) = runner.run(check, 0.2)
    assert script.calls == 1
    assert "a previous run has hung since" in second.message
    release.set()
    assert wait_for(lambda: not any(t.name == "check:hang" for t in threading.enumerate()))
    (third,) = runner.run(check, 5)
    assert third.status is Status.OK and third.message == "back"


def test_first_runs_of_a_thousand_checks_are_spread_over_the_window() -> None:
    delays = [first_delay(f"check-{i:04d}", 600.0, 60.0) for i in range(1000)]
    per_second = Counter(int(d) for d in delays)
    assert max(per_second.values()) <= 40, "about 17 a second on average, never a stampede"
    assert len(per_second) >= 55, "nearly every second of the window is used"
    assert first_delay("check-0001", 600.0, 60.0) == first_delay("check-0001", 600.0, 60.0)
    assert first_delay("quick", 10.0, 60.0) < 10.0, "never later than one interval"


def test_the_real_scheduler_places_a_thousand_jobs_apart() -> None:
    scheduler = CheckScheduler(lambda name: 600.0, workers=4, spread=60.0)
    for i in range(1000):
        scheduler.add_check(f"check-{i:04d}", 600.0)
    scheduler.start(paused=True)
    try:
        times = [scheduler.next_run(f"check-{i:04d}") for i in range(1000)]
    finally:
        scheduler.shutdown(wait=False)
    per_second = Counter(t.replace(microsecond=0) for t in times if t is not None)
    assert len(times) == 1000 and max(per_second.values()) <= 40


HEADER = """
agent: {name: host1, state_dir: state}
scheduler: {spread: 0.2s, workers: 8}
notifiers: [{name: pager, type: recording}]
"""


def test_a_hung_check_never_delays_the_others(
        start_agent: StartAgent, scripted: dict[str, Script]) -> None:
    release = threading.Event()
    hang = scripted["hang"] = Script(lambda: [release.wait(60), Result(Status.OK, "x")][1:])
    fast = scripted["fast"] = Script({"t": Status.OK})
    agent = start_agent(HEADER + textwrap.dedent("""
        checks:
          - {name: hang, type: scripted, script: hang, interval: 1s, timeout: 0.5s,
             max_attempts: 1}
          - {name: fast, type: scripted, script: fast, interval: 0.3s, timeout: 0.3s}
    """))
    try:
        assert wait_for(lambda: fast.calls >= 10), "the fast check kept its pace"
        assert wait_for(lambda: len(agent.store.incidents.find()) == 1)
        (incident,) = agent.store.incidents.find()
        assert incident.check == "hang" and incident.status is Status.UNKNOWN
        assert hang.calls == 1, "no second run while the first is stuck"
    finally:
        release.set()


def test_a_failing_check_is_retried_at_the_retry_interval(
        start_agent: StartAgent, scripted: dict[str, Script]) -> None:
    script = scripted["web"] = Script({"a": Status.CRITICAL})
    agent = start_agent(HEADER + textwrap.dedent("""
        checks:
          - {name: web, type: scripted, script: web, interval: 1h, retry_interval: 0.2s,
             max_attempts: 3}
    """))
    # With a one-hour interval the incident can only open this soon through retries.
    assert wait_for(lambda: len(agent.store.incidents.find()) == 1)
    assert script.calls >= 3
    calls = script.calls
    time.sleep(1.0)
    assert script.calls == calls, "back to the normal interval once confirmed"


def test_every_message_a_check_returns_is_scrubbed_of_secrets(
        scripted: dict[str, Script]) -> None:
    from agent.secrets import Redactor

    scripted["echo"] = Script(lambda: [Result(Status.CRITICAL, "login as app/hunter2 refused",
                                              "db"), Result(Status.OK, "fine", "web")])
    check = ScriptedCheck("echo", ScriptedCheck.Config(script="echo"), timeout=5,
                          context=CheckContext(clock=SystemClock(),
                                               scrub=Redactor({"hunter2"})))

    refused, fine = check.execute()

    assert "hunter2" not in refused.message and refused.message.startswith("login as app/")
    assert fine.message == "fine"
