"""The durable outbox: retries with backoff, fallback, expiry, order, crash recovery."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from agent.clock import FrozenClock
from agent.config import load_config
from agent.service import Agent
from agent.store.db import ts
from checks.base import Status
from notifiers.base import NotifierError
from tests.support.scripted import RecordingNotifier, Script
from tests.support.stores import store_yaml


@pytest.fixture
def agent(tmp_path: Path, scripted: dict[str, Script], store_url: str | None) -> Iterator[Agent]:
    path = tmp_path / "kanshi.yaml"
    path.write_text(textwrap.dedent("""
        agent: {name: host1, state_dir: state}
        outbox: {retry_initial: 10s, retry_max: 80s, fallback_after: 10m, give_up_after: 1h}
        notifiers:
          - {name: pager, type: recording, fallback: backup}
          - {name: backup, type: recording}
        checks: []
    """) + store_yaml(store_url), encoding="utf-8")
    made = Agent(load_config(path, environ={}), clock=FrozenClock(), share_work=False)
    yield made
    made.store.close()


def enqueue(agent: Agent, kind: str = "problem", incident_id: int | None = None,
            channels: tuple[str, ...] = ("pager",)) -> list[int]:
    now = agent.clock.now()
    fields = {"kind": kind, "incident_id": incident_id, "dedup_key": "web/a", "host": "host1",
              "check": "web", "target": "a", "status": "CRITICAL", "previous_status": "OK",
              "severity": "B", "message": "a is down", "detected_at": now, "at": now,
              "attempts": 3, "outage_seconds": None, "flap_percent": None}
    return agent.outbox.enqueue(fields, channels, event_id=None)


def fail(channel: str, message: str = "connection refused", permanent: bool = False) -> None:
    RecordingNotifier.failures[channel] = NotifierError(message, permanent=permanent)


def heal(channel: str) -> None:
    RecordingNotifier.failures[channel] = None


def advance(agent: Agent, seconds: float) -> None:
    agent.clock.advance(seconds)  # type: ignore[attr-defined]


def delivered(channel: str) -> list[str]:
    return [a.kind for a in RecordingNotifier.sent.get(channel, [])]


def test_a_notice_is_retried_with_doubling_backoff_until_delivered(agent: Agent) -> None:
    (nid,) = enqueue(agent)
    fail("pager")
    waits = []
    for _ in range(5):
        assert agent.dispatcher.run_once() == 1
        notice = agent.store.notifications.get(nid)
        assert notice is not None
        wait = (notice.next_attempt_at - agent.clock.now()).total_seconds()
        waits.append(wait)
        assert agent.dispatcher.run_once() == 0, "not due again before its backoff"
        advance(agent, wait)
    assert waits == [10.0, 20.0, 40.0, 80.0, 80.0]
    heal("pager")
    agent.dispatcher.run_once()
    assert delivered("pager") == ["problem"]
    attempts = agent.store.notifications.attempts(nid)
    assert [a.ok for a in attempts] == [False] * 5 + [True]
    assert attempts[0].error == "connection refused"
    assert agent.store.notifications.get(nid).state == "delivered"  # type: ignore[union-attr]


def test_a_permanent_failure_stops_retrying_and_goes_to_the_fallback(agent: Agent) -> None:
    (nid,) = enqueue(agent)
    fail("pager", "550 mailbox unknown", permanent=True)
    agent.dispatcher.run_once()
    agent.dispatcher.run_once()
    assert agent.store.notifications.get(nid).state == "failed"  # type: ignore[union-attr]
    assert delivered("backup") == ["problem"]
    assert len(agent.store.notifications.attempts(nid)) == 1


def test_a_notice_undelivered_past_fallback_after_is_copied_once(agent: Agent) -> None:
    enqueue(agent)
    fail("pager")
    for _ in range(40):
        agent.dispatcher.run_once()
        advance(agent, 30)  # 20 minutes: past fallback_after (10 min)
    assert delivered("backup") == ["problem"], "one copy, however long the primary fails"
    heal("pager")
    advance(agent, 120)
    agent.dispatcher.run_once()
    assert delivered("pager") == ["problem"], "the primary keeps trying and gets through too"


def test_a_notice_is_given_up_after_give_up_after(agent: Agent) -> None:
    (nid,) = enqueue(agent, channels=("backup",))
    fail("backup")
    for _ in range(60):
        agent.dispatcher.run_once()
        advance(agent, 80)
    notice = agent.store.notifications.get(nid)
    assert notice is not None and notice.state == "expired"
    assert notice.attempts >= 40


def test_a_channels_notices_of_one_incident_go_out_in_order(agent: Agent) -> None:
    incident_id = agent.store.incidents.create("web", "a", Status.CRITICAL, "B", "down",
                                               agent.clock.now())
    enqueue(agent, "problem", incident_id)
    enqueue(agent, "recovery", incident_id)
    fail("pager")
    agent.dispatcher.run_once()
    advance(agent, 60)
    heal("pager")
    agent.dispatcher.run_once()
    agent.dispatcher.run_once()
    assert delivered("pager") == ["problem", "recovery"]


def test_a_notice_claimed_by_a_sender_that_died_is_sent_again(agent: Agent) -> None:
    (nid,) = enqueue(agent)
    now = agent.clock.now()
    claimed = agent.store.notifications.claim_due(now, now + timedelta(minutes=5), 10, "pager")
    assert [n.id for n in claimed] == [nid]
    assert agent.dispatcher.run_once() == 0, "someone holds the lease"
    advance(agent, 301)
    assert agent.dispatcher.run_once() == 1
    assert delivered("pager") == ["problem"]


def test_delivery_is_recorded_on_the_incident_timeline(agent: Agent) -> None:
    incident_id = agent.store.incidents.create("web", "a", Status.CRITICAL, "B", "down",
                                               agent.clock.now())
    enqueue(agent, "problem", incident_id)
    fail("pager")
    agent.dispatcher.run_once()
    assert agent.store.incidents.events(incident_id) == [], "not notified until delivered"
    heal("pager")
    advance(agent, 10)
    agent.dispatcher.run_once()
    (event,) = agent.store.incidents.events(incident_id)
    assert event.kind == "notified" and event.data["channel"] == "pager"
    assert event.data["attempt"] == 2
    assert ts(event.at) == ts(agent.clock.now())


def test_secrets_in_delivery_errors_are_scrubbed_before_they_are_stored(agent: Agent) -> None:
    from agent.secrets import Redactor

    agent.dispatcher.scrub = Redactor(["hunter2"])
    (nid,) = enqueue(agent)
    fail("pager", "auth failed for ops:hunter2@mail")
    agent.dispatcher.run_once()
    (attempt,) = agent.store.notifications.attempts(nid)
    assert attempt.error == "auth failed for ops:********@mail"


def test_a_peer_asking_to_retry_later_is_given_that_long(agent: Agent) -> None:
    (nid,) = enqueue(agent)
    RecordingNotifier.failures["pager"] = NotifierError("429 Too Many Requests",
                                                        retry_after=120)
    agent.dispatcher.run_once()
    notice = agent.store.notifications.get(nid)
    assert notice is not None
    assert (notice.next_attempt_at - agent.clock.now()).total_seconds() == 120.0
