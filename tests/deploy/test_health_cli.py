"""`kanshi health` — the HEALTHCHECK's probe: 0 while the heartbeat is fresh, else 1."""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.cli import _config_option
from agent.cli.health import add_parser, health, judge
from agent.store.runs import AgentRun
from tests.support.agents import StartAgent

NOW = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kanshi")
    add_parser(parser.add_subparsers(dest="command"), _config_option)
    return parser.parse_args(["health", *argv])


def run(pid: int = os.getpid(), seen: float = 5, stopped: bool = False,
        host: str = os.uname().nodename) -> AgentRun:
    return AgentRun(1, host, pid, "test", NOW - timedelta(hours=1), NOW - timedelta(seconds=seen),
                    NOW if stopped else None)


@pytest.mark.parametrize(("agent_run", "code", "says"), [
    pytest.param(run(), 0, "healthy: pid", id="fresh"),
    pytest.param(None, 1, "never run", id="never-started"),
    pytest.param(run(stopped=True), 1, "clean stop", id="stopped"),
    pytest.param(run(seen=91), 1, "last heartbeat 1m ago", id="stale"),
    pytest.param(run(pid=2**22 + 1), 1, "is gone", id="process-gone"),
    pytest.param(run(pid=2**22 + 1, host="other-container"), 0, "healthy", id="other-host"),
])
def test_the_verdict_on_the_latest_run(agent_run: AgentRun | None, code: int,
                                       says: str) -> None:
    line, exit_code = judge(agent_run, 90.0, NOW)
    assert exit_code == code and says in line


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "kanshi.yaml"
    path.write_text(f"agent: {{name: testhost, state_dir: {tmp_path / 'state'}}}\n"
                    "api: {enabled: false}\n")
    return path


def test_a_running_agent_is_healthy_and_a_stopped_one_not(
        tmp_path: Path, start_agent: StartAgent, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    agent = start_agent(config.read_text())
    assert health(parse("-c", str(config))) == 0
    assert capsys.readouterr().out.startswith("healthy: pid")
    agent.stop()
    assert health(parse("-c", str(config), "--quiet")) == 1
    assert capsys.readouterr().out == ""


def test_no_state_and_a_broken_config_are_unhealthy_not_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    with pytest.raises(SystemExit) as no_state:
        health(parse("-c", str(config)))
    assert no_state.value.code == 1
    config.write_text("agent: {heartbeat: soon}\n")
    with pytest.raises(SystemExit) as broken:
        health(parse("-c", str(config)))
    assert broken.value.code == 1, "Docker reserves exit code 2"
    assert "problem" in capsys.readouterr().err
