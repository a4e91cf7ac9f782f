"""The dispatcher's worker threads: channels never hold each other up; stopping is
bounded; notices a stopped or dead sender held are sent again."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from agent.config import load_config
from agent.service import Agent
from checks.base import Status
from notifiers.base import NotifierError
from tests.support.scripted import RecordingNotifier, Script
from tests.support.stores import store_yaml
from tests.support.wait import wait_for


@pytest.fixture
def make_agent(tmp_path: Path, scripted: dict[str, Script],
               store_url: str | None) -> Iterator[Callable[[], Agent]]:
    path = tmp_path / "kanshi.yaml"
    path.write_text(textwrap.dedent("""
        agent: {name: host1, state_dir: state}
        outbox: {retry_initial: 0.2s, retry_max: 0.5s}
        notifiers:
          - {name: slow, type: recording}
          - {name: fast, type: recording}
        checks: []
    """) + store_yaml(store_url), encoding="utf-8")
    agents: list[Agent] = []

    def make() -> Agent:
        agent = Agent(load_config(path, environ={}), share_work=False)
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        agent.dispatcher.stop(timeout=5)
        agent.store.close()


def enqueue(agent: Agent, count: int) -> None:
    now = agent.clock.now()
    for i in range(count):
        incident = agent.store.incidents.create("web", f"t{i}", Status.CRITICAL, "B", "down",
                                                now)
        fields = {"kind": "problem", "incident_id": incident, "dedup_key": f"web/t{i}",
                  "host": "host1", "check": "web", "target": f"t{i}", "status": "CRITICAL",
                  "previous_status": "OK", "severity": "B", "message": "down",
                  "detected_at": now, "at": now, "attempts": 3, "outage_seconds": None,
                  "flap_percent": None}
        agent.outbox.enqueue(fields, ["slow", "fast"], event_id=None)


def test_a_slow_failing_channel_does_not_hold_up_the_others(
        make_agent: Callable[[], Agent]) -> None:
    RecordingNotifier.delays["slow"] = 1.0
    RecordingNotifier.failures["slow"] = NotifierError("timed out after 1 s")
    agent = make_agent()
    enqueue(agent, 30)
    agent.dispatcher.start()
    assert wait_for(lambda: len(RecordingNotifier.sent.get("fast", [])) == 30, timeout=10)
    tried_slow = sum(n.attempts for i in range(1, 31)
                     for n in agent.store.notifications.for_incident(i) if n.channel == "slow")
    assert tried_slow < 15, "the slow channel is still crawling through its own queue"


def test_stopping_waits_for_the_send_in_flight_and_gives_back_the_rest(
        make_agent: Callable[[], Agent]) -> None:
    RecordingNotifier.delays["slow"] = 0.5
    agent = make_agent()
    enqueue(agent, 5)
    agent.dispatcher.start()
    assert wait_for(lambda: len(RecordingNotifier.sent.get("slow", [])) >= 1)
    started = time.monotonic()
    assert agent.dispatcher.stop(timeout=10) is True
    assert time.monotonic() - started < 5  # sanity: it did not wait for all five
    states = agent.store.notifications.counts()
    assert states.get("sending", 0) == 0, "nothing is left claimed by a stopped worker"
    delivered_slow = len(RecordingNotifier.sent["slow"])
    assert delivered_slow < 5

    second = make_agent()
    second.dispatcher.start()
    assert wait_for(lambda: len(RecordingNotifier.sent["slow"]) == 5)
    assert len(RecordingNotifier.sent["fast"]) == 5, "and nothing twice"


def test_notices_left_claimed_by_a_dead_process_are_sent_at_the_next_start(
        make_agent: Callable[[], Agent]) -> None:
    agent = make_agent()
    enqueue(agent, 3)
    now = agent.clock.now()
    claimed = agent.store.notifications.claim_due(now, now + timedelta(minutes=5), 10, "slow")
    assert len(claimed) == 3  # as if a sender died holding them (lease 5 min)
    agent.dispatcher.start()
    assert wait_for(lambda: len(RecordingNotifier.sent.get("slow", [])) == 3, timeout=5), \
        "sent at once, not after the five-minute lease"
