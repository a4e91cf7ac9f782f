"""Real agents started in the test process on a config the test writes."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.config import load_config
from agent.service import Agent

StartAgent = Callable[[str], Agent]


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[StartAgent]:
    """``start_agent(yaml_text)``: write ``tmp_path/kanshi.yaml``, start an agent on it
    (with the real scheduler and senders); every agent is stopped afterwards. The HTTP
    API is off unless the text has an ``api:`` section (tests run side by side)."""
    agents: list[Agent] = []

    def start(text: str) -> Agent:
        path = tmp_path / "kanshi.yaml"
        text = textwrap.dedent(text)
        if not any(line.startswith("api:") for line in text.splitlines()):
            text += "\napi: {enabled: false}\n"
        path.write_text(text, encoding="utf-8")
        agent = Agent(load_config(path))
        agents.append(agent)
        agent.start()
        return agent

    yield start
    for agent in agents:
        agent.stop()
