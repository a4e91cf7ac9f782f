"""The runbook engine with real processes, a real store and real time (short timeouts).

Only the agent's side (timeline, emergency-contact gate, notices) is a recorder.
"""

from __future__ import annotations

import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from agent.runbook_library import action_class
from agent.store import Store, open_store
from runbooks.engine import Engine, Outcome, RunRequest
from runbooks.params import resolve
from runbooks.schema import Runbook


class Recorder:
    """Stands in for the agent: keeps what the engine tells it."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []
        self.finished_with: list[tuple[str, str]] = []
        self.notices: list[tuple[str, tuple[str, ...], str]] = []
        self.gate_closed = False

    def record(self, request: RunRequest, kind: str, message: str,
               data: dict[str, Any] | None = None) -> None:
        self.records.append((kind, message))

    def emergency_ack_needed(self, request: RunRequest) -> bool:
        return self.gate_closed

    def finished(self, request: RunRequest, state: str, outcome: str) -> None:
        self.finished_with.append((state, outcome))

    def notify(self, request: RunRequest, kind: str, contacts: tuple[str, ...],
               message: str) -> str:
        self.notices.append((kind, contacts, message))
        return "told"


class Clock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@pytest.fixture
def store(tmp_path: Path, store_url: str | None) -> Iterator[Store]:
    s = open_store(tmp_path / "state", url=store_url)
    yield s
    s.close()


def book(text: str) -> Runbook:
    return Runbook.model_validate(yaml.safe_load(textwrap.dedent(text)))


class Harness:
    def __init__(self, store: Store, books: dict[str, Runbook]) -> None:
        self.store = store
        self.books = books
        self.hooks = Recorder()
        self.engine = Engine(store.runbooks, self.hooks, Clock(), self._book, action_class,
                             {"notify": self.hooks.notify}, emergency_ack_timeout=0.6,
                             poll=0.05)

    def _book(self, name: str) -> Runbook:
        return self.books[name]

    def request(self, name: str, params: dict[str, Any] | None = None, *,
                target: str = "web01", trigger: str = "manual",
                dry_run: bool = False) -> RunRequest:
        runbook = self.books[name]
        values = resolve(runbook, params or {})
        now = datetime.now(UTC)
        run_id = self.store.runbooks.create(
            runbook=name, target=target, params=values, trigger=trigger, incident_id=None,
            requested_by="test", dry_run=dry_run, state="waiting_lock", scheduled_for=now,
            now=now, owner="test")
        return RunRequest(run_id, runbook, target, values, trigger, dry_run)

    def run(self, name: str, params: dict[str, Any] | None = None, **kw: Any) -> Outcome:
        return self.engine.execute(self.request(name, params, **kw))

    def steps(self, run_id: int) -> list[tuple[str, str]]:
        return [(s.step, s.state) for s in self.store.runbooks.steps(run_id)]


PY = sys.executable

ECHO = book(f"""
name: echo
parameters:
  text: {{type: string, required: true}}
levels:
  - name: say it
    steps:
      - id: say
        action: command.run
        with: {{argv: ["{PY}", "-c", "import sys; print(sys.argv[1])", "{{{{ params.text }}}}"]}}
    verify:
      action: command.run
      with: {{argv: [/bin/true], changes: false}}
""")


def test_a_parameter_full_of_shell_metacharacters_is_one_literal_argument(
        store: Store) -> None:
    h = Harness(store, {"echo": ECHO})
    nasty = "a; rm -rf / $(reboot) `id` && echo pwned | cat > /tmp/x"
    outcome = h.run("echo", {"text": nasty})
    assert outcome.state == "succeeded", outcome.message
    (say, _verify) = store.runbooks.steps(1)
    assert say.outputs["stdout"] == nasty + "\n"
    assert say.inputs["argv"][-1] == nasty


TOUCH = book(f"""
name: touch
parameters:
  path: {{type: string, required: true}}
levels:
  - name: make the file
    steps:
      - id: touch
        action: command.run
        with:
          argv: ["{PY}", "-c", "import sys, pathlib; pathlib.Path(sys.argv[1]).touch()",
                 "{{{{ params.path }}}}"]
    verify:
      action: command.run
      with: {{argv: [test, -e, "{{{{ params.path }}}}"], changes: false}}
