"""kill -9 of a real `kanshi run` with an open incident and an undelivered notice:
after a restart the incident is still the same open one and the notice arrives
exactly once. Then Ctrl-C (SIGINT) stops the agent cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.store import open_store
from tests.support.http_server import free_port
from tests.support.mounts import Mounter
from tests.support.smtp_server import SmtpServer
from tests.support.wait import wait_for

pytestmark = pytest.mark.real



@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[[Path], subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(config: Path) -> subprocess.Popen[str]:
        log = (tmp_path / f"agent-{len(started)}.log").open("w")
        process = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "-c", str(config)],
                                   stdout=log, stderr=subprocess.STDOUT, text=True)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_kill_9_loses_no_incident_and_sends_no_notice_twice(
        tmp_path: Path, mounter: Mounter,
        agents: Callable[[Path], subprocess.Popen[str]]) -> None:
    point = mounter.tmpfs("data", "size=1M,nr_inodes=1000")
    (point / "blob").write_bytes(os.urandom(960 * 1024))
    port = free_port()  # nothing listens yet: the notice cannot be delivered
    config = tmp_path / "kanshi.yaml"
    config.write_text(textwrap.dedent(f"""
        agent: {{name: testhost, state_dir: state, heartbeat: 1s}}
        scheduler: {{spread: 0.1s}}
        outbox: {{retry_initial: 0.5s, retry_max: 1s}}
        checks:
          - {{name: disk, type: disk, include: ["{point}"], interval: 1s,
             retry_interval: 0.2s, max_attempts: 3}}
        notifiers:
          - {{name: mail, type: email, host: 127.0.0.1, port: {port}, timeout: 2s,
             from: kanshi@example.com, to: [ops@example.com]}}
    """), encoding="utf-8")
    store = open_store(tmp_path / "state")

    def pending_mail_attempts() -> int:
        notices = store.notifications.for_incident(1) if store.incidents.get(1) else []
        return sum(n.attempts for n in notices if n.state == "pending")

    first = agents(config)
    wait_for(lambda: pending_mail_attempts() >= 2, what="an incident with a failing notice")
    first.send_signal(signal.SIGKILL)
    first.wait(10)

    with SmtpServer(port=port) as smtp:
        second = agents(config)
        smtp.wait_for(1, timeout=30)
        time.sleep(3)  # more runs and outbox passes: still one message
        assert len(smtp.messages) == 1
        assert str(smtp.messages[0].message["Subject"]).startswith("[kanshi] PROBLEM CRITICAL")

        incidents = store.incidents.find(open_only=False)
        assert [(i.id, i.is_open) for i in incidents] == [(1, True)]
        runs = store.runs.recent()
        assert len(runs) == 2 and runs[1].stopped_at is None, "the killed run left no stop"

        second.send_signal(signal.SIGINT)
        assert second.wait(30) == 0
    assert store.runs.latest().stopped_at is not None  # type: ignore[union-attr]
    store.close()
