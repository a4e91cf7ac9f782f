"""The contract's clock, live: SLO/SLA clocks, exclusions, escalation, maintenance.

Everything runs on a frozen clock through the real agent (checks → incidents →
policy → outbox); only the monitored system is scripted.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from agent.policy.contract import Contract
from agent.service import Agent
from checks.base import Status
from notifiers.base import NotifierError
from tests.support.frozen import MakeAgent, minute
from tests.support.scripted import RecordingNotifier, Script

JST = ZoneInfo("Asia/Tokyo")
C, OK = Status.CRITICAL, Status.OK

BASE = """
agent: {name: host1, state_dir: state}
defaults: {flapping: {enabled: false}}
outbox: {retry_initial: 1m, retry_max: 1m}
notifiers:
  - {name: pager, type: recording}
checks:
  - {name: web, type: scripted, script: web, interval: 1m, retry_interval: 1m,
     max_attempts: 1, notify: [pager]}
"""


def jst(*args: int) -> datetime:
    return datetime(*args, tzinfo=JST)  # type: ignore[misc]


def kinds(channel: str = "pager") -> list[str]:
    return [a.kind for a in RecordingNotifier.sent.get(channel, [])]


def clocks_of(agent: Agent, incident_id: int = 1) -> dict[str, object]:
    incident = agent.store.incidents.get(incident_id)
    assert incident is not None
    events = agent.store.incidents.events(incident_id)
    return {c.name: c for c in agent.contract.clocks(incident, events, agent.clock.now())}


def test_first_notice_clock_is_met_when_the_notice_is_delivered(
        frozen_agent: MakeAgent, scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C})
    agent = frozen_agent(BASE, jst(2026, 11, 16, 10, 0))
    RecordingNotifier.failures["pager"] = NotifierError("down")
    for _ in range(25):
        minute(agent, "web")
    first = clocks_of(agent)["first_notice"]
    assert first.state == "at_risk"  # 25 of 30 minutes gone (≥ 80 %), not delivered yet
    RecordingNotifier.failures["pager"] = None
    for _ in range(3):
        minute(agent, "web")
    first = clocks_of(agent)["first_notice"]
    assert first.state == "met"
    assert first.stopped is not None and first.stopped - first.started < timedelta(minutes=30)
    assert [(d.label, d.due) for d in first.deadlines] == [
        ("SLO", jst(2026, 11, 16, 10, 30)), ("SLA", jst(2026, 11, 16, 11, 0))]
    timeline = [e.kind for e in agent.store.incidents.events(1)]
    assert "clock_at_risk" in timeline and "clock_breached" not in timeline


def test_a_maintenance_window_in_the_clock_moves_the_deadline_and_is_shown(
        frozen_agent: MakeAgent, scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C})
    agent = frozen_agent(BASE + """
maintenance:
  - {name: patching, targets: ["web"], start: "2026-11-16 10:10", end: "2026-11-16 10:40",
     reason: kernel update}
