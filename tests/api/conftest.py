"""A real agent with the real API server in front of it, on 127.0.0.1 (ephemeral port)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from agent.api.server import ApiServer
from agent.api.settings import ApiSettings
from agent.api.tokens import new_token
from agent.service import Agent
from tests.support.agents import StartAgent
from tests.support.http_server import free_port
from tests.support.wait import wait_for

SECRET = "s3cr3t-smtp-password-xyz"

TOUCH = """
name: touch-file
category: operation
target: host
description: make a file (a harmless operation for the tests)
parameters:
  path: {type: string, required: true, pattern: "DIR/[a-z0-9]+"}
  password: {type: secret, default: ""}
levels:
  - name: make it
    steps:
      - id: touch
        action: command.run
        with: {argv: [touch, "{{ params.path }}"]}
        timeout: 10s
    verify:
      action: wait.port
      with: {host: 127.0.0.1, port: PORT, within: 5}
      timeout: 10s
"""


@dataclass
class Api:
    agent: Agent
    server: ApiServer
    tokens: dict[str, str]          # role name → token
    tmp_path: Path

    @property
    def url(self) -> str:
        return self.server.url

    def call(self, method: str, path: str, role: str | None = None,
             **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return requests.request(method, self.url + path, headers=headers, timeout=30,
                                **kwargs)

    def incident_id(self) -> int:
        wait_for(lambda: self.agent.store.incidents.find(), what="an incident")
        return self.agent.store.incidents.find()[0].id


def agent_yaml(tmp_path: Path, open_port: int, closed_port: int) -> str:
    return textwrap.dedent(f"""
        agent: {{name: web01, state_dir: {tmp_path}/state}}
        plan: {{automatic_recovery: true, operations: true, emergency_ack_outside_hours: false}}
        business_hours: {{always: true}}
        scheduler: {{spread: 0.1s}}
        runbooks: {{directories: [{tmp_path}/books]}}
        defaults: {{flapping: {{enabled: false}}}}
        notifiers:
          - {{name: log, type: file, path: {tmp_path}/alerts.jsonl}}
          - name: mail
            type: email
            enabled: false
            host: 127.0.0.1
            port: 1
            from: kanshi@example.com
            to: [ops@example.com]
            username: kanshi
            password: {SECRET}
        checks:
          - name: api-port
            type: tcp
            host: 127.0.0.1
            port: {open_port}
            interval: 1s
            timeout: 1s
          - name: dead-port
            type: tcp
            host: 127.0.0.1
            port: {closed_port}
            interval: 1s
            retry_interval: 0.3s
            max_attempts: 1
            timeout: 1s
            severity: A
    """)


@pytest.fixture
def api(tmp_path: Path, start_agent: StartAgent) -> Iterator[Api]:
    port = free_port()
    books = tmp_path / "books"
    books.mkdir()
    (books / "touch-file.yaml").write_text(TOUCH.replace("PORT", str(port))
                                           .replace("DIR", str(tmp_path / "made")))
    agent = start_agent(agent_yaml(tmp_path, port, free_port()))
    now = datetime.now(UTC)
    tokens = {}
    for role in ("viewer", "operator", "admin"):
        tokens[role] = new_token()
        agent.store.tokens.add(f"{role}-bot", role, tokens[role], "test", now)
    server = ApiServer(agent, ApiSettings(port=port))
    server.start()
    try:
        yield Api(agent, server, tokens, tmp_path)
    finally:
        server.stop()
