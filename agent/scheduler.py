"""APScheduler wiring: one interval job per check, spread out, never overlapping.

Each check's first run is placed at a stable offset inside
``min(interval, spread)`` (a hash of its name), so a thousand checks with the
same interval start spread over the window instead of in one second, and keep
that phase afterwards. A job returns the delay it wants next — the retry
interval while a failure or recovery is being confirmed — and is rescheduled
when that changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

logger = logging.getLogger(__name__)


def phase(name: str) -> float:
    """A stable number in [0, 1) for ``name``."""
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def first_delay(name: str, interval: float, spread: float) -> float:
    """Seconds until the first run of ``name``."""
    return phase(name) * min(interval, spread)


class CheckScheduler:
    """Runs ``run(name) -> next_interval`` for every added check."""

    def __init__(self, run: Callable[[str], float], *, workers: int, spread: float) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        self._run = run
        self.spread = spread
        self._intervals: dict[str, float] = {}
        self._scheduler = BackgroundScheduler(
            # Housekeeping (the heartbeat above all) has its own threads: slow checks
            # filling the check pool must not make a live agent look dead.
            executors={"default": ThreadPoolExecutor(workers), "tasks": ThreadPoolExecutor(4)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC)
        logging.getLogger("apscheduler").setLevel(logging.WARNING)

    def add_check(self, name: str, interval: float) -> None:
        start = _now() + timedelta(seconds=first_delay(name, interval, self.spread))
        self._intervals[name] = interval
        self._scheduler.add_job(self._job, self._trigger(interval, start), args=(name,),
                                id=f"check:{name}", name=f"check {name}",
                                replace_existing=True)

    def remove_check(self, name: str) -> None:
        """Stop scheduling ``name`` (a run in progress finishes)."""
        from apscheduler.jobstores.base import JobLookupError

        self._intervals.pop(name, None)
        with contextlib.suppress(JobLookupError):
            self._scheduler.remove_job(f"check:{name}")

    def add_task(self, name: str, func: Callable[[], Any], interval: float) -> None:
        """A housekeeping job (heartbeat, pruning) every ``interval`` seconds."""
        self._scheduler.add_job(_logged(name, func), self._trigger(interval, _now()),
                                id=f"task:{name}", name=name, executor="tasks")

    def next_run(self, name: str) -> datetime | None:
        job = self._scheduler.get_job(f"check:{name}")
        return None if job is None else job.next_run_time

    def start(self, paused: bool = False) -> None:
        self._scheduler.start(paused=paused)

    def shutdown(self, wait: bool = True) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)

    def _job(self, name: str) -> None:
        wanted = self._run(name)
        if name in self._intervals and wanted != self._intervals[name]:
            self._intervals[name] = wanted
            start = _now() + timedelta(seconds=wanted)
            try:
                self._scheduler.reschedule_job(f"check:{name}",
                                               trigger=self._trigger(wanted, start))
            except LookupError:  # removed meanwhile (its lease went to another agent)
                return
            logger.debug("check %s now runs every %g s", name, wanted)

    @staticmethod
    def _trigger(interval: float, start: datetime) -> Any:
        from apscheduler.triggers.interval import IntervalTrigger

        return IntervalTrigger(seconds=interval, start_date=start, timezone=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


def _logged(name: str, func: Callable[[], Any]) -> Callable[[], None]:
    def run() -> None:
        try:
            func()
        except Exception:
            logger.exception("task %s failed", name)
    return run