""")


def test_a_dry_run_changes_nothing_and_says_what_it_would_do(store: Store,
                                                             tmp_path: Path) -> None:
    h = Harness(store, {"touch": TOUCH})
    marker = tmp_path / "marker"
    outcome = h.run("touch", {"path": str(marker)}, dry_run=True)
    assert outcome.state == "planned"
    assert not marker.exists()
    (touch, _verify) = store.runbooks.steps(1)
    assert touch.state == "planned" and touch.summary.startswith("would run [")
    assert store.runbooks.holder("web01") is None, "a dry run takes no lock"
    assert h.run("touch", {"path": str(marker)}).state == "succeeded"
    assert marker.exists()


def test_a_manual_run_is_refused_while_another_holds_the_target(store: Store) -> None:
    h = Harness(store, {"echo": ECHO})
    holder = h.request("echo", {"text": "first"})
    assert store.runbooks.lock("web01", holder.run_id, datetime.now(UTC)) is None
    outcome = h.run("echo", {"text": "second"})
    assert outcome.state == "refused"
    assert f"run #{holder.run_id}" in outcome.message


def test_an_automatic_run_waits_for_the_target_and_then_runs(store: Store) -> None:
    h = Harness(store, {"echo": ECHO})
    holder = h.request("echo", {"text": "first"})
    store.runbooks.lock("web01", holder.run_id, datetime.now(UTC))
    threading.Timer(0.4, store.runbooks.unlock, ("web01", holder.run_id)).start()
    outcome = h.run("echo", {"text": "second"}, trigger="auto")
    assert outcome.state == "succeeded"
    assert ("runbook_waiting_lock", f"waiting for run #{holder.run_id} to release web01") in \
        h.hooks.records
    assert store.runbooks.holder("web01") is None, "released at the end"


BUDGET = book("""
name: reboot-loop
levels:
  - name: reboot
    steps:
      - id: reboot
        action: command.run
        with: {argv: [/bin/true]}
        budget: {key: reboot, max: 2, per: 1h}
    verify:
      action: command.run
      with: {argv: [/bin/true], changes: false}
""")


def test_the_restart_storm_budget_hands_over_to_people(store: Store) -> None:
    h = Harness(store, {"reboot-loop": BUDGET})
    assert [h.run("reboot-loop").state for _ in range(2)] == ["succeeded", "succeeded"]
    third = h.run("reboot-loop")
    assert third.state == "escalated"
    assert third.message.startswith("restart-storm budget spent: reboot ran 2 times on web01")
    assert h.hooks.notices[-1][0] == "runbook_escalation"
    assert h.run("reboot-loop", target="web02").state == "succeeded", "budgets are per target"


APPROVAL = book("""
name: careful
levels:
  - name: act
    steps:
      - id: act
        action: command.run
        with: {argv: [/bin/true]}
        approval: {approvers: [tanaka], timeout: 0.8s, on_timeout: escalate}
    verify:
      action: command.run
      with: {argv: [/bin/true], changes: false}
""")


def _approve_later(store: Store, run_id: int, decision: str, by: str) -> None:
    def go() -> None:
        for _ in range(100):
            waiting = [s for s in store.runbooks.steps(run_id) if s.state == "waiting_approval"]
            if waiting:
                store.runbooks.decide(waiting[0].id, decision, by)
                return
            time.sleep(0.02)

    threading.Thread(target=go).start()


@pytest.mark.parametrize(("decision", "by", "state"), [
    pytest.param("approved", "tanaka", "succeeded", id="approved-by-an-approver"),
    pytest.param("approved", "mallory", "failed", id="approved-by-someone-else"),
    pytest.param("rejected", "tanaka", "failed", id="rejected"),
])
def test_a_step_that_needs_approval_waits_for_the_right_person(
        store: Store, decision: str, by: str, state: str) -> None:
    h = Harness(store, {"careful": APPROVAL})
    request = h.request("careful")
    _approve_later(store, request.run_id, decision, by)
    assert h.engine.execute(request).state == state
    assert h.hooks.notices[0][:2] == ("runbook_approval", ("tanaka",))


def test_nobody_answering_an_approval_escalates(store: Store) -> None:
    h = Harness(store, {"careful": APPROVAL})
    outcome = h.run("careful")
    assert outcome.state == "escalated"
    assert outcome.message == "nobody approved step act within 0.8 s"


def test_outside_hours_an_automatic_run_waits_for_the_emergency_contact(store: Store) -> None:
    h = Harness(store, {"echo": ECHO})
    h.hooks.gate_closed = True
    threading.Timer(0.2, setattr, (h.hooks, "gate_closed", False)).start()
    assert h.run("echo", {"text": "hi"}, trigger="auto").state == "succeeded"
    assert any(kind == "runbook_waiting_ack" for kind, _ in h.hooks.records)


def test_outside_hours_with_nobody_reachable_the_response_is_not_carried_out(
        store: Store, tmp_path: Path) -> None:
    h = Harness(store, {"touch": TOUCH})
    h.hooks.gate_closed = True
    outcome = h.run("touch", {"path": str(tmp_path / "x")}, trigger="auto")
    assert outcome.state == "escalated"
    assert "emergency contact could not be reached" in outcome.message
    assert not (tmp_path / "x").exists()
    assert h.run("touch", {"path": str(tmp_path / "x")}).state == "succeeded", \
        "an operator's manual run is not gated"


SLOW = book(f"""
name: slow
levels:
  - name: wait
    steps:
      - id: sleep
        action: command.run
        with:
          argv: ["{PY}", "-c", "import time, pathlib, os, sys;
                 pathlib.Path(sys.argv[1]).write_text(str(os.getpid())); time.sleep(30)",
                 "{{{{ params.pidfile }}}}"]
        timeout: "{{{{ 0.8 }}}}"
    verify:
      action: command.run
      with: {{argv: [/bin/true], changes: false}}
  - name: people
    escalate: it was too slow