""", jst(2026, 11, 16, 10, 0))
    minute(agent, "web")
    first = clocks_of(agent)["first_notice"]
    # Notified at once (10:00, before the window): met.
    assert first.state == "met"
    agent.clock.advance(15 * 60)  # type: ignore[attr-defined]
    agent.heartbeat()  # alive throughout: only the window is left out
    failure = clocks_of(agent)["failure_report"]
    # Failure report: SLO 1 h after the first notice, plus the 30 min window.
    assert [d.due for d in failure.deadlines] == [jst(2026, 11, 16, 11, 30),
                                                 jst(2026, 11, 16, 13, 30)]
    assert [(i.start, i.end) for i in failure.excluded] == [
        (jst(2026, 11, 16, 10, 10), jst(2026, 11, 16, 10, 40))]
    assert failure.excluded[0].reason == "maintenance: patching (kernel update)"


def test_the_agents_own_downtime_is_not_counted(
        frozen_agent: MakeAgent, scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C})
    agent = frozen_agent(BASE, jst(2026, 11, 16, 10, 0))
    minute(agent, "web")                                   # notified 10:00
    first_run = agent._run_id
    agent.clock.advance(5 * 60)  # type: ignore[attr-defined]
    assert first_run is not None
    agent.store.runs.beat(first_run, agent.clock.now())   # last sign of life 10:06
    agent.clock.advance(20 * 60)  # type: ignore[attr-defined]  # killed: 20 min of nothing
    agent._run_id = agent.store.runs.start("testhost", 2, "test", agent.clock.now())
    failure = clocks_of(agent)["failure_report"]
    assert failure.deadlines[0].due == jst(2026, 11, 16, 11, 20)
    assert [(i.reason, i.start, i.end) for i in failure.excluded] == [
        ("agent not running", jst(2026, 11, 16, 10, 6), jst(2026, 11, 16, 10, 26))]


def test_severity_b_first_response_counts_business_hours_only(
        frozen_agent: MakeAgent, scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C})
    agent = frozen_agent(BASE, jst(2026, 11, 20, 17, 50))   # Friday, after 17:30
    minute(agent, "web")
    response = clocks_of(agent)["first_response"]
    assert response.deadlines[0].label == "severity B"
    assert response.deadlines[0].due == jst(2026, 11, 24, 11, 0)  # Monday is a holiday
    agent.clock.advance(3 * 86400)  # type: ignore[attr-defined]  # Monday night, unacked
    assert clocks_of(agent)["first_response"].state == "running"
    agent.store.incidents.add_event(1, agent.clock.now(), "acknowledged", actor="tanaka")
    assert clocks_of(agent)["first_response"].state == "met"


def test_every_clock_recomputed_from_the_stored_timeline_equals_the_live_one(
        frozen_agent: MakeAgent, scripted: dict[str, Script]) -> None:
    scripted["web"] = Script(*([{"a": C}] * 50 + [{"a": OK}] * 5))
    agent = frozen_agent(BASE + """
maintenance:
  - {name: nightly, targets: ["*"], every: {days: [mon], start: "10:20", duration: 15m}}
""", jst(2026, 11, 16, 10, 0))
    live: list[tuple[datetime, list[object]]] = []
    for i in range(60):
        if i == 30:
            agent.store.incidents.add_event(1, agent.clock.now(), "acknowledged", actor="op")
        minute(agent, "web")
        incident = agent.store.incidents.get(1)
        assert incident is not None
        now = agent.clock.now()
        live.append((now, agent.contract.clocks(incident, agent.store.incidents.events(1),
                                                now)))
    agent.store.close()
    fresh = frozen_agent(BASE + """
maintenance:
  - {name: nightly, targets: ["*"], every: {days: [mon], start: "10:20", duration: 15m}}
""", record_run=False)
    contract = Contract(fresh.config, fresh.store)
    incident = fresh.store.incidents.get(1)
    assert incident is not None
    events = fresh.store.incidents.events(1)
    for now, clocks in live:
        # As of `now`: what happened before it (the loop computed right after moving on).
        past = [e for e in events if e.at < now]
        recomputed = contract.clocks(_as_of(incident, now), past, now)
        assert recomputed == clocks, now


def _as_of(incident: object, now: datetime) -> object:
    from dataclasses import replace

    resolved = incident.resolved_at  # type: ignore[attr-defined]
    return replace(incident, resolved_at=resolved if resolved and resolved < now else None)  # type: ignore[type-var]


ESCALATION = BASE + """
contacts:
  - {name: tanaka, notify: [tanaka-phone]}
  - {name: suzuki, notify: [suzuki-phone]}
  - {name: yoru, notify: [night-line], emergency: true}
escalation:
  - severities: ["1", "A", "B", "C"]
    levels:
      - {contacts: [tanaka], repeat: 10m, times: 2}
      - {contacts: [suzuki]}
"""
PHONES = """
  - {name: tanaka-phone, type: recording}
  - {name: suzuki-phone, type: recording}
  - {name: night-line, type: recording}
