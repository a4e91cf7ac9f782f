"""End to end on real parts: a real tmpfs fills up, the running agent confirms it,
opens incidents and mails a real SMTP server (STARTTLS + AUTH) on loopback; after
cleanup the recovery notices follow. Then the same with the SMTP server down for a
while: nothing is lost and nothing is sent twice."""

from __future__ import annotations

import logging
import os
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.service import Agent
from tests.support.agents import StartAgent
from tests.support.mounts import Mounter
from tests.support.smtp_server import SmtpServer
from tests.support.wait import wait_for

pytestmark = pytest.mark.real



def config_text(point: Path, smtp: SmtpServer, state: Path) -> str:
    return textwrap.dedent(f"""
        agent: {{name: testhost, state_dir: {state}}}
        scheduler: {{spread: 0.1s}}
        outbox: {{retry_initial: 0.3s, retry_max: 1s}}
        checks:
          - {{name: disk, type: disk, include: ["{point}"], interval: 1s,
             retry_interval: 0.2s, max_attempts: 3}}
          - {{name: inode, type: inode, include: ["{point}"], interval: 1s,
             retry_interval: 0.2s, max_attempts: 3}}
        notifiers:
          - name: mail
            type: email
            host: 127.0.0.1
            port: {smtp.port}
            security: starttls
            ca_file: {smtp.ca_file}
            username: {SmtpServer.USER}
            password: ${{SMTP_PASSWORD}}
            from: kanshi@example.com
            to: [ops@example.com]
            timeout: 5s
          - {{name: log, type: file, path: {state}/alerts.jsonl}}
    """)


@pytest.fixture(autouse=True)
def smtp_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", SmtpServer.PASSWORD)


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer(security="starttls", auth=True) as server:
        yield server


def subjects(smtp: SmtpServer) -> list[str]:
    return [str(m.message["Subject"]) for m in smtp.messages]


def df_percent(option: str, point: Path) -> int:
    out = subprocess.run(["df", option, str(point)], capture_output=True, text=True,
                         check=True).stdout.splitlines()[-1].split()
    return int(out[4].rstrip("%"))


def open_incidents(agent: Agent) -> dict[str, str]:
    return {i.check: i.status.name for i in agent.store.incidents.find()}


def test_a_filling_disk_alerts_by_mail_and_recovers(
        tmp_path: Path, mounter: Mounter, smtp: SmtpServer, start_agent: StartAgent,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    point = mounter.tmpfs("data", "size=1M,nr_inodes=100")
    agent = start_agent(config_text(point, smtp, tmp_path / "state"))
    wait_for(lambda: {r.check for r in agent.store.checks.latest()} == {"disk", "inode"},
             what="first results")
    assert open_incidents(agent) == {}

    (point / "blob").write_bytes(os.urandom(960 * 1024))          # > 90 % of blocks
    for i in range(60):                                            # > 50 % of inodes
        (point / f"f{i}").touch()
    wait_for(lambda: len(smtp.messages) == 2, what="two problem mails")
    assert open_incidents(agent) == {"disk": "CRITICAL", "inode": "WARNING"}
    assert sorted(subjects(smtp)) == [
        f"[kanshi] PROBLEM CRITICAL: disk {point} on testhost",
        f"[kanshi] PROBLEM WARNING: inode {point} on testhost"]

    latest = {r.check: r for r in agent.store.checks.latest()}
    assert -(-latest["disk"].metrics["used_percent"] // 1) == df_percent("-P", point)
    assert -(-latest["inode"].metrics["used_percent"] // 1) == df_percent("-Pi", point)

    for child in point.iterdir():
        child.unlink()
    wait_for(lambda: len(smtp.messages) == 4, what="two recovery mails")
    time.sleep(2)  # a few more runs: nothing else may be sent
    recovered = sorted(subjects(smtp))[2:]
    assert all(s.startswith("[kanshi] RECOVERED: ") for s in recovered), recovered
    assert len(smtp.messages) == 4
    assert open_incidents(agent) == {}
    assert all(m.user == SmtpServer.USER and m.tls for m in smtp.messages)

    lines = (agent.config.state_dir / "alerts.jsonl").read_text().splitlines()
    assert len(lines) == 4, "the file channel got the same four notices"
    everything = caplog.text + "".join(m.raw.decode(errors="replace") for m in smtp.messages)
    assert SmtpServer.PASSWORD not in everything


def test_notices_wait_out_an_smtp_outage_and_arrive_once(
        tmp_path: Path, mounter: Mounter, smtp: SmtpServer, start_agent: StartAgent) -> None:
    point = mounter.tmpfs("data", "size=1M,nr_inodes=1000")
    smtp.stop()
    agent = start_agent(config_text(point, smtp, tmp_path / "state"))
    (point / "blob").write_bytes(os.urandom(960 * 1024))
    wait_for(lambda: open_incidents(agent) == {"disk": "CRITICAL"}, what="the incident")
    (incident,) = agent.store.incidents.find()
    wait_for(lambda: any(n.attempts >= 3 for n in agent.store.notifications
                         .for_incident(incident.id) if n.channel == "mail"),
             what="three failed delivery attempts")
    mail = next(n for n in agent.store.notifications.for_incident(incident.id)
                if n.channel == "mail")
    errors = [a.error for a in agent.store.notifications.attempts(mail.id)]
    assert all(e and "127.0.0.1" in e for e in errors), errors
    assert smtp.messages == []

    smtp.start()
    smtp.wait_for(1, timeout=15)
    (point / "blob").unlink()
    smtp.wait_for(2, timeout=30)
    time.sleep(2)
    assert [str(m.message["Subject"]).split(":")[0] for m in smtp.messages] == [
        "[kanshi] PROBLEM CRITICAL", "[kanshi] RECOVERED"]
    kinds = [e.kind for e in agent.store.incidents.events(incident.id)]
    assert kinds.count("notified") == 4, "mail and file, problem and recovery, once each"
