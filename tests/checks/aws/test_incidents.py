"""The cloudwatch check inside the real agent (moto for AWS): incidents open on a
confirmed breach, recover when the metric does, and close with a note when the
resource is gone — never a false alert for it."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

import checks
from agent.clock import FrozenClock
from agent.config import load_config
from agent.service import Agent
from tests.checks.aws.conftest import REGION, START, client, put, run_instances
from tests.support.scripted import RecordingNotifier, Script

pytestmark = pytest.mark.usefixtures("aws")


@pytest.fixture
def agent(tmp_path: Path, scripted: dict[str, Script],
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Agent]:
    monkeypatch.setitem(checks.REGISTRY, "cloudwatch", "checks.cloudwatch:CloudWatchCheck")
    path = tmp_path / "kanshi.yaml"
    path.write_text(textwrap.dedent(f"""
        agent: {{name: watcher, state_dir: state}}
        defaults: {{flapping: {{enabled: false}}}}
        notifiers: [{{name: pager, type: recording}}]
        checks:
          - name: aws
            type: cloudwatch
            interval: 5m
            retry_interval: 5m
            max_attempts: 2
            accounts: [{{name: prod, regions: [{REGION}]}}]
            tags: {{Env: prod}}
            components: [ec2]
            discovery_interval: 5m
            overrides:
              - {{component: ec2, enabled: false}}
              - {{component: ec2, item: cpu, enabled: true}}
        """), encoding="utf-8")
    running = Agent(load_config(path, environ={}), clock=FrozenClock(START))
    yield running
    running.store.close()


def cycle(agent: Agent, cpu: dict[str, float]) -> None:
    """Put this period's CPU of each instance, run the check, deliver, move 5 minutes."""
    clock = agent.clock
    for instance, value in cpu.items():
        # 4 minutes ago: inside the newest complete 5-minute period (now is hh:m7:30).
        put("AWS/EC2", "CPUUtilization", {"InstanceId": instance}, value,
            clock.now() - timedelta(minutes=4))
    agent.run_check("aws")
    agent.dispatcher.run_once()
    clock.advance(300)  # type: ignore[attr-defined]


def sent() -> list[str]:
    return [f"{a.kind}:{a.target.split('/')[2]}:{a.status}"
            for a in RecordingNotifier.sent.get("pager", [])]


def test_a_breach_opens_an_incident_a_recovery_closes_it_and_a_gone_resource_closes_quietly(
        agent: Agent) -> None:
    web, batch = run_instances(2, {"Env": "prod"})

    cycle(agent, {web: 95.0, batch: 97.0})
    cycle(agent, {web: 95.0, batch: 97.0})
    assert sorted(sent()) == sorted([f"problem:{batch}:CRITICAL", f"problem:{web}:CRITICAL"])

    client("ec2").terminate_instances(InstanceIds=[batch])
    cycle(agent, {web: 20.0})
    cycle(agent, {web: 20.0})

    assert sent()[2:] == [f"vanished:{batch}:OK", f"recovery:{web}:OK"]
    incidents = {i.target: i for i in agent.store.incidents.find(open_only=False)}
    gone = incidents[f"{REGION}/ec2/{batch}/cpu"]
    assert gone.resolved_at is not None
    events = [e.message for e in agent.store.incidents.events(gone.id)]
    assert "the check no longer reports this target" in events
    assert all(i.resolved_at is not None for i in incidents.values())