"""


def escalation_config() -> str:
    return ESCALATION.replace("  - {name: pager, type: recording}\n",
                              "  - {name: pager, type: recording}\n" + PHONES.lstrip("\n"))


def test_escalation_repeats_until_acknowledged_then_goes_up_a_level(
        frozen_agent: MakeAgent, scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C})
    agent = frozen_agent(escalation_config(), jst(2026, 11, 16, 10, 0))   # Monday, open
    for _ in range(45):
        minute(agent, "web")
    assert kinds("tanaka-phone") == ["escalation", "reminder", "reminder"]
    assert kinds("suzuki-phone") == ["escalation"]
    assert kinds("night-line") == [], "inside business hours: no emergency call"
    times = [a.at for a in RecordingNotifier.sent["tanaka-phone"]]
    assert [datetime.fromisoformat(t).astimezone(JST).strftime("%H:%M") for t in times] == [
        "10:00", "10:10", "10:20"]


def test_acknowledging_stops_the_escalation(
        frozen_agent: MakeAgent, scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C})
    agent = frozen_agent(escalation_config(), jst(2026, 11, 16, 10, 0))
    for _ in range(12):
        minute(agent, "web")
    agent.store.incidents.add_event(1, agent.clock.now(), "acknowledged", actor="tanaka")
    for _ in range(40):
        minute(agent, "web")
    chain = ("escalation", "reminder", "emergency")
    assert [k for k in kinds("tanaka-phone") if k in chain] == ["escalation", "reminder"]
    assert [k for k in kinds("suzuki-phone") if k in chain] == []


def test_outside_business_hours_the_emergency_contact_is_called_first(
        frozen_agent: MakeAgent, scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C})
    agent = frozen_agent(escalation_config(), jst(2026, 11, 21, 3, 0))   # Saturday night
    minute(agent, "web")
    assert kinds("night-line") == ["emergency"]
    incident = agent.store.incidents.get(1)
    assert incident is not None
    events = agent.store.incidents.events(1)
    assert agent.contract.needs_emergency_ack(incident, events, agent.clock.now())
    agent.store.incidents.add_event(1, agent.clock.now(), "acknowledged", actor="tanaka")
    assert agent.contract.needs_emergency_ack(incident, agent.store.incidents.events(1),
                                              agent.clock.now()), "only the emergency contact"
    agent.store.incidents.add_event(1, agent.clock.now(), "acknowledged", actor="yoru")
    assert not agent.contract.needs_emergency_ack(incident, agent.store.incidents.events(1),
                                                  agent.clock.now())


def test_after_a_restart_escalation_neither_repeats_nor_bursts(
        frozen_agent: MakeAgent, scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C})
    agent = frozen_agent(escalation_config(), jst(2026, 11, 16, 10, 0))
    minute(agent, "web")
    agent.clock.advance(40 * 60)  # type: ignore[attr-defined]  # the agent was down 40 min
    minute(agent, "web")
    assert kinds("tanaka-phone") == ["escalation"]
    assert kinds("suzuki-phone") == ["escalation"], "straight to where it should be now"
    skipped = [e for e in agent.store.incidents.events(1)
               if e.kind == "escalated" and not e.data["sent"]]
    assert len(skipped) == 2, "the two reminders it slept through are on the timeline"


MAINTENANCE = BASE + """
maintenance:
  - {name: patching, targets: ["web/a"], start: "2026-11-16 10:00", end: "2026-11-16 10:30"}
