"""The contract every check follows: a frozen config, one ``run()``, and ``Result``s.

A check overrides only :meth:`Check.run`. :meth:`Check.execute` (called by the
agent) turns any exception into an UNKNOWN result with secrets scrubbed, stamps
the check's name on every result and normalises one result into a list.
Hard time limits are the runner's job (a thread can't be killed from inside);
``self.timeout`` is passed to every blocking call so a check usually finishes
on its own first.
"""

from __future__ import annotations

import enum
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

logger = logging.getLogger(__name__)


class Status(enum.IntEnum):
    """Nagios plugin return codes."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @property
    def is_problem(self) -> bool:
        return self is not Status.OK


# Worst-first order of monitoring-plugins' max_state_alt(): CRITICAL > UNKNOWN >
# WARNING > OK. An UNKNOWN means "we could not tell", which may hide a CRITICAL.
_SEVERITY_RANK = {Status.OK: 0, Status.WARNING: 1, Status.UNKNOWN: 2, Status.CRITICAL: 3}


def worst(statuses: list[Status] | tuple[Status, ...]) -> Status:
    """The worst of ``statuses`` (OK when empty)."""
    return max(statuses, key=_SEVERITY_RANK.__getitem__, default=Status.OK)


@dataclass(frozen=True)
class Result:
    """What one check said about one target."""

    status: Status
    message: str
    target: str = ""   # "" = the check as a whole (e.g. its run failed or hung)
    metrics: dict[str, float] = field(default_factory=dict)
    check: str = ""
    at: datetime | None = None
    duration: float = 0.0

    def stamped(self, check: str, at: datetime, duration: float) -> Result:
        """A copy carrying the check name, start time and run duration."""
        return Result(self.status, self.message, self.target, dict(self.metrics),
                      check, at, duration)


class Scrubber(Protocol):
    def __call__(self, text: str) -> str: ...


class SharedResources(Protocol):
    """Long-lived objects several checks share (e.g. the ICMP socket)."""

    def get(self, key: str, factory: Callable[[], Any]) -> Any: ...


class LocalResources:
    """A simple :class:`SharedResources`; closes what it made on :meth:`close`."""

    def __init__(self) -> None:
        self._items: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: str, factory: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._items:
                self._items[key] = factory()
            return self._items[key]

    def close(self) -> None:
        with self._lock:
            items, self._items = list(self._items.values()), {}
        for item in items:
            close = getattr(item, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    logger.exception("closing shared resource failed")


class Clock(Protocol):
    def now(self) -> datetime: ...
    def monotonic(self) -> float: ...


def _no_scrub(text: str) -> str:
    return text


@dataclass
class CheckContext:
    """What the agent hands a check: a clock, private persistent state, helpers."""

    clock: Clock
    state: MutableMapping[str, Any] = field(default_factory=dict)
    scrub: Scrubber = _no_scrub
    shared: SharedResources = field(default_factory=LocalResources)


class CheckConfig(BaseModel):
    """Base for a check family's own options (frozen, unknown keys refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Check(ABC):
    """One configured check. Subclasses set ``type_name`` and ``Config``."""

    type_name: ClassVar[str]
    Config: ClassVar[type[CheckConfig]] = CheckConfig
    #: Defaults for scheduling when the config says nothing (SPEC §1 where it says).
    default_interval: ClassVar[float] = 600.0
    default_timeout: ClassVar[float] = 30.0
    #: Results in a row that confirm a change, when the config does not say (None: the
    #: agent's default). 1 for reports that are already confirmed (e.g. AWS Health).
    default_max_attempts: ClassVar[int | None] = None

    def __init__(self, name: str, config: CheckConfig, *, timeout: float,
                 context: CheckContext) -> None:
        self.name = name
        self.config = config
        self.timeout = timeout
        self.context = context

    @classmethod
    def minimum_timeout(cls, config: CheckConfig) -> float:
        """The least time a run of ``config`` needs; the loader refuses a shorter timeout."""
        return 0.0

    @classmethod
    def schedule_warning(cls, config: CheckConfig, confirm_seconds: float) -> str | None:
        """Advice when a problem of ``config`` could not survive the ``confirm_seconds``
        the agent takes to confirm it (max_attempts × retry_interval)."""
        return None

    @abstractmethod
    def run(self) -> Result | list[Result]:
        """Measure and judge; return one result per target."""

    def execute(self) -> list[Result]:
        """Run, never raise: an exception becomes one UNKNOWN result."""
        clock = self.context.clock
        started, t0 = clock.now(), clock.monotonic()
        try:
            out = self.run()
            results = [out] if isinstance(out, Result) else list(out)
            if not results:  # silence is not "all clear": every target would vanish
                results = [Result(Status.UNKNOWN, "the check returned no results")]
        except Exception as exc:  # a broken check must never take the scheduler down
            logger.warning("check %s failed: %s", self.name, self.context.scrub(repr(exc)))
            results = [Result(Status.UNKNOWN, self.context.scrub(_describe(exc)))]
        duration = clock.monotonic() - t0
        # Every message is scrubbed here, whatever the check did: a server that echoes
        # a password, a plugin that prints its token (the target names are config).
        scrub = self.context.scrub
        return [replace(r, message=scrub(r.message)).stamped(self.name, started, duration)
                for r in results]

    def close(self) -> None:  # noqa: B027 — an optional hook, not an abstract method
        """Release what the check holds; the default holds nothing."""


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"check failed: {type(exc).__name__}: {text}" if str(exc) else f"check failed: {text}"
