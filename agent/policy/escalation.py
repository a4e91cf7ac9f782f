"""Escalation chains: who is told when, until someone acknowledges.

A chain (per severity) is a list of levels: notify the level's contacts, remind
them every ``repeat`` up to ``times`` times, then go to the next level. Outside
business hours the emergency contacts are notified first (SkyArch §3). The plan
is a pure function of the chain and the confirmation time; which steps were
taken is read from the incident's timeline (``escalated`` events), so a restart
neither repeats nor forgets a step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from agent.config.policy_models import ContactSettings, EscalationChain


@dataclass(frozen=True)
class Step:
    """One notice of a chain: ``level`` -1 is the emergency contact."""

    level: int
    repeat: int                 # 0: the level's first notice; 1…: reminders
    at: datetime
    contacts: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.level}.{self.repeat}"

    @property
    def kind(self) -> str:
        if self.level < 0:
            return "emergency"
        return "reminder" if self.repeat else "escalation"


def plan(chain: EscalationChain, start: datetime,
         emergency: Sequence[tuple[datetime, str]] = ()) -> Iterator[Step]:
    """Every step of ``chain`` for a problem told at ``start``, in time order;
    ``emergency`` gives when the emergency contacts are called (if they are)."""
    steps = list(_levels(chain, start))
    if emergency:
        steps.append(Step(-1, 0, emergency[0][0], tuple(name for _, name in emergency)))
    yield from sorted(steps, key=lambda s: (s.at, s.level))


def _levels(chain: EscalationChain, start: datetime) -> Iterator[Step]:
    at = start
    for index, level in enumerate(chain.levels):
        yield Step(index, 0, at, level.contacts)
        if level.repeat is None:
            return  # no reminders: the chain stops at this level
        every = timedelta(seconds=level.repeat)
        for repeat in range(1, level.times + 1):
            at += every
            yield Step(index, repeat, at, level.contacts)
        at += every


def due(steps: Sequence[Step], done: set[str], now: datetime) -> list[Step]:
    """Steps whose time has come and that were not taken yet."""
    return [s for s in steps if s.at <= now and s.key not in done]


def chain_for(chains: Sequence[EscalationChain], severity: str) -> EscalationChain | None:
    """The first chain that covers ``severity``."""
    return next((c for c in chains if severity in c.severities), None)


def channels_of(contacts: Sequence[ContactSettings], names: Sequence[str],
                open_now: bool) -> list[str]:
    """The notifier channels reaching ``names`` (skipping business-hours-only contacts
    outside business hours)."""
    wanted = set(names)
    found: list[str] = []
    for contact in contacts:
        if contact.name in wanted and (open_now or contact.reachable == "always"):
            found += [c for c in contact.notify if c not in found]
    return found