"""


def test_nothing_is_notified_during_maintenance_but_results_are_recorded(
        frozen_agent: MakeAgent, scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C}, {"a": C}, {"a": OK})
    agent = frozen_agent(MAINTENANCE, jst(2026, 11, 16, 10, 5))
    for _ in range(40):
        minute(agent, "web")
    assert kinds() == [], "opened and recovered inside the window: nobody is told"
    events = [e.kind for e in agent.store.incidents.events(1)]
    assert events.count("notice_held") == 2
    assert "notice_released" in events, "the window ended; nothing was owed to anyone"
    assert len(agent.store.checks.history("web", "a", jst(2026, 11, 16, 10, 0))) == 40


def test_an_incident_still_open_when_the_window_ends_is_notified_then(
        frozen_agent: MakeAgent, scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C})
    agent = frozen_agent(MAINTENANCE, jst(2026, 11, 16, 10, 5))
    for _ in range(24):
        minute(agent, "web")
    assert kinds() == []
    for _ in range(3):
        minute(agent, "web")
    assert kinds() == ["problem"]
    (problem,) = RecordingNotifier.sent["pager"]
    assert "began during maintenance window patching; still open after it" in problem.message
    assert datetime.fromisoformat(problem.at).astimezone(JST) == jst(2026, 11, 16, 10, 30)


def test_a_window_added_by_an_operator_silences_its_target(
        frozen_agent: MakeAgent, scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C, "b": C})
    agent = frozen_agent(BASE, jst(2026, 11, 16, 10, 0))
    agent.store.maintenance.add(("web/b",), jst(2026, 11, 16, 9, 0), jst(2026, 11, 16, 12, 0),
                                "disk swap", "tanaka", jst(2026, 11, 16, 9, 0))
    minute(agent, "web")
    assert [a.target for a in RecordingNotifier.sent["pager"]] == ["a"]


def change_severity(agent: Agent, to: str) -> None:
    incident = agent.store.incidents.get(1)
    assert incident is not None
    agent.store.incidents.add_event(1, agent.clock.now(), "severity_changed", actor="op",
                                    data={"from": incident.severity, "to": to})
    agent.store.incidents.update(1, severity=to)


def test_an_operator_can_change_the_severity_and_the_clocks_follow(
        frozen_agent: MakeAgent, scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C})
    agent = frozen_agent(BASE, jst(2026, 11, 16, 10, 0))
    minute(agent, "web")
    change_severity(agent, "A")
    assert clocks_of(agent)["first_response"].deadlines[0].label == "severity A"
    assert clocks_of(agent)["first_response"].deadlines[0].due == jst(2026, 11, 16, 11, 0)


def test_lowering_the_severity_after_a_miss_does_not_unmiss_it(
        frozen_agent: MakeAgent, scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C})
    agent = frozen_agent(BASE.replace("max_attempts: 1", "max_attempts: 1, severity: A"),
                         jst(2026, 11, 21, 2, 0))     # Saturday night, severity A: 1 h 24/7
    minute(agent, "web")
    agent.clock.advance(2 * 3600)  # type: ignore[attr-defined]   # 04:01: missed at 03:00
    agent.heartbeat()
    change_severity(agent, "C")                                  # C: 4 business hours
    agent.clock.advance(3 * 86400)  # type: ignore[attr-defined]
    agent.heartbeat()
    agent.store.incidents.add_event(1, agent.clock.now(), "acknowledged", actor="op")
    response = clocks_of(agent)["first_response"]
    assert response.state == "breached"
    assert response.deadlines[0].label == "severity A"


def test_an_operator_window_cannot_cover_the_past(
        frozen_agent: MakeAgent, scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C})
    agent = frozen_agent(BASE, jst(2026, 11, 16, 10, 0))
    RecordingNotifier.failures["pager"] = NotifierError("down")
    for _ in range(70):
        minute(agent, "web")
    assert clocks_of(agent)["first_notice"].state == "breached"
    agent.store.maintenance.add(("web",), jst(2026, 11, 16, 9, 0), jst(2026, 11, 16, 12, 0),
                                "after the fact", "mallory", agent.clock.now())
    assert clocks_of(agent)["first_notice"].state == "breached"


def test_a_clock_that_starts_at_the_next_business_time(
        frozen_agent: MakeAgent, scripted: dict[str, Script]) -> None:
    # OZ MODE: requests outside business hours (weekdays 9:30–18:30) count from the
    # next business day.
    scripted["web"] = Script({"a": C})
    agent = frozen_agent(BASE + """
business_hours: {start: "09:30", end: "18:30"}
clocks:
  failure_report: {slo: 1h, sla: 3h, basis: business, starts: next_business_time}
