"""Recovery for real, through the agent: a real TCP service dies, the port check opens
an incident, service-down restarts the service through a service-manager command of
the test's own, the port verifies, the incident resolves. Then the same machinery
when the agent is killed in the middle of a step, and a manual run colliding with
an automatic one on the same target."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from agent.store import open_store
from tests.support.agents import StartAgent
from tests.support.http_server import free_port
from tests.support.wait import wait_for

SERVICE = """
import os, socket, sys, time
port, pidfile = int(sys.argv[1]), sys.argv[2]
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", port))
listener.listen()
open(pidfile, "w").write(str(os.getpid()))
while True:
    conn, _ = listener.accept()
    conn.close()
"""

# A service manager of the test's own (there is no systemd here): svc ACTION NAME.
MANAGER = """
import os, signal, socket, subprocess, sys, time
here = os.path.dirname(os.path.abspath(__file__))
action, name = sys.argv[1], sys.argv[2]
pidfile = os.path.join(here, name + ".pid")
port = int(open(os.path.join(here, name + ".port")).read())
def pid():
    try:
        value = int(open(pidfile).read())
        os.kill(value, 0)
        return value
    except (OSError, ValueError):
        return None
if action == "status":
    sys.exit(0 if pid() else 3)
if action in ("stop", "restart") and pid():
    os.kill(pid(), signal.SIGTERM)
    time.sleep(0.2)
if action in ("start", "restart"):
    subprocess.Popen([sys.executable, os.path.join(here, "service.py"), str(port), pidfile],
                     start_new_session=True, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            sys.exit(0)
        except OSError:
            time.sleep(0.05)
    sys.exit(1)
"""


class Demo:
    """A real service on a loopback port, and its manager script."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        (folder / "service.py").write_text(SERVICE)
        (folder / "svc.py").write_text(MANAGER)
        (folder / "demo.port").write_text(str(self.port))
        self.manager = [sys.executable, str(folder / "svc.py")]

    def start(self) -> None:
        subprocess.run([*self.manager, "start", "demo"], check=True, timeout=30)

    @property
    def pid(self) -> int | None:
        try:
            value = int((self.folder / "demo.pid").read_text())
        except (OSError, ValueError):
            return None
        return value if psutil.pid_exists(value) else None

    def kill(self) -> None:
        pid = self.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not psutil.pid_exists(pid) or
                 psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, what="the kill")

    def stop(self) -> None:
        subprocess.run([*self.manager, "stop", "demo"], check=False, timeout=30)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    service = Demo(tmp_path)
    service.start()
    yield service
    service.stop()


def config(demo: Demo, tmp_path: Path, *, plan: str = "{automatic_recovery: true}",
           runbook: str = "service-down", extra: str = "") -> str:
    manager = json.dumps([*demo.manager, "{action}", "{service}"])
    return textwrap.dedent(f"""
        agent: {{name: web01, state_dir: {tmp_path}/state}}
        plan: {plan}
        business_hours: {{always: true}}   # no emergency-contact gate in these tests
        scheduler: {{spread: 0.1s}}
        outbox: {{retry_initial: 0.3s, retry_max: 1s}}
        runbooks: {{service_manager: {manager}, directories: [{tmp_path}/books]}}
        defaults: {{flapping: {{enabled: false}}}}
        notifiers: [{{name: log, type: file, path: {tmp_path}/alerts.jsonl}}]
        checks:
          - name: demo-port
            type: tcp
            host: 127.0.0.1
            port: {demo.port}
            interval: 1s
            retry_interval: 0.3s
            max_attempts: 2
            timeout: 1s
            runbook:
              name: {runbook}
              target: web01
              params: {{service: demo, port: {demo.port}, within: 10}}
    """) + textwrap.dedent(extra)


def notices(tmp_path: Path) -> list[str]:
    path = tmp_path / "alerts.jsonl"
    return [json.loads(x)["kind"] for x in path.read_text().splitlines()] if path.exists() \
        else []


@pytest.fixture(autouse=True)
def books(tmp_path: Path) -> Path:
    folder = tmp_path / "books"
    folder.mkdir()
    return folder


