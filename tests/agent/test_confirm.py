"""Soft → hard confirmation and flap detection, result by result."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agent.config.models import FlappingSettings
from agent.confirm import CheckState, Step, advance, flap_percent
from checks.base import Status

OK, W, C, U = Status.OK, Status.WARNING, Status.CRITICAL, Status.UNKNOWN
T0 = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
NO_FLAPPING = FlappingSettings(enabled=False)


def feed(statuses: list[Status], max_attempts: int = 3,
         flapping: FlappingSettings = NO_FLAPPING,
         state: CheckState | None = None) -> list[Step]:
    """Feed results one minute apart; return every step."""
    state = state or CheckState.fresh(T0)
    steps = []
    for i, status in enumerate(statuses):
        step = advance(state, status, T0 + timedelta(minutes=i), max_attempts, flapping)
        steps.append(step)
        state = step.state
    return steps


def kinds(steps: list[Step]) -> list[str | None]:
    return [s.transition.kind if s.transition else None for s in steps]


@pytest.mark.parametrize(("statuses", "expected"), [
    pytest.param([OK, OK, OK], [None, None, None], id="all-ok-says-nothing"),
    pytest.param([C, C, C], [None, None, "problem"], id="third-failure-confirms"),
    pytest.param([C, C, OK, C, C], [None, None, None, None, None], id="a-blip-resets-the-count"),
    pytest.param([W, C, U], [None, None, "problem"], id="any-failures-count-together"),
    pytest.param([C, C, C, OK, OK, OK], [None, None, "problem", None, None, "recovery"],
                 id="recovery-is-confirmed-the-same-way"),
    pytest.param([C, C, C, OK, C, OK, OK], [None, None, "problem"] + [None] * 4,
                 id="a-single-ok-does-not-recover"),
    pytest.param([C, C, C, W, W, W], [None, None, "problem", None, None, "change"],
                 id="critical-to-warning-is-confirmed-too"),
])
def test_transitions_need_max_attempts_results_in_a_row(statuses: list[Status],
                                                        expected: list[str | None]) -> None:
    assert kinds(feed(statuses)) == expected


def test_a_confirmed_problem_remembers_when_it_was_first_seen() -> None:
    steps = feed([OK, C, C, C])
    transition = steps[-1].transition
    assert transition is not None
    assert transition.since == T0 + timedelta(minutes=1)
    assert transition.confirmed_at == T0 + timedelta(minutes=3)
    assert transition.old is OK and transition.new is C


def test_the_hard_status_is_the_latest_of_the_confirming_results() -> None:
    steps = feed([C, C, W])
    assert steps[-1].state.hard_status is W


def test_one_attempt_confirms_at_once() -> None:
    assert kinds(feed([C, OK], max_attempts=1)) == ["problem", "recovery"]


def test_a_pending_change_is_soft_until_confirmed() -> None:
    steps = feed([C, C, C])
    assert [s.state.soft for s in steps] == [True, True, False]


def test_a_check_alternating_every_run_is_flapping_even_if_never_confirmed() -> None:
    settings = FlappingSettings(window=21, high=50, low=25)
    steps = feed([OK, C] * 10, flapping=settings)
    started = [i for i, s in enumerate(steps) if s.flapping_changed == "start"]
    assert len(started) == 1, "flapping starts once, not at every change"
    assert all(s.transition is None for s in steps)


def test_flapping_stops_below_the_low_threshold() -> None:
    settings = FlappingSettings(window=21, high=50, low=25)
    steps = feed([OK, C] * 10 + [OK] * 20, flapping=settings)
    changes = [s.flapping_changed for s in steps if s.flapping_changed]
    assert changes == ["start", "stop"]
    assert not steps[-1].state.flapping


def test_flap_percent_counts_changes_over_the_window() -> None:
    assert flap_percent("0202", 5) == 75.0
    assert flap_percent("0000", 5) == 0.0
    assert flap_percent("02", 21) == 5.0


def test_history_keeps_only_the_window() -> None:
    settings = FlappingSettings(window=5)
    steps = feed([OK] * 12, flapping=settings)
    assert steps[-1].state.history == "00000"