""", jst(2026, 11, 21, 3, 0))   # Saturday night; Monday 11/23 is a holiday
    minute(agent, "web")
    failure = clocks_of(agent)["failure_report"]
    assert failure.started == jst(2026, 11, 24, 9, 30)
    assert [d.due for d in failure.deadlines] == [jst(2026, 11, 24, 10, 30),
                                                 jst(2026, 11, 24, 12, 30)]


def test_a_recovery_held_by_a_window_is_sent_when_the_window_ends(
        frozen_agent: MakeAgent, scripted: dict[str, Script]) -> None:
    # Told at 09:55; the window 10:00-10:30 holds the recovery (10:10); it goes at 10:30.
    scripted["web"] = Script(*([{"a": C}] * 15 + [{"a": OK}]))
    agent = frozen_agent(MAINTENANCE, jst(2026, 11, 16, 9, 55))
    for _ in range(40):
        minute(agent, "web")
    assert kinds() == ["problem", "recovery"]
    recovery = RecordingNotifier.sent["pager"][1]
    assert datetime.fromisoformat(recovery.at).astimezone(JST) == jst(2026, 11, 16, 10, 30)
    assert recovery.status == "OK" and recovery.outage_seconds == 15 * 60
    assert "recovered during maintenance window patching" in recovery.message


def test_escalation_counts_from_when_the_problem_was_told_not_from_the_window(
        frozen_agent: MakeAgent, scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C})
    config = escalation_config() + """
maintenance:
  - {name: patching, targets: ["web/a"], start: "2026-11-16 10:00", end: "2026-11-16 11:00"}
"""
    agent = frozen_agent(config, jst(2026, 11, 16, 10, 5))
    for _ in range(60):
        minute(agent, "web")
    assert kinds("tanaka-phone") == ["escalation"], "level 1 first, at 11:00 - not the boss"
    assert kinds("suzuki-phone") == []


def test_the_emergency_contact_is_called_when_the_office_closes_on_an_open_incident(
        frozen_agent: MakeAgent, scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C})
    agent = frozen_agent(escalation_config().replace("repeat: 10m, times: 2",
                                                     "repeat: 4h, times: 9"),
                         jst(2026, 11, 16, 17, 20))   # Monday; closes 17:30
    for _ in range(15):
        minute(agent, "web")
    assert kinds("night-line") == ["emergency"]
    (call,) = RecordingNotifier.sent["night-line"]
    assert datetime.fromisoformat(call.at).astimezone(JST) == jst(2026, 11, 16, 17, 30)


def test_a_cron_window_on_sunday_is_on_sunday(frozen_agent: MakeAgent,
                                               scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C})
    agent = frozen_agent(BASE + """
maintenance:
  - {name: backup, targets: ["*"], cron: "0 2 * * 0", duration: 1h}
""", jst(2026, 11, 16, 10, 0))
    windows = agent.contract.maintenance.windows(jst(2026, 11, 16), jst(2026, 11, 30))
    assert [w.start.astimezone(JST) for w in windows] == [jst(2026, 11, 22, 2, 0),
                                                           jst(2026, 11, 29, 2, 0)]


def test_every_deadline_of_a_clock_gets_its_own_at_risk_and_breach_events(
        frozen_agent: MakeAgent, scripted: dict[str, Script]) -> None:
    scripted["web"] = Script({"a": C})
    agent = frozen_agent(BASE, jst(2026, 11, 16, 10, 0))
    RecordingNotifier.failures["pager"] = NotifierError("down")
    for _ in range(65):
        minute(agent, "web")
    marks = [(e.kind, e.data.get("deadline")) for e in agent.store.incidents.events(1)
             if e.kind.startswith("clock_") and e.data.get("clock") == "first_notice"]
    assert marks == [("clock_at_risk", "SLO"), ("clock_breached", "SLO"),
                     ("clock_at_risk", "SLA"), ("clock_breached", "SLA")]
    at_risk = next(e for e in agent.store.incidents.events(1) if e.kind == "clock_at_risk")
    assert at_risk.message == "first_notice SLO at risk (due 2026-11-16 10:30 JST)"