def test_a_dead_service_is_restarted_by_the_agent_and_the_incident_resolves(
        tmp_path: Path, demo: Demo, start_agent: StartAgent) -> None:
    agent = start_agent(config(demo, tmp_path))
    wait_for(lambda: agent.store.checks.latest(), what="a first result")
    before = demo.pid
    demo.kill()
    wait_for(lambda: notices(tmp_path)[:1] == ["problem"], what="the problem notice")
    wait_for(lambda: "recovery" in notices(tmp_path), timeout=60, what="the recovery")
    assert demo.pid is not None and demo.pid != before, "a new service process runs"
    (incident,) = agent.store.incidents.find(open_only=False)
    assert not incident.is_open
    events = agent.store.incidents.events(incident.id)
    kinds = [e.kind for e in events]
    for kind in ("runbook_requested", "runbook_step", "runbook_succeeded", "recovered"):
        assert kind in kinds, kinds
    recovered = next(e for e in events if e.kind == "recovered")
    assert recovered.actor.startswith("runbook run #")
    (run,) = agent.store.runbooks.recent()
    assert (run.runbook, run.trigger, run.state) == ("service-down", "auto", "succeeded")
    steps = agent.store.runbooks.steps(run.id)
    assert [(s.step, s.state) for s in steps] == [
        ("status", "succeeded"), ("restart", "succeeded"), ("verify", "succeeded")]
    assert steps[0].outputs["running"] is False, "it saw the service down first"
    time.sleep(2)
    assert agent.store.incidents.find() == [], "the check agrees: no new incident"


def test_a_plan_without_failure_response_only_notifies(
        tmp_path: Path, demo: Demo, start_agent: StartAgent) -> None:
    agent = start_agent(config(demo, tmp_path, plan="{name: NTT East Entry}"))
    wait_for(lambda: agent.store.checks.latest(), what="a first result")
    demo.kill()
    wait_for(lambda: agent.store.incidents.find(), what="the incident")
    (incident,) = agent.store.incidents.find()
    wait_for(lambda: any(e.kind == "runbook_not_run"
                         for e in agent.store.incidents.events(incident.id)))
    note = next(e for e in agent.store.incidents.events(incident.id)
                if e.kind == "runbook_not_run")
    assert "has no automatic recovery: notify only" in note.message
    assert agent.store.runbooks.recent() == []


SLOW_FIX = """
name: slow-fix
parameters:
  service: {type: string, required: true}
  port: {type: integer, required: true}
  within: {type: duration, default: 10}
levels:
  - name: a long repair
    steps:
      - id: repair
        action: command.run
        with: {argv: [sleep, "30"]}
        timeout: 60s
        resumable: RESUMABLE
    verify:
      action: wait.port
      with: {host: 127.0.0.1, port: "{{ params.port }}", within: "{{ params.within }}"}
      timeout: 30s
"""


def agent_process(config_path: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "-c", str(config_path)],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def run_state(tmp_path: Path) -> Callable[[], str | None]:
    """The state of run #1 (the automatic one), read as another process would."""
    def read() -> str | None:
        store = open_store(tmp_path / "state", migrate=False, readonly=True)
        try:
            run = store.runbooks.get(1)
            return run.state if run else None
        finally:
            store.close()
    return read


@pytest.mark.parametrize(("resumable", "final"), [
    pytest.param("false", "interrupted", id="unsafe-step-is-marked-interrupted"),
    pytest.param("true", "succeeded", id="safe-step-is-resumed"),
])
def test_kill_9_in_the_middle_of_a_step_is_never_silently_forgotten(
        tmp_path: Path, demo: Demo, books: Path, resumable: str, final: str) -> None:
    (books / "slow-fix.yaml").write_text(SLOW_FIX.replace("RESUMABLE", resumable))
    path = tmp_path / "kanshi.yaml"
    path.write_text(config(demo, tmp_path, runbook="slow-fix"))
    log = tmp_path / "agent.log"
    first = agent_process(path, log)
    try:
        wait_for(lambda: (tmp_path / "state" / "kanshi.db").exists(), what="the store")
        time.sleep(2)
        demo.kill()
        state = run_state(tmp_path)
        wait_for(lambda: state() == "running", timeout=30, what="the repair step")
        time.sleep(0.5)
        refused = subprocess.run(
            [sys.executable, "-m", "agent.cli", "runbook", "run", "service-down", "-c",
             str(path), "--target", "web01", "--param", "service=demo",
             "--param", f"port={demo.port}", "--yes"],
            capture_output=True, text=True, timeout=60, check=False)
        assert refused.returncode == 1
        assert "web01 is in the hands of runbook run #1" in refused.stdout
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    demo.start()  # the service is back, so a resumed run can verify
    second = agent_process(path, log)
    try:
        wait_for(lambda: state() == final, timeout=60, what=f"the run to be {final}")
        if final == "interrupted":
            wait_for(lambda: "runbook_failed" in notices(tmp_path), what="people told")
    finally:
        second.send_signal(signal.SIGINT)
        second.wait(30)
    store = open_store(tmp_path / "state", migrate=False, readonly=True)
    try:
        run = store.runbooks.get(1)
        assert run is not None and run.state == final
        if final == "interrupted":
            assert "not safe to repeat" in run.outcome
            assert store.runbooks.holder("web01") is None, "the target is free again"
        else:
            repairs = [s for s in store.runbooks.steps(1) if s.step == "repair"]
            assert [s.state for s in repairs][-1] == "succeeded"
            assert len(repairs) == 2, "the interrupted step ran again from its start"
    finally:
        store.close()
