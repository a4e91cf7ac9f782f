"""An agent on a frozen clock, driven step by step (no scheduler threads)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from agent.clock import FrozenClock
from agent.config import load_config
from agent.service import Agent
from tests.support.stores import store_yaml

MakeAgent = Callable[..., Agent]


@pytest.fixture
def frozen_agent(tmp_path: Path, store_url: str | None) -> Iterator[MakeAgent]:
    """``frozen_agent(yaml, start=datetime)``: an Agent whose clock moves only when
    ``agent.clock.advance(s)`` is called; its run is recorded as started. Runs on
    both store backends (``store_url``)."""
    agents: list[Agent] = []

    def make(text: str, start: datetime | None = None, *, record_run: bool = True) -> Agent:
        path = tmp_path / "kanshi.yaml"
        path.write_text(textwrap.dedent(text) + store_yaml(store_url), encoding="utf-8")
        agent = Agent(load_config(path, environ={}), clock=FrozenClock(start), share_work=False)
        if record_run:
            agent._run_id = agent.store.runs.start("testhost", 1, "test", agent.clock.now())
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        agent.store.close()


def minute(agent: Agent, *checks: str, seconds: float = 60.0) -> None:
    """Run ``checks``, the policy and the outbox once, then move the clock on."""
    for name in checks:
        agent.run_check(name)
    agent.policy.tick()
    agent.dispatcher.run_once()
    if agent._run_id is not None:
        agent.store.runs.beat(agent._run_id, agent.clock.now())
    agent.clock.advance(seconds)  # type: ignore[attr-defined]
