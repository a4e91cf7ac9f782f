"""Soft → hard confirmation and flap detection for one (check, target).

A status different from the confirmed ("hard") one is *pending* until it has
been seen ``max_attempts`` times in a row (Nagios ``max_check_attempts``);
while pending the check is re-run every ``retry_interval``. Failures of any
kind count together towards a problem (WARNING, CRITICAL, UNKNOWN), OKs count
towards a recovery, and a change between problem states is confirmed the same
way — so a value hovering at a threshold never floods anyone.

Flapping follows Nagios: the share of status changes among the last ``window``
raw results; it starts at ``high`` % and stops at ``low`` % (hysteresis).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from datetime import datetime

from agent.config.models import FlappingSettings
from checks.base import Status


@dataclass(frozen=True)
class CheckState:
    """What is remembered between two results of one (check, target)."""

    hard_status: Status
    hard_since: datetime
    pending_status: Status | None = None
    pending_count: int = 0
    pending_since: datetime | None = None
    history: str = ""       # recent raw statuses, oldest first, one digit each
    flapping: bool = False

    @property
    def soft(self) -> bool:
        """A status change is waiting for confirmation."""
        return self.pending_status is not None

    @classmethod
    def fresh(cls, at: datetime) -> CheckState:
        """Never seen before: assume OK, so a first failure must still be confirmed."""
        return cls(Status.OK, at)


@dataclass(frozen=True)
class Transition:
    """A confirmed change of status."""

    kind: str             # problem | change | recovery
    old: Status
    new: Status
    since: datetime       # first result that showed the new status
    confirmed_at: datetime


@dataclass(frozen=True)
class Step:
    """The outcome of one result: the new state and what, if anything, changed."""

    state: CheckState
    transition: Transition | None = None
    flapping_changed: str | None = None   # "start" | "stop"
    flap_percent: float = 0.0


def advance(state: CheckState, status: Status, at: datetime, max_attempts: int,
            flapping: FlappingSettings) -> Step:
    """Feed one result into the state machine."""
    confirmed, transition = _confirm(state, status, at, max_attempts)
    history = (state.history + str(int(status)))[-flapping.window:]
    percent = flap_percent(history, flapping.window)
    is_flapping, changed = _flapping(state.flapping, percent, flapping)
    new_state = replace(confirmed, history=history, flapping=is_flapping)
    return Step(new_state, transition, changed, percent)


def _confirm(state: CheckState, status: Status, at: datetime,
             max_attempts: int) -> tuple[CheckState, Transition | None]:
    if status == state.hard_status:
        return replace(state, pending_status=None, pending_count=0, pending_since=None), None
    pending = state.pending_status
    if pending is not None and pending.is_problem == status.is_problem:
        count, since = state.pending_count + 1, state.pending_since or at
    else:
        count, since = 1, at
    if count < max_attempts:
        return replace(state, pending_status=status, pending_count=count,
                       pending_since=since), None
    kind = _kind(state.hard_status, status)
    confirmed = replace(state, hard_status=status, hard_since=since, pending_status=None,
                        pending_count=0, pending_since=None)
    return confirmed, Transition(kind, state.hard_status, status, since, at)


def _kind(old: Status, new: Status) -> str:
    if not old.is_problem:
        return "problem"
    return "recovery" if not new.is_problem else "change"


def flap_percent(history: str, window: int) -> float:
    """Status changes among the recent results, as a share of the window's gaps."""
    changes = sum(1 for a, b in itertools.pairwise(history) if a != b)
    return 100.0 * changes / (window - 1)


def _flapping(was: bool, percent: float, settings: FlappingSettings) -> tuple[bool, str | None]:
    if not settings.enabled:
        return False, ("stop" if was else None)
    if not was and percent >= settings.high:
        return True, "start"
    if was and percent <= settings.low:
        return False, "stop"
    return was, None
