"""A check and a channel whose behaviour a test scripts.

They stand in for the *measured system*, not for kanshi: the agent code under
test (scheduler, runner, confirmation, incidents, outbox) is the real one. Real
checks and real channels are tested against real peers elsewhere.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

import checks
import notifiers
from checks.base import Check, CheckConfig, Result, Status
from notifiers.base import Alert, Notifier, NotifierConfig, NotifierError

#: ``{target: status}`` for one run, or a callable that does something odd.
Run = dict[str, Status] | Callable[[], Any]


class Script:
    """The results a scripted check returns, run after run (the last one repeats)."""

    def __init__(self, *runs: Run) -> None:
        self.runs: deque[Run] = deque(runs)
        self.calls = 0
        self.lock = threading.Lock()

    def next(self) -> Run:
        with self.lock:
            self.calls += 1
            return self.runs.popleft() if len(self.runs) > 1 else self.runs[0]

    def then(self, *runs: Run) -> None:
        """Replace what comes next."""
        with self.lock:
            self.runs = deque(runs)


class ScriptedCheck(Check):
    type_name: ClassVar[str] = "scripted"
    scripts: ClassVar[dict[str, Script]] = {}

    class Config(CheckConfig):
        script: str

    config: Config

    def run(self) -> list[Result]:
        run = self.scripts[self.config.script].next()
        if callable(run):
            return list(run())
        return [Result(status, f"{target} is {status.name}", target, {"value": float(status)})
                for target, status in run.items()]


class RecordingNotifier(Notifier):
    """Keeps what it is sent; fails while told to (``failures``); takes ``delays``
    seconds per send (a slow or hung channel)."""

    type_name: ClassVar[str] = "recording"
    sent: ClassVar[dict[str, list[Alert]]] = {}
    failures: ClassVar[dict[str, NotifierError | None]] = {}
    delays: ClassVar[dict[str, float]] = {}

    class Config(NotifierConfig):
        pass

    def send(self, alert: Alert) -> None:
        time.sleep(self.delays.get(self.name, 0.0))
        error = self.failures.get(self.name)
        if error is not None:
            raise error
        self.sent.setdefault(self.name, []).append(alert)


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> dict[str, Script]:
    """Register the scripted check and recording channel; return the script table."""
    monkeypatch.setitem(checks.REGISTRY, "scripted", "tests.support.scripted:ScriptedCheck")
    monkeypatch.setitem(notifiers.REGISTRY, "recording",
                        "tests.support.scripted:RecordingNotifier")
    ScriptedCheck.scripts.clear()
    RecordingNotifier.sent.clear()
    RecordingNotifier.failures.clear()
    RecordingNotifier.delays.clear()
    return ScriptedCheck.scripts
