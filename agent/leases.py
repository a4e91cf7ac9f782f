"""Sharing the work between agents on one shared store: who runs which check.

Every ``lease / 3`` each agent renews its own row, reads the live agents and,
for every work item (each configured check, plus ``task:policy`` — escalations,
clocks and pruning must run once, not once per agent), computes the owner by
rendezvous hashing over the live agents. It gives back what it should no longer
hold (a newcomer's share) and takes or renews what it should (a dead agent's
share, once that lease has expired). Leases last ``2/3 lease``: a killed
agent's items are free at most ``2/3 lease`` after its last renewal and taken
at the next pass of their new owner, at most ``1/3 lease`` later — so nothing
is unowned for longer than one lease period. The database decides every
hand-over (see :mod:`agent.store.leases`); this module only says what to want.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from agent import __version__
from agent.store.leases import LeaseStore
from checks.base import Clock

logger = logging.getLogger(__name__)

#: The singleton tasks (policy watch, history pruning) as one work item.
POLICY = "task:policy"


def check_item(name: str) -> str:
    return f"check:{name}"


def owner(item: str, agents: Iterable[str]) -> str | None:
    """The agent that should hold ``item``: highest hash of (agent, item).

    Rendezvous hashing moves only the joining or leaving agent's share."""
    def weight(agent: str) -> int:
        digest = hashlib.blake2b(f"{agent}\0{item}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big")
    return max(agents, key=weight, default=None)


class WorkLeases:
    """Keeps this agent's share of the items leased; tells the agent what it gained/lost."""

    def __init__(self, leases: LeaseStore, agent_id: str, items: Iterable[str], period: float,
                 clock: Clock, on_gain: Callable[[set[str]], None],
                 on_loss: Callable[[set[str]], None]) -> None:
        self.store = leases
        self.agent_id = agent_id
        self.items = set(items)
        self.period = period
        self.clock = clock
        self.on_gain = on_gain
        self.on_loss = on_loss
        self.held: set[str] = set()
        self._until: datetime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def ttl(self) -> timedelta:
        return timedelta(seconds=self.period * 2 / 3)

    def join(self) -> None:
        now = self.clock.now()
        self.store.join(self.agent_id, os.uname().nodename, os.getpid(), __version__, now,
                        now + self.ttl)
        self.tick()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="leases", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.period / 3):
            try:
                self.tick()
            except Exception:  # the store is away: our leases lapse, the fence stops us
                logger.exception("renewing leases failed; trying again shortly")

    def tick(self) -> None:
        """One pass: renew this agent, give back, take, report changes."""
        with self._lock:
            now = self.clock.now()
            until = now + self.ttl
            self.store.beat(self.agent_id, now, until)
            live = set(self.store.live(now)) | {self.agent_id}
            wanted = {i for i in self.items if owner(i, live) == self.agent_id}
            surplus = self.held - wanted
            if surplus:
                self.on_loss(surplus)  # stop running them before anyone may take them
                self.store.release(surplus, self.agent_id)
            got = self.store.take(wanted, self.agent_id, now, until)
            lost, gained = (self.held & wanted) - got, got - self.held
            self.held, self._until = got, until
        if lost:
            logger.warning("leases lost to another agent: %s", ", ".join(sorted(lost)))
            self.on_loss(lost)
        if gained:
            logger.info("now running %d more item(s) (%d live agents)", len(gained), len(live))
            self.on_gain(gained)

    def holds(self, item: str) -> bool:
        """Held and not expired by this agent's own reckoning (cheap, no database)."""
        until = self._until
        return item in self.held and until is not None and self.clock.now() < until

    def stop(self) -> None:
        """Give everything back (a clean stop: the others take over at their next pass)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        with self._lock:
            held, self.held = self.held, set()
            self.store.leave(self.agent_id, self.clock.now())
        if held:
            self.on_loss(held)