parameters:
  pidfile: {{type: string, required: true}}
""".replace('timeout: "{{ 0.8 }}"', "timeout: 0.8s"))


def test_a_step_past_its_timeout_fails_and_its_process_is_killed(store: Store,
                                                                  tmp_path: Path) -> None:
    h = Harness(store, {"slow": SLOW})
    pidfile = tmp_path / "pid"
    outcome = h.run("slow", {"pidfile": str(pidfile)})
    assert outcome.state == "failed"
    (sleep,) = store.runbooks.steps(1)
    assert sleep.state == "failed" and "timed out and was killed" in (sleep.error or "")
    pid = int(pidfile.read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_cancelling_a_run_stops_it_and_kills_what_it_runs(store: Store, tmp_path: Path) -> None:
    h = Harness(store, {"slow": SLOW.model_copy(update={"levels": (SLOW.levels[0].model_copy(
        update={"steps": (SLOW.levels[0].steps[0].model_copy(update={"timeout": 30.0}),)}),)})})
    request = h.request("slow", {"pidfile": str(tmp_path / "pid")})
    threading.Timer(0.5, store.runbooks.request_cancel, (request.run_id,)).start()
    started = time.monotonic()
    outcome = h.engine.execute(request)
    assert outcome.state == "cancelled"
    assert time.monotonic() - started < 15  # sanity bound: it did not sit out the 30 s


LEVELS = book("""
name: levels
levels:
  - name: first try
    steps:
      - {id: nothing, action: command.run, with: {argv: [/bin/true]}}
    verify:
      action: command.run
      with: {argv: [/bin/false], changes: false}
  - name: hand over
    run: echo
    with: {text: "from levels"}
""")


def test_a_level_that_does_not_verify_goes_to_the_next_which_may_hand_over(
        store: Store) -> None:
    h = Harness(store, {"levels": LEVELS, "echo": ECHO})
    outcome = h.run("levels")
    assert outcome.state == "succeeded"
    assert outcome.message.startswith("echo: recovery verified at level 1")
    (child,) = store.runbooks.children(1)
    assert child.runbook == "echo" and child.params == {"text": "from levels"}
    assert store.runbooks.get(child.id).state == "succeeded"  # type: ignore[union-attr]


GOTO = book(f"""
name: goto
levels:
  - name: with a fallback
    steps:
      - id: try
        action: command.run
        with: {{argv: [/bin/false]}}
        retries: 1
        retry_delay: 0.1s
        on_failure: goto:fallback
      - id: skipped
        action: command.run
        with: {{argv: [/bin/false]}}
      - id: fallback
        action: command.run
        with: {{argv: ["{PY}", "-c", "print('fallback')"]}}
    verify:
      action: command.run
      with: {{argv: [/bin/true], changes: false}}
""")


def test_retries_then_on_failure_goto(store: Store) -> None:
    h = Harness(store, {"goto": GOTO})
    assert h.run("goto").state == "succeeded"
    assert h.steps(1) == [("try", "failed"), ("try", "failed"), ("fallback", "succeeded"),
                          ("verify", "succeeded")]


SECRET = book(f"""
name: secretive
parameters:
  token: {{type: secret, required: true}}
levels:
  - name: use it
    steps:
      - id: use
        action: command.run
        with:
          argv: ["{PY}", "-c", "import sys; print('token is', sys.argv[1])",
                 "{{{{ params.token }}}}"]
    verify:
      action: command.run
      with: {{argv: [/bin/true], changes: false}}
""")


def test_secret_parameters_never_reach_the_store_or_the_timeline(store: Store) -> None:
    h = Harness(store, {"secretive": SECRET})
    assert h.run("secretive", {"token": "s3cr3t-t0ken"}).state == "succeeded"
    (use, _) = store.runbooks.steps(1)
    assert use.inputs["argv"][-1] == "********"
    assert use.outputs["stdout"] == "token is ********\n"
    assert "s3cr3t" not in repr(h.hooks.records)
    with store.db.read() as conn:  # every stored column, on either backend
        dump = repr([tuple(row) for row in conn.execute("SELECT * FROM runbook_steps")
                     .fetchall()])
    assert "s3cr3t" not in dump


def test_bad_arguments_fail_the_step_with_the_reason(store: Store) -> None:
    broken = book("""
name: broken
levels:
  - name: l
    steps:
      - {id: s, action: wait.port, with: {host: 127.0.0.1, port: "{{ params.nope }}"}}
    verify: {action: command.run, with: {argv: [/bin/true], changes: false}}
""")
    h = Harness(store, {"broken": broken})
    outcome = h.run("broken")
    assert outcome.state == "failed"
    assert "bad arguments" in outcome.message and "nope" in outcome.message



