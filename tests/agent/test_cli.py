"""The kanshi command line: check, status, incidents."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.cli import main
from agent.clock import FrozenClock
from agent.config import load_config
from agent.service import Agent
from checks.base import Result, Status
from tests.support.scripted import Script

OK, W, C, U = Status.OK, Status.WARNING, Status.CRITICAL, Status.UNKNOWN


def write_config(tmp_path: Path, checks_yaml: str) -> Path:
    path = tmp_path / "kanshi.yaml"
    path.write_text(textwrap.dedent("""
        agent: {name: host1, state_dir: state, timezone: Asia/Tokyo}
        notifiers: [{name: pager, type: recording}]
    """) + textwrap.dedent(checks_yaml), encoding="utf-8")
    return path


TWO_CHECKS = """
checks:
  - {name: web, type: scripted, script: web}
  - {name: db, type: scripted, script: db}
  - {name: spare, type: scripted, script: spare, enabled: false}
"""


@pytest.mark.parametrize(("web", "db", "code"), [
    pytest.param(OK, OK, 0, id="all-ok-0"),
    pytest.param(OK, W, 1, id="warning-1"),
    pytest.param(W, C, 2, id="critical-2"),
    pytest.param(U, W, 3, id="unknown-beats-warning-3"),
    pytest.param(U, C, 2, id="critical-beats-unknown-2"),
])
def test_check_all_exits_with_the_nagios_code_of_the_worst_result(
        tmp_path: Path, scripted: dict[str, Script], capsys: pytest.CaptureFixture[str],
        web: Status, db: Status, code: int) -> None:
    scripted.update(web=Script({"w1": web}), db=Script({"d1": db}), spare=Script({"o": C}))
    path = write_config(tmp_path, TWO_CHECKS)
    assert main(["check", "--all", "-c", str(path)]) == code
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["CHECK", "TARGET", "STATUS", "MESSAGE"]
    assert [line.split()[:3] for line in out[1:]] == [["web", "w1", web.name],
                                                      ["db", "d1", db.name]]


def test_check_by_name_runs_only_that_check_even_if_disabled(
        tmp_path: Path, scripted: dict[str, Script], capsys: pytest.CaptureFixture[str]) -> None:
    scripted.update(web=Script({"w1": OK}), db=Script({"d1": C}), spare=Script({"o": W}))
    path = write_config(tmp_path, TWO_CHECKS)
    assert main(["check", "spare", "-c", str(path), "--json"]) == 1
    (result,) = json.loads(capsys.readouterr().out)
    assert (result["check"], result["target"], result["status"]) == ("spare", "o", "WARNING")


def test_check_of_an_unknown_name_says_what_exists(
        tmp_path: Path, scripted: dict[str, Script], capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, TWO_CHECKS)
    with pytest.raises(SystemExit) as exited:
        main(["check", "nope", "-c", str(path)])
    assert exited.value.code == 3
    assert "no such check: nope (configured: web, db, spare)" in capsys.readouterr().err


def test_check_does_not_touch_the_agents_state(
        tmp_path: Path, scripted: dict[str, Script]) -> None:
    scripted.update(web=Script({"w1": C}), db=Script({"d1": C}), spare=Script({"o": C}))
    path = write_config(tmp_path, TWO_CHECKS)
    main(["check", "--all", "-c", str(path)])
    assert not (tmp_path / "state").exists()


def test_a_check_that_crashes_is_unknown_in_the_table(
        tmp_path: Path, scripted: dict[str, Script], capsys: pytest.CaptureFixture[str]) -> None:
    def boom() -> list[Result]:
        raise OSError(5, "Input/output error")

    scripted.update(web=Script(boom))
    path = write_config(tmp_path, "checks: [{name: web, type: scripted, script: web}]\n")
    assert main(["check", "web", "-c", str(path)]) == 3
    assert "(check)  UNKNOWN  check failed: OSError: [Errno 5] Input/output error" in \
        capsys.readouterr().out


def populate(tmp_path: Path, scripted: dict[str, Script]) -> Path:
    """A store with one open incident and one resolved, as a stopped agent leaves it."""
    scripted.update(web=Script({"w1": C}), db=Script({"d1": C}, {"d1": C}, {"d1": C},
                                                     {"d1": OK}))
    path = write_config(tmp_path, TWO_CHECKS)
    agent = Agent(load_config(path, environ={}), clock=FrozenClock())
    agent._run_id = agent.store.runs.start("host1", 999_999, "0.1.0", agent.clock.now())
    for _ in range(6):
        agent.run_check("web")
        agent.run_check("db")
        agent.dispatcher.run_once()
        agent.clock.advance(60)  # type: ignore[attr-defined]
    agent.store.runs.stop(agent._run_id, agent.clock.now())
    agent.store.close()
    return path


def test_incidents_list_shows_open_incidents_and_all_with_all(
        tmp_path: Path, scripted: dict[str, Script], capsys: pytest.CaptureFixture[str]) -> None:
    path = populate(tmp_path, scripted)
    assert main(["incidents", "-c", str(path), "list"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split()[:5] == ["ID", "STATUS", "SEV", "CHECK", "TARGET"]
    assert [r.split()[:5] for r in rows[1:]] == [["#1", "CRITICAL", "B", "web", "w1"]]
    assert main(["incidents", "-c", str(path), "list", "--all", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted((i["check"], i["resolved_at"] is None) for i in listed) == [
        ("db", False), ("web", True)]


def test_incidents_show_prints_the_timeline_and_notices(
        tmp_path: Path, scripted: dict[str, Script], capsys: pytest.CaptureFixture[str]) -> None:
    path = populate(tmp_path, scripted)
    assert main(["incidents", "-c", str(path), "show", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("incident #2: db d1 — CRITICAL, severity B, resolved 2026-11-02 10:")
    for kind in ("detected", "confirmed", "notified", "recovered", "closed"):
        assert kind in out
    notices = [line.split() for line in out.split("notices:")[1].splitlines()[2:]]
    assert [n[1:4] for n in notices] == [["pager", "problem", "delivered"],
                                         ["pager", "recovery", "delivered"]]


def test_incidents_ack_records_who_on_the_timeline_and_in_the_audit_log(
        tmp_path: Path, scripted: dict[str, Script], capsys: pytest.CaptureFixture[str]) -> None:
    path = populate(tmp_path, scripted)
    assert main(["incidents", "-c", str(path), "ack", "1", "--by", "tanaka",
                 "--comment", "looking"]) == 0
    assert "incident #1 acknowledged by tanaka" in capsys.readouterr().out
    main(["incidents", "-c", str(path), "show", "1", "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert shown["acknowledged_by"] == "tanaka"
    assert shown["timeline"][-1] | {"at": None} == {
        "at": None, "kind": "acknowledged", "status": None, "message": "looking",
        "actor": "tanaka", "data": {}}
    with pytest.raises(SystemExit) as exited:
        main(["incidents", "-c", str(path), "ack", "2"])
    assert exited.value.code == 1
    assert "already resolved" in capsys.readouterr().err


def test_status_reports_a_stopped_agent_and_the_latest_results(
        tmp_path: Path, scripted: dict[str, Script], capsys: pytest.CaptureFixture[str]) -> None:
    path = populate(tmp_path, scripted)
    assert main(["status", "-c", str(path)]) == 1, "exit 1: the agent is not running"
    out = capsys.readouterr().out
    assert out.startswith("agent:      stopped at 2026-11-02 10:")
    assert "targets:    1 OK, 0 WARNING, 1 CRITICAL, 0 UNKNOWN" in out
    assert "incidents:  1 open (0 acknowledged)" in out
    assert "notices:    0 pending, 0 sending, 3 delivered, 0 failed, 0 expired" in out


def test_status_without_any_state_says_the_agent_never_ran(tmp_path: Path) -> None:
    path = tmp_path / "kanshi.yaml"
    path.write_text("agent: {state_dir: state}\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "agent.cli", "status", "-c", str(path)],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ})
    assert done.returncode == 1
    assert "the agent has not run with this config yet" in done.stderr
    assert not (tmp_path / "state").exists()


def test_the_config_option_works_after_the_action_too(
        tmp_path: Path, scripted: dict[str, Script], capsys: pytest.CaptureFixture[str]) -> None:
    path = populate(tmp_path, scripted)
    assert main(["incidents", "show", "2", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    recovered = next(line for line in out.splitlines() if " recovered " in line)
    assert " OK " in recovered, "an OK status on the timeline is shown, not blank"


def test_reading_commands_never_write_the_store(
        tmp_path: Path, scripted: dict[str, Script], capsys: pytest.CaptureFixture[str]) -> None:
    path = populate(tmp_path, scripted)
    db = tmp_path / "state" / "kanshi.db"
    before = db.read_bytes()
    for argv in (["status"], ["incidents", "list", "--all"], ["incidents", "show", "1"]):
        main([*argv[:1], "-c", str(path), *argv[1:]])
    assert db.read_bytes() == before
    assert not (tmp_path / "state" / "kanshi.db-wal").exists() or \
        (tmp_path / "state" / "kanshi.db-wal").stat().st_size == 0


def test_a_store_from_a_newer_kanshi_is_refused_with_a_message(
        tmp_path: Path, scripted: dict[str, Script], capsys: pytest.CaptureFixture[str]) -> None:
    path = populate(tmp_path, scripted)
    with sqlite3.connect(tmp_path / "state" / "kanshi.db") as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (99, 'later')")
    with pytest.raises(SystemExit) as exited:
        main(["status", "-c", str(path)])
    assert exited.value.code == 1
    assert "written by a newer kanshi (schema 99" in capsys.readouterr().err


def test_a_file_that_is_not_a_kanshi_store_is_refused_with_a_message(
        tmp_path: Path, scripted: dict[str, Script], capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, "checks: []\n")
    (tmp_path / "state").mkdir()
    with sqlite3.connect(tmp_path / "state" / "kanshi.db") as conn:
        conn.execute("CREATE TABLE check_state (x)")
    with pytest.raises(SystemExit) as exited:
        main(["incidents", "-c", str(path), "list"])
    assert exited.value.code == 1
    assert "is not a kanshi store" in capsys.readouterr().err


def test_check_all_with_nothing_enabled_is_unknown(
        tmp_path: Path, scripted: dict[str, Script], capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, "checks: [{name: a, type: scripted, script: a, "
                                  "enabled: false}]\n")
    with pytest.raises(SystemExit) as exited:
        main(["check", "--all", "-c", str(path)])
    assert exited.value.code == 3
    assert "no check is enabled" in capsys.readouterr().err
