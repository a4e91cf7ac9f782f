"""What several agents race for on one store: each test opens the store once per
"agent" (its own connection) and races them in threads. On SQLite the writers
queue on the file lock; on PostgreSQL the statements themselves must hold."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.store import Store, open_store
from checks.base import Status

T0 = datetime(2026, 11, 16, 1, 0, tzinfo=UTC)


@pytest.fixture
def stores(tmp_path: Path, store_url: str | None) -> Iterator[Callable[[], Store]]:
    opened: list[Store] = []

    def make() -> Store:
        store = open_store(tmp_path / "state", url=store_url)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def race(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` for i in range(count) in threads released together."""
    start, results = threading.Barrier(count), [None] * count

    def run(i: int) -> None:
        start.wait()
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def notice(store: Store, incident_id: int | None) -> int:
    return store.notifications.add(incident_id=incident_id, event_id=None, channel="pager",
                                   kind="problem", payload={}, now=T0,
                                   fallback_at=T0 + timedelta(hours=1),
                                   expires_at=T0 + timedelta(days=1))


def incident(store: Store, target: str) -> int:
    return store.incidents.create("web", target, Status.CRITICAL, "B", "down", T0)


def test_every_notice_is_claimed_by_exactly_one_of_four_agents(
        stores: Callable[[], Store]) -> None:
    agents = [stores() for _ in range(4)]
    with agents[0].db.tx():
        ids = [notice(agents[0], incident(agents[0], f"t{i}")) for i in range(400)]
    claimed: list[list[int]] = [[] for _ in agents]

    def drain(i: int) -> None:
        while True:
            got = agents[i].notifications.claim_due(T0, T0 + timedelta(minutes=5), 7, "pager",
                                                    f"agent:{i}")
            if not got:
                return
            claimed[i] += [n.id for n in got]

    race(len(agents), drain)
    counts = Counter(i for part in claimed for i in part)
    assert sorted(counts) == ids
    assert set(counts.values()) == {1}


def test_one_incidents_notices_stay_in_order_across_agents(
        stores: Callable[[], Store]) -> None:
    agents = [stores() for _ in range(3)]
    incident = agents[0].incidents.create("web", "a", Status.CRITICAL, "B", "down", T0)
    first, _second = notice(agents[0], incident), notice(agents[0], incident)
    got = race(3, lambda i: [n.id for n in agents[i].notifications.claim_due(
        T0, T0 + timedelta(minutes=5), 10, "pager", f"agent:{i}")])
    assert sorted(x for part in got for x in part) == [first]  # the second waits its turn


def test_a_second_open_incident_for_one_target_is_refused_whole(
        stores: Callable[[], Store]) -> None:
    agents = [stores() for _ in range(2)]

    def open_one(i: int) -> str:
        store = agents[i]
        try:
            with store.db.tx():
                incident = store.incidents.create("web", "a", Status.CRITICAL, "B", "down", T0)
                notice(store, incident)
        except Exception as exc:  # the unique index: this agent's whole transaction goes
            return type(exc).__name__
        return "opened"

    outcomes = race(2, open_one)
    assert sorted(outcomes)[1] == "opened" and outcomes.count("opened") == 1
    assert len(agents[0].incidents.find(open_only=True)) == 1
    assert agents[0].notifications.counts() == {"pending": 1}


def test_two_agents_racing_for_one_targets_runbook_lock_one_runs(
        stores: Callable[[], Store]) -> None:
    agents = [stores() for _ in range(2)]
    runs = [agents[0].runbooks.create(runbook="restart", target="web1", params={},
                                      trigger="auto", incident_id=None, requested_by="",
                                      dry_run=False, state="waiting_lock", scheduled_for=T0,
                                      now=T0) for _ in agents]
    holders = race(2, lambda i: agents[i].runbooks.lock("web1", runs[i], T0))
    winner = runs[holders.index(None)]
    assert holders.count(None) == 1
    assert [h for h in holders if h is not None] == [winner]  # the loser sees who has it
    assert agents[1].runbooks.holder("web1") == winner


def test_a_scheduled_runbook_run_is_claimed_by_one_agent(stores: Callable[[], Store]) -> None:
    agents = [stores() for _ in range(3)]
    for _ in range(30):
        agents[0].runbooks.create(runbook="r", target="t", params={}, trigger="scheduled",
                                  incident_id=None, requested_by="op", dry_run=True,
                                  state="scheduled", scheduled_for=T0, now=T0)

    def drain(i: int) -> list[int]:
        mine: list[int] = []
        while got := agents[i].runbooks.claim_due(T0, f"agent:h:{i}", 2):
            mine += [r.id for r in got]
        return mine

    counts = Counter(x for part in race(3, drain) for x in part)
    assert len(counts) == 30 and set(counts.values()) == {1}


def test_a_lease_is_held_by_one_agent_and_moves_only_when_it_expires(
        stores: Callable[[], Store]) -> None:
    a, b = stores(), stores()
    until = T0 + timedelta(seconds=20)
    taken = race(2, lambda i: (a, b)[i].leases.take({"check:web"}, f"agent:{i}", T0, until))
    assert sorted(map(len, taken)) == [0, 1]
    holder = "agent:0" if taken[0] else "agent:1"
    other = "agent:1" if taken[0] else "agent:0"
    assert a.leases.holds("check:web", holder, T0 + timedelta(seconds=19))
    assert not b.leases.take({"check:web"}, other, T0 + timedelta(seconds=19), until)
    later = T0 + timedelta(seconds=20)
    assert not a.leases.holds("check:web", holder, later)
    assert b.leases.take({"check:web"}, other, later, later + timedelta(seconds=20))
    assert [(lease.name, lease.agent) for lease in a.leases.all()] == [("check:web", other)]


def test_claims_of_a_dead_agent_are_given_back_and_a_live_ones_are_not(
        stores: Callable[[], Store]) -> None:
    store = stores()
    store.leases.join("agent:live", "h", 1, "t", T0, T0 + timedelta(seconds=20))
    store.leases.join("agent:dead", "h", 2, "t", T0, T0 + timedelta(seconds=2))
    first, second = notice(store, incident(store, "a")), notice(store, incident(store, "b"))
    lease = T0 + timedelta(minutes=5)
    store.notifications.claim_due(T0, lease, 1, "pager", "agent:live")
    store.notifications.claim_due(T0, lease, 1, "pager", "agent:dead")
    assert store.notifications.release_dead(T0 + timedelta(seconds=5), "agent:me") == 1
    assert store.notifications.get(first).state == "sending"  # type: ignore[union-attr]
    assert store.notifications.get(second).state == "pending"  # type: ignore[union-attr]


def test_a_fallback_is_copied_once_however_many_agents_look(
        stores: Callable[[], Store]) -> None:
    agents = [stores() for _ in range(3)]
    nid = notice(agents[0], None)
    marked = race(3, lambda i: agents[i].notifications.mark_fallback_queued(nid))
    assert marked.count(True) == 1
