"""A real agent behind a real HTTP server with the web page, on 127.0.0.1.

The agent runs its real scheduler and runbook service; the scripted check stands
in for the measured system so a test decides what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from agent.api.server import ApiServer
from agent.api.settings import ApiSettings
from agent.api.tokens import new_token
from agent.service import Agent
from agent.store.db import ts
from agent.web import add_web
from checks.base import Status
from tests.support.agents import StartAgent
from tests.support.scripted import Script
from tests.support.wait import wait_for

#: A harmless operation: every step runs `true` or `echo` (a customer runbook).
HELLO = """\
name: hello
description: says hello (a test procedure)
category: operation
target: host
parameters:
  greeting: {type: string, required: true, description: what to say}
  mood: {type: string, choices: [calm, loud], default: calm}
  times: {type: integer, default: 1}
levels:
  - name: greet
    steps:
      - id: say
        action: command.run
        with: {argv: [echo, "{{ params.greeting }} ({{ params.mood }})"]}
      - id: settle
        action: command.run
        with: {argv: ["true"]}
    verify:
      action: command.run
      with: {argv: ["true"], changes: false}
"""

#: A procedure with a secret parameter that it even prints (the page must mask it).
SECRETIVE = """\
name: secretive
category: operation
parameters:
  password: {type: secret, required: true}
levels:
  - name: use it
    steps:
      - id: leak
        action: command.run
        with: {argv: [echo, "pw={{ params.password }}"]}
    verify:
      action: command.run
      with: {argv: ["true"], changes: false}
"""

CONFIG = """\
agent: {{name: web-host, state_dir: {state}, locale: en, timezone: Asia/Tokyo}}
defaults: {{flapping: {{enabled: false}}}}
scheduler: {{spread: 100ms}}
plan: {{name: test plan, automatic_recovery: true, operations: true,
        emergency_ack_outside_hours: false}}
runbooks: {{directories: [{books}]}}
notifiers:
  - {{name: pager, type: recording}}
checks:
  - {{name: web, type: scripted, script: web, interval: 1s, retry_interval: 1s,
      max_attempts: 1, notify: [pager]}}
  - {{name: cpu, type: cpu, interval: 1h}}
  - {{name: memory, type: memory, interval: 1h}}
  - {{name: disk, type: disk, interval: 1h, include: [/]}}
"""


@dataclass
class Site:
    agent: Agent
    server: ApiServer
    tokens: dict[str, str]          # role → token
    books: Path

    @property
    def url(self) -> str:
        return f"{self.server.url}/web"


@pytest.fixture
def site(tmp_path: Path, start_agent: StartAgent, scripted: dict[str, Script]) -> Iterator[Site]:
    """The agent (one CRITICAL target → an open incident), tokens per role, the server."""
    books = tmp_path / "books"
    books.mkdir()
    (books / "hello.yaml").write_text(HELLO, encoding="utf-8")
    (books / "secretive.yaml").write_text(SECRETIVE, encoding="utf-8")
    scripted["web"] = Script({"<b>shop</b>": Status.CRITICAL, "api": Status.OK})
    agent = start_agent(CONFIG.format(state=tmp_path / "state", books=books))
    tokens = {}
    for role in ("viewer", "operator", "admin"):
        tokens[role] = new_token()
        agent.store.tokens.add(f"{role}-bob", role, tokens[role], "test", agent.clock.now())
    wait_for(lambda: agent.store.incidents.find(open_only=True), what="an open incident")
    wait_for(lambda: {"cpu", "memory", "disk"} <= agent.store.checks.checks_with_state(),
             what="the first run of every check")
    add_history(agent)
    server = ApiServer(agent, ApiSettings(listen="127.0.0.1", port=0), extra=[add_web])
    server.start()
    try:
        yield Site(agent, server, tokens, books)
    finally:
        server.stop()


def add_history(agent: Agent, hours: int = 30) -> None:
    """Past results for the graphs (as if the agent had run for ``hours``)."""
    now = agent.clock.now()
    rows = []
    for minute in range(0, hours * 60, 5):
        at = ts(now - timedelta(minutes=minute))
        wave = (minute % 120) / 120
        rows += [("cpu", "cpu", {"user_percent": 20 + 30 * wave, "system_percent": 5.0}, at),
                 ("memory", "memory", {"used_percent": 60 + 10 * wave}, at),
                 ("disk", "/", {"used_percent": 40.0}, at),
                 ("web", "api", {"rtt_avg_seconds": 0.02 + 0.05 * wave,
                                 "in_bytes_per_second": 1e5 * (1 + wave)}, at)]
    with agent.store.db.tx() as conn:
        conn.executemany(
            "INSERT INTO results (check_name, target, status, message, metrics, at, duration)"
            " VALUES (?, ?, 0, 'ok', ?, ?, 0.01)",
            [(c, t, json.dumps(m), at) for c, t, m, at in rows])
