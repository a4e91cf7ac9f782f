"""Several real agent processes on one real PostgreSQL (loopback).

- kill -9 one of three agents: its checks are leased and run elsewhere within
  one lease period (plus one check interval for the first run);
- 1,000 notices queued while agents start and stop: each reaches a real HTTP
  receiver exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.store import Store, open_store
from agent.store.db import ts
from checks.base import Status
from tests.support.http_server import HttpServer
from tests.support.postgres import PostgresServer
from tests.support.stores import postgres_url
from tests.support.wait import wait_for

pytestmark = pytest.mark.real

LEASE = 3.0
CHECKS = 9


class Agents:
    """``kanshi run`` child processes on one config."""

    def __init__(self, config: Path, logs: Path) -> None:
        self.config, self.logs = config, logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = (self.logs / f"agent{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "-c",
                                 str(self.config), "--log-level", "INFO"],
                                stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def shared(tmp_path: Path, postgres_server: PostgresServer) -> Iterator[tuple[str, Store]]:
    url = postgres_url(postgres_server, postgres_server.create_database())
    store = open_store(tmp_path / "unused", url=url)  # migrated here, before any agent
    yield url, store
    store.close()


def write_config(tmp_path: Path, url: str, checks: str, notifiers: str = "[]") -> Path:
    path = tmp_path / "kanshi.yaml"
    path.write_text(f"""
agent: {{name: cluster, state_dir: {tmp_path / "state"}, heartbeat: 1s}}
store: {{url: "{url}", lease: {LEASE:g}s}}
api: {{enabled: false}}   # three agents on one host: no port to share
scheduler: {{spread: 1s}}
outbox: {{retry_initial: 0.2s, retry_max: 1s}}
notifiers: {notifiers}
checks:
{checks}
""", encoding="utf-8")
    return path


def holders(store: Store) -> dict[str, str]:
    now = datetime.now(UTC)
    return {lease.name: lease.agent for lease in store.leases.all() if lease.expires_at > now}


def agent_of(proc: subprocess.Popen[bytes]) -> str:
    return f"agent:{os.uname().nodename}:{proc.pid}"


def test_a_killed_agents_checks_resume_elsewhere_within_one_lease_period(
        tmp_path: Path, shared: tuple[str, Store]) -> None:
    url, store = shared
    with HttpServer() as peer:
        port = int(peer.url.rsplit(":", 1)[1])
        checks = "".join(f"  - {{name: c{i}, type: tcp, host: 127.0.0.1, port: {port},"
                         f" interval: 1s}}\n" for i in range(CHECKS))
        agents = Agents(write_config(tmp_path, url, checks), tmp_path)
        try:
            procs = [agents.start() for _ in range(3)]
            items = {f"check:c{i}" for i in range(CHECKS)} | {"task:policy"}

            def spread() -> bool:
                held = holders(store)
                return set(held) == items and len(set(held.values())) == 3
            wait_for(spread, timeout=30, what="every check leased, spread over 3 agents")

            victim = procs[1]
            theirs = sorted(n.removeprefix("check:") for n, a in holders(store).items()
                            if a == agent_of(victim) and n.startswith("check:"))
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            killed_at = datetime.now(UTC)

            def resumed() -> bool:
                held = holders(store)
                moved = all(held.get(f"check:{c}") not in (None, agent_of(victim))
                            for c in theirs)
                fresh = all(r.at > killed_at for r in store.checks.latest()
                            if r.check in theirs)
                return moved and fresh
            # One lease period for the move, one interval for the first run elsewhere,
            # and a second of slack for three Python processes on a small machine.
            wait_for(resumed, timeout=LEASE + 1.0 + 1.0,
                     what=f"checks {theirs} of the killed agent running on the others")
            assert set(holders(store).values()) == {agent_of(p) for p in procs
                                                     if p is not victim}
            assert all(r.status is Status.OK for r in store.checks.latest())
            status = subprocess.run([sys.executable, "-m", "agent.cli", "status", "-c",
                                     str(agents.config)], capture_output=True, text=True,
                                    timeout=30, check=False).stdout
            assert "2 live on a shared store" in status, status
            assert f"{agent_of(victim)}  DEAD (lease lapsed)" in status, status
        finally:
            agents.close()


def test_a_thousand_notices_are_delivered_once_each_while_agents_come_and_go(
        tmp_path: Path, shared: tuple[str, Store]) -> None:
    url, store = shared
    with HttpServer() as receiver:
        notifiers = f'[{{name: hook, type: webhook, url: "{receiver.url}/hook", timeout: 5s}}]'
        agents = Agents(write_config(tmp_path, url, "  []", notifiers), tmp_path)
        try:
            running = [agents.start(), agents.start()]
            now = datetime.now(UTC)
            ids: list[int] = []
            for batch in range(10):
                with store.db.tx():
                    for i in range(100):
                        incident = store.incidents.create("web", f"t{batch}-{i}",
                                                          Status.CRITICAL, "B", "down", now)
                        ids.append(store.notifications.add(
                            incident_id=incident, event_id=None, channel="hook",
                            kind="problem", payload=payload(incident, now), now=now,
                            fallback_at=now + timedelta(hours=1),
                            expires_at=now + timedelta(days=1)))
                if batch in (2, 6):
                    running.append(agents.start())   # one joins…
                if batch in (4, 8):
                    agents.stop(running.pop(0))      # …one leaves (SIGTERM, drains)

            wait_for(lambda: store.notifications.counts().get("delivered", 0) == len(ids),
                     timeout=90, what="every notice delivered")
        finally:
            agents.close()
        seen = Counter(r.json()["notification_id"] for r in receiver.requests)
    assert sorted(seen) == sorted(ids)
    assert set(seen.values()) == {1}, [n for n, c in seen.items() if c > 1][:10]


def payload(incident: int, now: datetime) -> dict[str, object]:
    return {"kind": "problem", "incident_id": incident, "dedup_key": f"web/{incident}",
            "host": "cluster", "check": "web", "target": str(incident), "status": "CRITICAL",
            "previous_status": "OK", "severity": "B", "message": "down",
            "detected_at": ts(now), "at": ts(now), "attempts": 3, "outage_seconds": None,
            "flap_percent": None, "locale": "en", "subject": f"web/{incident} down",
            "body": "down"}
