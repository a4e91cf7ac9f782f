"""Reports from the timeline: failure / post-incident (md, html; ja, en) and monthly;
and the CLI for reports, maintenance windows and severities."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.cli import main
from agent.reports.incident import incident_report
from agent.reports.monthly import monthly_context, monthly_report
from agent.service import Agent
from checks.base import Status
from tests.support.frozen import MakeAgent, minute
from tests.support.scripted import RecordingNotifier, Script

JST = ZoneInfo("Asia/Tokyo")
C, OK = Status.CRITICAL, Status.OK

CONFIG = """
agent: {name: web01, state_dir: state}
plan: {name: SkyArch Gold}
business_hours: {start: "10:00", end: "18:00"}
defaults: {flapping: {enabled: false}}
outbox: {retry_initial: 1m, retry_max: 1m}
notifiers:
  - {name: pager, type: recording, locale: ja}
  - {name: ops, type: recording, audience: operators}
checks:
  - {name: web, type: scripted, script: web, interval: 1m, max_attempts: 1, notify: [pager]}
"""


def jst(*args: int) -> datetime:
    return datetime(*args, tzinfo=JST)  # type: ignore[misc]


@pytest.fixture
def story(frozen_agent: MakeAgent, scripted: dict[str, Script]) -> Agent:
    """Friday 2026-11-20: down 17:45–18:28 with an <script> in its message."""
    def down() -> list[object]:
        from checks.base import Result
        return [Result(C, "HTTP 503 <script>alert(1)</script> | upstream", "a")]

    scripted["web"] = Script(*([down] * 43 + [{"a": OK}] * 3))
    agent = frozen_agent(CONFIG, jst(2026, 11, 20, 17, 45))
    for i in range(46):
        if i == 5:
            agent.store.incidents.add_event(1, agent.clock.now(), "acknowledged",
                                            actor="tanaka", message="looking")
        minute(agent, "web")
    return agent


def test_the_post_incident_report_tells_the_story_from_the_timeline(story: Agent) -> None:
    incident = story.store.incidents.get(1)
    assert incident is not None and not incident.is_open
    made = incident_report(story.config, story.store, incident, story.clock.now(), "en")
    text = made.text
    assert made.kind == "post_incident"
    assert text.startswith("# Post-incident report: incident #1")
    assert "| Detected | 2026-11-20 17:45 JST |" in text
    assert "| Recovered | 2026-11-20 18:28 JST |" in text
    assert "| Outage | 43m |" in text
    assert "| 2026-11-20 17:50 JST | acknowledged | tanaka | looking |" in text
    assert "Recovery → written report | running | due 2026-11-25 18:00 JST" in text
    assert "## Cause" in text and "## Prevention" in text
    assert "(43 results) CRITICAL: HTTP 503" in text
    assert "\\| upstream" in text, "a pipe in a message does not break the table"


def test_the_report_in_japanese_and_as_html(story: Agent) -> None:
    incident = story.store.incidents.get(1)
    assert incident is not None
    ja = incident_report(story.config, story.store, incident, story.clock.now(), "ja").text
    assert ja.startswith("# 障害報告書（インシデント #1）")
    assert "| 障害時間 | 43分 |" in ja and "## 再発防止策" in ja
    page = incident_report(story.config, story.store, incident, story.clock.now(), "ja",
                           fmt="html").text
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_a_failure_report_can_be_written_while_the_incident_is_open(
        frozen_agent: MakeAgent, scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C})
    agent = frozen_agent(CONFIG, jst(2026, 11, 20, 11, 0))
    for _ in range(10):
        minute(agent, "web")
    incident = agent.store.incidents.get(1)
    assert incident is not None
    text = incident_report(agent.config, agent.store, incident, agent.clock.now(), "en").text
    assert text.startswith("# Failure report: incident #1")
    assert "| Outage | 10m so far |" in text


def test_the_monthly_report_counts_incidents_clocks_availability_and_downtime(
        story: Agent) -> None:
    run = story._run_id
    assert run is not None
    story.store.runs.stop(run, story.clock.now())
    restart = jst(2026, 11, 22, 20, 0)     # down from Friday 18:31 to Sunday 20:00
    second = story.store.runs.start("testhost", 2, "test", restart)
    story.store.runs.beat(second, jst(2026, 11, 30, 12, 0))  # alive since
    context = monthly_context(story.config, story.store, date(2026, 11, 1),
                              jst(2026, 11, 30, 12, 0))
    assert context["by_severity"] == {"B": 1}
    assert context["clocks"]["first_notice"]["met"] == 1
    (web,) = [a for a in context["availability"] if a.check == "web"]
    assert web.outage_seconds == 43 * 60 and web.incidents == 1
    assert round(web.percent, 3) == round(100 * (1 - 43 * 60 / web.counted_seconds), 3)
    (gap,) = context["downtime"]
    assert (gap.start.astimezone(JST), gap.end.astimezone(JST)) == (
        jst(2026, 11, 20, 18, 31), restart)
    assert context["full_days"] == 2, "NTT refunds per full 24 h"
    text = monthly_report(story.config, story.store, date(2026, 11, 1),
                          jst(2026, 11, 30, 12, 0), "ja")
    assert text.startswith("# 月次サービス報告書（2026年11月）")
    assert "24時間以上の連続停止: 2 日分" in text


def test_report_send_queues_it_and_its_delivery_stops_the_clock(
        story: Agent, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    story.store.close()
    path = str(tmp_path / "kanshi.yaml")
    assert main(["report", "incident", "1", "-c", path, "--send"]) == 0
    assert "queued for pager" in capsys.readouterr().err
    agent = Agent(story.config, clock=story.clock)
    # The command queued it on the wall clock; bring the frozen clock up to then.
    story.clock.advance((datetime.now(JST) - story.clock.now()).total_seconds() + 1)  # type: ignore[attr-defined]
    try:
        agent.dispatcher.run_once()
        sent = RecordingNotifier.sent["pager"][-1]
        assert sent.kind == "post_incident_report"
        assert sent.subject.startswith("【障害報告書】#1"), "in the channel's language"
        assert "## 再発防止策" in sent.body
        incident = agent.store.incidents.get(1)
        assert incident is not None
        clocks = {c.name: c for c in agent.contract.clocks(
            incident, agent.store.incidents.events(1), agent.clock.now())}
        assert clocks["post_incident_report"].state == "met"
        assert clocks["failure_report"].stopped is not None, \
            "a post-incident report sent first also answers the failure report"
        assert "ops" not in RecordingNotifier.sent or all(
            a.kind != "post_incident_report" for a in RecordingNotifier.sent["ops"])
    finally:
        agent.store.close()


def test_the_reports_tell_which_runbooks_ran_and_their_steps(story: Agent) -> None:
    runs = story.store.runbooks
    at = jst(2026, 11, 20, 17, 47)
    run = runs.create(runbook="service-down", target="web01", params={}, trigger="auto",
                      incident_id=1, requested_by="kanshi", dry_run=False, state="escalated",
                      scheduled_for=at, now=at)
    step = runs.step_started(run, 1, "restart", "service.restart", 1, {"unit": "nginx"}, at,
                             budget_key=None, resumable=False)
    runs.step_finished(step, "failed", at, changed=True, outputs={}, summary="",
                       error="nginx | still failed")
    runs.create(runbook="disk-full", target="web01", params={}, trigger="manual",
                incident_id=None, requested_by="op", dry_run=True, state="succeeded",
                scheduled_for=at, now=at)
    incident = story.store.incidents.get(1)
    assert incident is not None

    text = incident_report(story.config, story.store, incident, story.clock.now(), "en").text
    month = monthly_report(story.config, story.store, date(2026, 11, 1),
                           jst(2026, 11, 30, 12, 0), "en")

    assert f"### Run #{run}: service-down on web01 (auto) — escalated" in text
    assert ("| 2026-11-20 17:47 JST | 1 | restart | service.restart | failed (changed) |"
            " nginx \\| still failed |") in text
    assert "| service-down | auto | 1 | escalated 1 |" in month
    assert "| disk-full | dry run | 1 | succeeded 1 |" in month


def test_a_message_cannot_become_markup_in_the_report(
        frozen_agent: MakeAgent, scripted: dict[str, Script]) -> None:
    from checks.base import Result

    evil = "see [help](http://evil.example) ![x](http://evil.example/p.png) *bold* `code`"
    scripted["web"] = Script(lambda: [Result(C, evil, "a")])
    agent = frozen_agent(CONFIG, jst(2026, 11, 20, 11, 0))
    for _ in range(3):
        minute(agent, "web")
    incident = agent.store.incidents.get(1)
    assert incident is not None

    page = incident_report(agent.config, agent.store, incident, agent.clock.now(), "en",
                           fmt="html").text

    assert "<a " not in page and "<img" not in page and "<em>bold</em>" not in page \
        and "<code>code</code>" not in page
    assert "[help](http://evil.example)" in page, "the text itself is kept, as text"


def test_the_report_ends_its_evidence_and_recovery_where_the_incident_ended(
        frozen_agent: MakeAgent, scripted: dict[str, Script]) -> None:
    from agent.reports.incident import recovery_time

    scripted["web"] = Script(*([{"a": C}] * 5 + [{"a": OK}] * 2 + [{"a": C}] * 3))
    agent = frozen_agent(CONFIG, jst(2026, 11, 20, 11, 0))
    for _ in range(10):
        minute(agent, "web")
    first = agent.store.incidents.get(1)
    assert first is not None and not first.is_open
    text = incident_report(agent.config, agent.store, first, agent.clock.now(), "en").text
    assert "(5 results) CRITICAL" in text, "the next incident's results are not evidence"
    assert "(8 results)" not in text and "(3 results)" not in text
    events = agent.store.incidents.events(1)
    quiet = [e for e in events if e.kind == "recovered"]
    assert recovery_time(first, events) == quiet[-1].at
    # A quiet recovery while flapping (not notified) does not end anything.
    agent.store.incidents.add_event(1, agent.clock.now(), "recovered", status=OK,
                                    data={"notified": False, "reason": "flapping"})
    assert recovery_time(first, agent.store.incidents.events(1)) == quiet[-1].at


def test_availability_counts_critical_time_only_and_not_the_agents_downtime() -> None:
    from datetime import timedelta

    from agent.policy.clocks import Interval
    from agent.reports.monthly import critical_periods
    from agent.store.incidents import Event

    def at(minutes: int) -> datetime:
        return jst(2026, 11, 20, 11, 0) + timedelta(minutes=minutes)

    def event(minutes: int, kind: str, status: Status | None) -> Event:
        return Event(0, 1, at(minutes), kind, status, "", None, {})

    events = [event(0, "detected", Status.WARNING), event(10, "status_changed", C),
              event(15, "acknowledged", None), event(30, "status_changed", Status.WARNING),
              event(40, "status_changed", C), event(50, "recovered", OK)]

    assert critical_periods(events, at(90)) == [Interval(at(10), at(30), "critical"),
                                                Interval(at(40), at(50), "critical")]
    assert critical_periods(events[:5], at(90))[-1] == Interval(at(40), at(90), "critical")


def test_a_run_that_died_without_a_word_is_downtime_until_now() -> None:
    from datetime import timedelta

    from agent.policy.contract import agent_downtime
    from agent.store.runs import AgentRun

    start = jst(2026, 11, 20, 11, 0)
    died = AgentRun(1, "h", 1, "v", start, start + timedelta(hours=1), None)

    (gap,) = agent_downtime([died], start + timedelta(hours=5), timedelta(minutes=3))
    assert (gap.start, gap.end) == (start + timedelta(hours=1), start + timedelta(hours=5))
    assert gap.reason == "agent not answering (no heartbeat)"
    assert agent_downtime([died], start + timedelta(hours=1, minutes=2),
                          timedelta(minutes=3)) == [], "a beat or two late is not down"


def test_a_long_outage_counts_its_full_days_in_the_month_it_ended(
        frozen_agent: MakeAgent, scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": OK})
    agent = frozen_agent(CONFIG, jst(2026, 10, 30, 12, 0))
    minute(agent, "web")
    assert agent._run_id is not None
    agent.store.runs.stop(agent._run_id, jst(2026, 10, 30, 12, 1))
    back = agent.store.runs.start("testhost", 2, "test", jst(2026, 11, 2, 13, 0))
    agent.store.runs.beat(back, jst(2026, 11, 30, 12, 0))

    october = monthly_context(agent.config, agent.store, date(2026, 10, 1),
                              jst(2026, 11, 30, 12, 0))
    november = monthly_context(agent.config, agent.store, date(2026, 11, 1),
                               jst(2026, 11, 30, 12, 0))

    assert october["full_days"] == 0 and november["full_days"] == 3, \
        "3 full days over the whole gap, credited once, when it ended"
    assert len(october["downtime"]) == len(november["downtime"]) == 1


def test_maintenance_and_severity_from_the_command_line(
        story: Agent, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    story.store.close()
    path = str(tmp_path / "kanshi.yaml")
    assert main(["maintenance", "add", "-c", path, "--target", "web/a", "--target", "disk",
                 "--from", "2030-01-05T02:00", "--for", "2h", "--reason", "disk swap",
                 "--by", "tanaka"]) == 0
    assert "maintenance window #1: web/a, disk from 2030-01-05 02:00:00" in \
        capsys.readouterr().out
    assert main(["maintenance", "list", "-c", path, "--days", "100000"]) == 0
    listed = capsys.readouterr().out.splitlines()[1].split()
    assert listed[:4] == ["#1", "planned", "web/a,", "disk"]
    assert main(["maintenance", "end", "-c", path, "1"]) == 0
    with pytest.raises(SystemExit):
        main(["maintenance", "end", "-c", path, "1"])
    assert "no open maintenance window #1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["incidents", "severity", "1", "-c", path, "--to", "A",
              "--reason", "customer says checkout is down", "--by", "suzuki"])
    assert "is resolved: its record is final" in capsys.readouterr().err
    assert main(["incidents", "show", "1", "-c", path, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["severity"] == "B"
    assert {c["name"] for c in shown["clocks"]} == {
        "first_notice", "failure_report", "first_response", "post_incident_report"}
